"""Corpus → packed token shards: `<out>/{split}/{domain}.bin` + JSON sidecar, `stats.parquet`.

Everything is written into a staging folder first and moved into place only once every domain
has tokenized cleanly, so a bad file never leaves a half-prepared data folder, and a failed
re-run never destroys the shards of the last good one.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from regmix.data.corpus import SPLITS, CorpusFile, discover, read_documents
from regmix.data.stats import COLUMNS as STATS_COLUMNS
from regmix.data.tokenize import load_tokenizer, parse_bpe_spec, train_bpe
from regmix.errors import RegmixError
from regmix.files import write_table

BATCH_DOCUMENTS = 2048


@dataclass(frozen=True)
class ShardJob:
    split: str
    domain: str
    paths: tuple[Path, ...]
    tokenizer: str
    dest: Path


@dataclass(frozen=True)
class ShardResult:
    split: str
    domain: str
    tokens: int
    documents: int
    text_bytes: int


def _batches(paths: tuple[Path, ...]) -> Iterator[list[str]]:
    batch: list[str] = []
    for path in paths:
        for text in read_documents(path):
            batch.append(text)
            if len(batch) == BATCH_DOCUMENTS:
                yield batch
                batch = []
    if batch:
        yield batch


def write_shard(job: ShardJob) -> ShardResult:
    """Tokenize one (split, domain) and write its packed ids and sidecar into job.dest."""
    tokenizer = load_tokenizer(job.tokenizer)
    tokens = documents = text_bytes = 0
    dtype = tokenizer.dtype
    shard = job.dest / job.split / f"{job.domain}.bin"
    with open(shard, "wb") as out:
        for batch in _batches(job.paths):
            ids = tokenizer.encode(batch).astype(dtype, copy=False)
            out.write(ids.tobytes())
            tokens += len(ids)
            documents += len(batch)
            text_bytes += sum(len(t.encode("utf-8")) for t in batch)
    if documents == 0:
        names = ", ".join(p.name for p in job.paths)
        raise RegmixError(f"domain {job.domain!r} ({job.split}): no documents in {names}")
    sidecar = {
        "dtype": np.dtype(dtype).name,
        "tokens": tokens,
        "documents": documents,
        "tokenizer": tokenizer.fingerprint,
        "vocab_size": tokenizer.vocab_size,
        "eos_id": tokenizer.eos_id,
        "files": [p.name for p in job.paths],
    }
    shard.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return ShardResult(job.split, job.domain, tokens, documents, text_bytes)


def _shard_jobs(files: list[CorpusFile], tokenizer: str, dest: Path) -> list[ShardJob]:
    grouped: dict[tuple[str, str], list[Path]] = {}
    for f in files:
        grouped.setdefault((f.split, f.domain), []).append(f.path)
    return [
        ShardJob(split, domain, tuple(paths), tokenizer, dest)
        for (split, domain), paths in sorted(grouped.items())
    ]


def _train_texts(files: list[CorpusFile]) -> Iterator[str]:
    for f in files:
        if f.split == "train":
            yield from read_documents(f.path)


def _publish(staging: Path, out: Path) -> None:
    """Move the staged shards into `out`, replacing the previous split folders."""
    for name in ("train", "valid", "tokenizer.json"):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():  # e.g. a BPE tokenizer.json left from an earlier prepare
            target.unlink()
        if (staging / name).exists():
            os.replace(staging / name, target)


def prepare_corpus(
    corpus: str | os.PathLike,
    out: str | os.PathLike,
    tokenizer: str = "byte",
    workers: int = 1,
    domains: list[str] | None = None,
) -> pd.DataFrame:
    """Tokenize every (split, domain) of `corpus` into `out`; returns the stats table."""
    started = time.perf_counter()
    files = discover(corpus, domains)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=out) as staging_name:
        staging = Path(staging_name)
        for split in SPLITS:
            (staging / split).mkdir()
        if (vocab := parse_bpe_spec(tokenizer)) is not None:
            tokenizer = str(train_bpe(_train_texts(files), vocab, staging / "tokenizer.json"))
        elif tokenizer != "byte":
            load_tokenizer(tokenizer)  # fail on a bad tokenizer before reading any corpus file
            # Keep a copy beside the shards: the data folder then says how to read itself,
            # and exported models ship the tokenizer they were trained with.
            shutil.copyfile(tokenizer, staging / "tokenizer.json")
            tokenizer = str(staging / "tokenizer.json")
        jobs = _shard_jobs(files, tokenizer, staging)
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(write_shard, jobs))
        else:
            results = [write_shard(job) for job in jobs]
        _publish(staging, out)
    stats = pd.DataFrame(
        [(r.domain, r.split, r.tokens, r.documents) for r in results], columns=STATS_COLUMNS
    )
    write_table(stats, out / "stats.parquet")
    seconds = time.perf_counter() - started
    megabytes = sum(r.text_bytes for r in results) / 1e6
    print(
        f"prepare: {len(results)} shards, {megabytes:.1f} MB of text → "
        f"{stats['tokens'].sum():,} tokens in {seconds:.2f} s ({megabytes / seconds:.1f} MB/s)",
        file=sys.stderr,
    )
    return stats
