"""The data stage: corpus → token shards (one job per group of files) → `stats.parquet`.

In the workflow each step is its own job: `train-tokenizer` (a BPE, once), `survey-corpus`
(with `corpus.max_tokens`), `prepare-group` (one per group of input files, regmix.data.groups;
per-file shards, regmix.data.shards) and `collect-shards` (the fan-in, regmix.data.collect).

`prepare_corpus` runs all of it in one process (the `regmix prepare` command): everything is
staged and published only once every file tokenized cleanly.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import pandas as pd

from regmix.data.collect import DOMAIN_NAMES, collect_shards
from regmix.data.corpus import CorpusFile, ReadOptions, open_corpus
from regmix.data.groups import DEFAULT_BYTES_PER_JOB, plan_groups
from regmix.data.shards import prepare_group
from regmix.data.survey import keep_fractions, spread_sample, survey_corpus
from regmix.data.tokenize import load_tokenizer, parse_bpe_spec, train_bpe

TOKENIZER_SAMPLE_BYTES = 100_000_000
SHARDS = "shards"


def tokenizer_sample(
    files: list[CorpusFile], options: ReadOptions, sample_bytes: int
) -> Iterator[str]:
    """Train documents for a tokenizer: the same share of `sample_bytes` from every train file,
    spread over each file (a corpus sorted by domain gives every domain its share), so that
    every domain and file is represented without tokenizing the corpus."""
    for document in spread_sample(files, options, sample_bytes):
        yield document.text


def make_tokenizer(
    corpus: str | os.PathLike,
    spec: str,
    out: str | os.PathLike,
    options: ReadOptions,
    sample_bytes: int = TOKENIZER_SAMPLE_BYTES,
) -> Path:
    """`bpe:<vocab>`: train on a sample of the train documents; a tokenizer.json: copy it.
    Either way the data folder then holds the tokenizer its shards were made with."""
    if (vocab := parse_bpe_spec(spec)) is not None:
        files, options = open_corpus(corpus, options)
        started = time.perf_counter()
        path = train_bpe(tokenizer_sample(files, options, sample_bytes), vocab, out)
        print(
            f"train-tokenizer: {spec} from up to {sample_bytes / 1e6:,.0f} MB of train text "
            f"in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        return path
    load_tokenizer(spec)  # fail on a bad tokenizer before reading any corpus file
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec, out)
    return Path(out)


def _prepare_one(job: tuple) -> dict:
    return prepare_group(*job)


def prepare_corpus(
    corpus: str | os.PathLike,
    out: str | os.PathLike,
    tokenizer: str = "byte",
    workers: int = 1,
    domains: list[str] | None = None,
    options: ReadOptions | None = None,
    bytes_per_job: int = DEFAULT_BYTES_PER_JOB,
    max_tokens: int | None = None,
    sample_bytes: int = TOKENIZER_SAMPLE_BYTES,
) -> pd.DataFrame:
    """The whole data stage in one process (`workers` groups at a time); returns the stats.

    Staged beside `out` and published only when every group succeeded, so a bad file never
    leaves a half-prepared data folder and a failed re-run keeps the last good one.
    """
    started = time.perf_counter()
    options = options or ReadOptions()
    if domains is not None:
        options = replace(options, domains=frozenset(domains))
    files, options = open_corpus(corpus, options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=out) as staging_name:
        staging = Path(staging_name)
        if tokenizer != "byte":
            tokenizer = str(
                make_tokenizer(corpus, tokenizer, staging / "tokenizer.json", options, sample_bytes)
            )
        keep = None
        if max_tokens is not None:
            survey = staging / "survey.json"
            survey_corpus(corpus, options, tokenizer, sample_bytes, max_tokens, survey)
            keep = keep_fractions(survey)
        sizes = {f.relative: f.path.stat().st_size for f in files}
        groups = plan_groups(files, sizes, bytes_per_job)
        jobs = [
            (list(g.files), staging / SHARDS / g.name, tokenizer, options, keep, g.name)
            for g in groups
        ]
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                records = list(pool.map(_prepare_one, jobs))
        else:
            records = [_prepare_one(job) for job in jobs]
        stats = collect_shards([job[1] for job in jobs], staging, max_tokens)
        _publish(staging, out)
    seconds = time.perf_counter() - started
    megabytes = sum(r["text_bytes"] for r in records) / 1e6
    print(
        f"prepare: {len(groups)} group(s), {len(stats)} shards, {megabytes:.1f} MB of text → "
        f"{stats['tokens'].sum():,} tokens in {seconds:.2f} s ({megabytes / seconds:.1f} MB/s)",
        file=sys.stderr,
    )
    return stats


def _publish(staging: Path, out: Path) -> None:
    """Move the staged data into `out`, replacing what an earlier prepare left there."""
    names = ("train", "valid", SHARDS, "tokenizer.json", "survey.json", DOMAIN_NAMES)
    for name in (*names, "stats.parquet"):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():  # e.g. a BPE tokenizer.json left from an earlier prepare
            target.unlink()
        if (staging / name).exists():
            os.replace(staging / name, target)
