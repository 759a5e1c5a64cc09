"""One data-stage job: stream a group of corpus files and write its token shards.

`<out>/{split}/{domain}.bin` (flat token ids) + `.json` sidecar for every (split, domain) the
files hold, and `<out>/group.json` (files, counts, the corpus's domain names). Documents are
read, tokenized and written a batch at a time, so memory stays bounded whatever the file size.
Everything is written into a staging folder and renamed into place at the end: a failed job
leaves no partial output, and other jobs' shards are untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from regmix.data.corpus import CorpusFile, ReadCounts, ReadOptions, documents
from regmix.data.progress import ProgressLog
from regmix.data.readers import Progress
from regmix.data.tokenize import load_tokenizer
from regmix.errors import RegmixError

BATCH_DOCUMENTS = 2048
BATCH_BYTES = 4_000_000
"""A (split, domain)'s documents are tokenized once either is reached: big enough batches for
the tokenizer's threads, small enough that many domains' pending batches stay well under 1 GB."""
GROUP_RECORD = "group.json"


@dataclass
class ShardCount:
    tokens: int = 0
    documents: int = 0
    text_bytes: int = 0


@dataclass
class _Pending:
    texts: list[str] = field(default_factory=list)
    bytes: int = 0


class GroupWriter:
    """Token shards of one group, one open file per (split, domain) seen."""

    def __init__(self, folder: Path, tokenizer, keep: dict[str, float] | None = None) -> None:
        self.folder = folder
        self.tokenizer = tokenizer
        self.keep = keep or {}
        self.files: dict[tuple[str, str], BinaryIO] = {}
        self.counts: dict[tuple[str, str], ShardCount] = {}
        self.pending: dict[tuple[str, str], _Pending] = {}

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.counts.values())

    def add(self, split: str, domain: str, text: str) -> None:
        key = (split, domain)
        pending = self.pending.setdefault(key, _Pending())
        pending.texts.append(text)
        pending.bytes += len(text)  # characters: close enough to bound the batch
        if len(pending.texts) >= BATCH_DOCUMENTS or pending.bytes >= BATCH_BYTES:
            self.flush(key)

    def flush(self, key: tuple[str, str]) -> None:
        pending = self.pending.pop(key, None)
        if pending is None or not pending.texts:
            return
        ids = self.tokenizer.encode(pending.texts).astype(self.tokenizer.dtype, copy=False)
        if key not in self.files:
            (self.folder / key[0]).mkdir(parents=True, exist_ok=True)
            self.files[key] = open(self.folder / key[0] / f"{key[1]}.bin", "wb")  # noqa: SIM115
            self.counts[key] = ShardCount()
        self.files[key].write(ids.tobytes())
        count = self.counts[key]
        count.tokens += len(ids)
        count.documents += len(pending.texts)
        count.text_bytes += sum(len(t.encode("utf-8", "surrogatepass")) for t in pending.texts)

    def close(self) -> None:
        for key in list(self.pending):
            self.flush(key)
        for out in self.files.values():
            out.close()
        for (split, domain), count in self.counts.items():
            sidecar = {
                "dtype": np.dtype(self.tokenizer.dtype).name,
                **asdict(count),
                "tokenizer": self.tokenizer.fingerprint,
                "vocab_size": self.tokenizer.vocab_size,
                "eos_id": self.tokenizer.eos_id,
                "keep": self.keep.get(domain, 1.0) if split == "train" else 1.0,
            }
            path = self.folder / split / f"{domain}.json"
            path.write_text(json.dumps(sidecar, indent=2) + "\n")


def prepare_group(
    files: list[CorpusFile],
    out: str | os.PathLike,
    tokenizer: str,
    options: ReadOptions,
    label: str | None = None,
) -> dict:
    """Tokenize `files` into `out` (replaced only on success); returns the group record."""
    out = Path(out)
    label = label or out.name
    started = time.perf_counter()
    cpu_started = time.process_time()  # all of the process's threads, the tokenizer's included
    encoder = load_tokenizer(tokenizer)
    total = sum(f.path.stat().st_size for f in files)
    log = ProgressLog(f"prepare {label}", total)
    counts = ReadCounts()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        writer = GroupWriter(staging, encoder, options.keep)
        done_bytes = read_documents = text_bytes = 0
        for file in files:
            progress = Progress()
            in_file = 0
            for document in documents(file, options, counts, progress):
                writer.add(document.split, document.domain, document.text)
                in_file += 1
                text_bytes += len(document.text)
                if in_file % 256 == 0:
                    read = done_bytes + progress.bytes_read
                    log.update(read_documents + in_file, text_bytes, writer.tokens, read)
            if in_file == 0 and options.domain_field is None:
                raise RegmixError(f"{file.path}: no documents (an empty corpus file)")
            read_documents += in_file
            done_bytes += file.path.stat().st_size
        writer.close()
        seconds = time.perf_counter() - started
        record = {
            "files": [f.relative for f in files],
            "bytes": total,
            "documents": read_documents,
            "tokens": writer.tokens,
            "text_bytes": sum(c.text_bytes for c in writer.counts.values()),
            "seconds": round(seconds, 3),
            "cpu_seconds": round(time.process_time() - cpu_started, 3),
            "missing_domain": counts.missing_domain,
            "held_out": counts.held_out,
            "other_domains": counts.other_domains,
            "sampled_out": counts.sampled_out,
            "domain_names": dict(sorted(counts.raw_names.items())),
        }
        (staging / GROUP_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    megabytes = record["text_bytes"] / 1e6
    skipped = (
        f", {counts.missing_domain:,} records without {options.domain_field!r} skipped"
        if options.domain_field
        else ""
    )
    print(
        f"prepare {label}: {len(files)} file(s), {read_documents:,} documents, {megabytes:,.1f} MB "
        f"of text → {writer.tokens:,} tokens in {seconds:.1f} s ({megabytes / seconds:.2f} MB/s)"
        f"{skipped}, {counts.held_out:,} held out for validation, {counts.sampled_out:,} left "
        "out by corpus.max_tokens",
        file=sys.stderr,
    )
    return record
