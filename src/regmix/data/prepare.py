"""The data stage: corpus → token shards (one job per group of files) → `stats.parquet`.

In the workflow each step is its own job: `train-tokenizer` (a BPE, once), `prepare-group`
(one per group of input files, regmix.data.groups) and `collect-shards` (the fan-in). The
fan-in writes, under the data folder:

- `{split}/{domain}.json`: the domain's index: dtype, token and document counts, tokenizer,
  and the list of shard files (`shards/<group>/{split}/{domain}.bin`) that make up the domain,
  in group order; the loader reads a domain as their concatenation;
- `stats.parquet`: domain, split, tokens, documents, text_bytes;
- `domains.json`: the corpus's own domain names → the identifiers used everywhere else.

`prepare_corpus` runs all of it in one process (the `regmix prepare` command): everything is
staged and published only once every file tokenized cleanly.
"""

from __future__ import annotations

import json
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

from regmix.data.corpus import CorpusFile, ReadOptions, discover, documents
from regmix.data.domains import merge_names
from regmix.data.groups import DEFAULT_BYTES_PER_JOB, plan_groups
from regmix.data.shards import GROUP_RECORD, prepare_group
from regmix.data.stats import COLUMNS as STATS_COLUMNS
from regmix.data.survey import keep_fractions, survey_corpus
from regmix.data.tokenize import load_tokenizer, parse_bpe_spec, train_bpe
from regmix.errors import RegmixError
from regmix.files import write_json, write_table

TOKENIZER_SAMPLE_BYTES = 100_000_000
SHARDS = "shards"
DOMAIN_NAMES = "domains.json"


def tokenizer_sample(
    files: list[CorpusFile], options: ReadOptions, sample_bytes: int
) -> Iterator[str]:
    """Train documents for a tokenizer: the same share of `sample_bytes` from every file (in
    file order), so that every domain and file is represented without reading the corpus."""
    readable = [f for f in files if f.split != "valid"]
    quota = sample_bytes // max(len(readable), 1)
    for file in readable:
        taken = 0
        for document in documents(file, options):
            if document.split != "train":
                continue
            yield document.text
            taken += len(document.text)
            if taken >= quota:
                break


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
        files = discover(corpus, None, options.domain_field)
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


def collect_shards(groups: list[Path], out: str | os.PathLike) -> pd.DataFrame:
    """Fan-in: index every group's shards per (split, domain) and write the stats table."""
    out = Path(out)
    index: dict[tuple[str, str], dict] = {}
    names = []
    fingerprints = set()
    for group in sorted(groups, key=lambda g: g.name):
        record_path = group / GROUP_RECORD
        if not record_path.is_file():
            raise RegmixError(f"{group}: not a prepared group (no {GROUP_RECORD})")
        record = json.loads(record_path.read_text())
        names.append(record["domain_names"])
        for sidecar in sorted(group.glob("*/*.json")):
            split, domain = sidecar.parent.name, sidecar.stem
            meta = json.loads(sidecar.read_text())
            fingerprints.add(meta["tokenizer"])
            entry = index.setdefault(
                (split, domain),
                {k: meta[k] for k in ("dtype", "tokenizer", "vocab_size", "eos_id", "keep")}
                | {"tokens": 0, "documents": 0, "text_bytes": 0, "shards": []},
            )
            for key in ("tokens", "documents", "text_bytes"):
                entry[key] += meta[key]
            shard = os.path.relpath(sidecar.with_suffix(".bin"), out)
            entry["shards"].append({"path": shard, "tokens": meta["tokens"]})
    if len(fingerprints) > 1:
        raise RegmixError(f"{out}: shards made with different tokenizers; prepare them again")
    if not any(split == "train" for split, _ in index):
        raise RegmixError(f"{out}: no train documents in {len(groups)} prepared group(s)")
    for (split, domain), entry in sorted(index.items()):
        write_json(entry, out / split / f"{domain}.json")
    for split in ("train", "valid"):
        (out / split).mkdir(parents=True, exist_ok=True)
    write_json(merge_names(names), out / DOMAIN_NAMES)
    stats = pd.DataFrame(
        [
            (domain, split, e["tokens"], e["documents"], e["text_bytes"], _full_size(e))
            for (split, domain), e in sorted(index.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        ],
        columns=[*STATS_COLUMNS, "text_bytes", "estimated_tokens"],
    )
    write_table(stats, out / "stats.parquet")
    return stats


def _full_size(entry: dict) -> int:
    """The domain's tokens had it been tokenized whole: a hash sample keeps `keep` of every
    document's chance, so tokens / keep estimates the whole without bias."""
    return round(entry["tokens"] / entry["keep"])


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
    if domains is not None and options.domain_field is None:
        files = discover(corpus, domains)
    else:
        files = discover(corpus, None, options.domain_field)
        if domains is not None:
            options = replace(options, domains=frozenset(domains))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=out) as staging_name:
        staging = Path(staging_name)
        if tokenizer != "byte":
            tokenizer = str(
                make_tokenizer(corpus, tokenizer, staging / "tokenizer.json", options, sample_bytes)
            )
        if max_tokens is not None:
            survey = staging / "survey.json"
            survey_corpus(corpus, options, tokenizer, sample_bytes, max_tokens, survey)
            options = replace(options, keep=keep_fractions(survey))
        sizes = {f.relative: f.path.stat().st_size for f in files}
        groups = plan_groups(files, sizes, bytes_per_job)
        jobs = [
            (list(g.files), staging / SHARDS / g.name, tokenizer, options, g.name) for g in groups
        ]
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                records = list(pool.map(_prepare_one, jobs))
        else:
            records = [_prepare_one(job) for job in jobs]
        stats = collect_shards([job[1] for job in jobs], staging)
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
