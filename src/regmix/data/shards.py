"""One data-stage job: stream a group of corpus files and write each file's token shards.

Under the shards folder (`results/data/shards`), for a group `<group>`:

- `<group>/<file_id>/{split}/{domain}.bin` (flat token ids) + `.json` sidecar: one file's
  tokens per split and domain (`test` documents are counted, never written: no model reads them);
- `<group>/<file_id>/file.json`: the file record (its size, mtime, content hash, counts, and
  per (split, domain) the tokens written with their hash), written last;
- `<group>/group.json`: the group's summary (its files in order, counts, domain names).

The group is the scheduling unit (one Snakemake job); the file is the storage and resume unit.
A job works in `.<group>.partial/`, where each file's folder appears (renamed from a
`.<file_id>.staging-*` folder) once the file is done, and renames it to `<group>` at the end.
A job killed at any point leaves that folder behind; the next attempt removes what is unfinished
in it, keeps every finished file whose record still matches the file on disk and the job's
settings, and reads only the others. Documents are read, tokenized and written a batch at a
time, so memory stays bounded whatever the file size. Folders follow the umask.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from regmix.data.corpus import (
    MODEL_SPLITS,
    CorpusFile,
    ReadCounts,
    ReadOptions,
    documents,
    kept,
)
from regmix.data.fingerprint import hex_name, new_hash
from regmix.data.groups import group_name
from regmix.data.progress import ProgressLog
from regmix.data.readers import Progress
from regmix.data.tokenize import load_tokenizer
from regmix.errors import RegmixError
from regmix.files import write_json

BATCH_DOCUMENTS = 2048
BATCH_BYTES = 4_000_000
"""A (split, domain)'s documents are tokenized once either is reached: big enough batches for
the tokenizer's threads, small enough that many domains' pending batches stay well under 1 GB."""
GROUP_RECORD = "group.json"
FILE_RECORD = "file.json"
PARTIAL = ".{group}.partial"
FORMAT = 2
"""The layout of a file's folder; a partial folder of another format is not resumed."""


def file_id(relative: str) -> str:
    """A file's folder name in its group: readable and unique (`train/00.jsonl.zst` →
    `train_00-<hash>`)."""
    return group_name(relative)


def partial_folder(out: Path) -> Path:
    """Where a job keeps its finished files until the group is done."""
    return out.parent / PARTIAL.format(group=out.name)


@dataclass
class ShardCount:
    tokens: int = 0
    documents: int = 0
    text_bytes: int = 0
    read_documents: int = 0
    """Documents of this split and domain in the file, written or not (max_tokens, test)."""
    read_text_bytes: int = 0


@dataclass
class _Pending:
    texts: list[str] = field(default_factory=list)
    bytes: int = 0


class FileWriter:
    """Token shards of one corpus file, one open file per (split, domain) written."""

    def __init__(self, folder: Path, tokenizer) -> None:
        self.folder = folder
        self.tokenizer = tokenizer
        self.files: dict[tuple[str, str], BinaryIO] = {}
        self.hashes: dict[tuple[str, str], object] = {}
        self.counts: dict[tuple[str, str], ShardCount] = {}
        self.pending: dict[tuple[str, str], _Pending] = {}
        self.tokens = 0

    def read(self, split: str, domain: str, size: int) -> None:
        """Count a document of the file, whether it is written or not."""
        count = self.counts.setdefault((split, domain), ShardCount())
        count.read_documents += 1
        count.read_text_bytes += size

    def add(self, split: str, domain: str, text: str, size: int) -> None:
        key = (split, domain)
        pending = self.pending.setdefault(key, _Pending())
        pending.texts.append(text)
        pending.bytes += size
        count = self.counts[key]
        count.documents += 1
        count.text_bytes += size
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
            self.hashes[key] = new_hash()
        data = ids.tobytes()
        self.files[key].write(data)
        self.hashes[key].update(data)
        self.counts[key].tokens += len(ids)
        self.tokens += len(ids)

    def close(self, keep: dict[str, float] | None) -> dict[str, dict]:
        """Write what is pending and each shard's sidecar; the per (split, domain) entries of
        the file record."""
        for key in list(self.pending):
            self.flush(key)
        for out in self.files.values():
            out.close()
        entries = {}
        for (split, domain), count in sorted(self.counts.items()):
            share = (keep or {}).get(domain, 1.0) if split == "train" else 1.0
            token_hash = hex_name(self.hashes[(split, domain)]) if count.tokens else None
            entries[f"{split}/{domain}"] = {
                **asdict(count),
                "token_hash": token_hash,
                "keep": share,
            }
            if count.tokens:
                sidecar = {
                    "dtype": np.dtype(self.tokenizer.dtype).name,
                    **asdict(count),
                    "token_hash": token_hash,
                    "tokenizer": self.tokenizer.fingerprint,
                    "vocab_size": self.tokenizer.vocab_size,
                    "eos_id": self.tokenizer.eos_id,
                    "keep": share,
                }
                write_json(sidecar, self.folder / split / f"{domain}.json")
        return entries


def job_settings(tokenizer, options: ReadOptions, keep: dict[str, float] | None) -> str:
    """What a finished file's shards depend on besides the file: a partial folder's files are
    kept by the next attempt only when it runs with the same settings."""
    settings = {
        "format": FORMAT,
        "tokenizer": tokenizer.fingerprint,
        "options": {
            k: sorted(v) if isinstance(v, frozenset) else v for k, v in asdict(options).items()
        },
        "keep": dict(sorted((keep or {}).items())),
    }
    digest = new_hash()
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return hex_name(digest)


def prepare_file(
    file: CorpusFile,
    folder: Path,
    encoder,
    options: ReadOptions,
    keep: dict[str, float] | None,
    settings: str,
    log: ProgressLog,
    totals: dict[str, int],
) -> dict:
    """Tokenize one file into `folder` (created here; renamed into place by the caller) and
    write its record last; `totals` (documents, text_bytes, bytes) carry the job's progress."""
    started = time.perf_counter()
    stat = file.path.stat()
    writer = FileWriter(folder, encoder)
    counts = ReadCounts()
    progress = Progress()
    digest = new_hash()
    read = sampled_out = 0
    for document in documents(file, options, counts, progress, digest):
        writer.read(document.split, document.domain, document.size)
        read += 1
        if document.split not in MODEL_SPLITS:
            pass  # test: counted, never written
        elif kept(document, keep):
            writer.add(document.split, document.domain, document.text, document.size)
        else:
            sampled_out += 1
        totals["text_bytes"] += document.size
        if read % 256 == 0:
            at = totals["bytes"] + progress.bytes_read
            log.update(totals["documents"] + read, totals["text_bytes"], writer.tokens, at)
    if read == 0 and options.domain_field is None:
        raise RegmixError(f"{file.path}: no documents (an empty corpus file)")
    domains = writer.close(keep)
    totals["documents"] += read
    totals["bytes"] += stat.st_size
    record = {
        "relative": file.relative,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "content_hash": hex_name(digest),
        "split": file.split,
        "documents": read,
        "skipped": {
            "missing_domain": counts.missing_domain,
            "other_domains": counts.other_domains,
            "sampled_out": sampled_out,
        },
        "repaired": {"surrogates": counts.repaired},
        "held_out": counts.held_out,
        "test_documents": sum(c["read_documents"] for k, c in domains.items() if k[:5] == "test/"),
        "domain_names": dict(sorted(counts.raw_names.items())),
        "settings": settings,
        "seconds": round(time.perf_counter() - started, 3),
        "domains": domains,
    }
    write_json(record, folder / FILE_RECORD)
    return record


def finished_record(folder: Path, file: CorpusFile, settings: str) -> dict | None:
    """The record of a file an earlier attempt finished, if it still holds: same file on disk
    (size and mtime) and same settings."""
    try:
        record = json.loads((folder / FILE_RECORD).read_text())
        stat = file.path.stat()
    except (OSError, ValueError):
        return None
    same = (record.get("relative"), record.get("size"), record.get("mtime_ns")) == (
        file.relative,
        stat.st_size,
        stat.st_mtime_ns,
    )
    return record if same and record.get("settings") == settings else None


def remove_stale(parent: Path, group: str) -> None:
    """What killed jobs of this group left beside it: staging folders of older versions."""
    for stale in parent.glob(f".{group}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)


def prepare_group(
    files: list[CorpusFile],
    out: str | os.PathLike,
    tokenizer: str,
    options: ReadOptions,
    keep: dict[str, float] | None = None,
    label: str | None = None,
) -> dict:
    """Tokenize `files` into `out` (replaced only on success), resuming what an interrupted
    attempt finished; returns the group record. `keep`: per train domain, the share of its
    documents to tokenize (corpus.max_tokens's hash sample); None tokenizes all."""
    out = Path(out)
    label = label or out.name
    started = time.perf_counter()
    cpu_started = time.process_time()  # all of the process's threads, the tokenizer's included
    encoder = load_tokenizer(tokenizer)
    settings = job_settings(encoder, options, keep)
    total = sum(f.path.stat().st_size for f in files)
    log = ProgressLog(f"prepare {label}", total)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out.parent, out.name)
    partial = partial_folder(out)
    partial.mkdir(exist_ok=True)
    ids = {f.relative: file_id(f.relative) for f in files}
    records, resumed = [], []
    kept_folders = {
        ids[f.relative] for f in files if finished_record(partial / ids[f.relative], f, settings)
    }
    for entry in partial.iterdir():  # unfinished or outdated files of an earlier attempt
        if entry.name not in kept_folders:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    if kept_folders:
        print(
            f"prepare {label}: {len(kept_folders)} of {len(files)} file(s) finished by an "
            "earlier attempt, kept",
            file=sys.stderr,
        )
    totals = {"documents": 0, "text_bytes": 0, "bytes": 0}
    for file in files:
        folder = partial / ids[file.relative]
        record = finished_record(folder, file, settings) if folder.name in kept_folders else None
        if record is not None:
            resumed.append(record)
            totals["bytes"] += record["size"]
            totals["documents"] += record["documents"]
        else:
            staging = partial / f".{folder.name}.staging-{os.getpid()}"
            staging.mkdir()
            record = prepare_file(file, staging, encoder, options, keep, settings, log, totals)
            os.replace(staging, folder)
        records.append(record)
    summary = group_record(records, [ids[f.relative] for f in files], total, resumed)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    summary["cpu_seconds"] = round(time.process_time() - cpu_started, 3)
    write_json(summary, partial / GROUP_RECORD)
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    print(log_line(label, summary, options), file=sys.stderr)
    return summary


def group_record(records: list[dict], ids: list[str], total: int, resumed: list[dict]) -> dict:
    """The group's summary of its files' records (`resumed`: those an earlier attempt made)."""
    entries = [e for r in records for e in r["domains"].values()]
    names: dict[str, str] = {}
    for record in records:
        names.update(record["domain_names"])
    return {
        "files": [r["relative"] for r in records],
        "file_ids": ids,
        "bytes": total,
        "documents": sum(r["documents"] for r in records),
        "tokens": sum(e["tokens"] for e in entries),
        "text_bytes": sum(e["text_bytes"] for e in entries),
        "read_text_bytes": sum(e["read_text_bytes"] for e in entries),
        "resumed_files": len(resumed),
        "resumed_text_bytes": sum(e["text_bytes"] for r in resumed for e in r["domains"].values()),
        **{
            key: sum(r["skipped"][key] for r in records)
            for key in ("missing_domain", "other_domains", "sampled_out")
        },
        "held_out": sum(r["held_out"] for r in records),
        "test_documents": sum(r["test_documents"] for r in records),
        "repaired": sum(r["repaired"]["surrogates"] for r in records),
        "domain_names": dict(sorted(names.items())),
    }


def log_line(label: str, summary: dict, options: ReadOptions) -> str:
    seconds = max(summary["seconds"], 1e-9)
    megabytes = summary["text_bytes"] / 1e6
    rate = (summary["text_bytes"] - summary["resumed_text_bytes"]) / 1e6 / seconds  # this attempt
    skipped = (
        f", {summary['missing_domain']:,} records without {options.domain_field!r} skipped"
        if options.domain_field
        else ""
    )
    resumed = (
        f" ({summary['resumed_files']} kept from an earlier attempt)"
        if summary["resumed_files"]
        else ""
    )
    return (
        f"prepare {label}: {len(summary['files'])} file(s){resumed}, {summary['documents']:,} "
        f"documents, {megabytes:,.1f} MB of text → {summary['tokens']:,} tokens in "
        f"{seconds:.1f} s ({rate:.2f} MB/s){skipped}, {summary['held_out']:,} held "
        f"out for validation, {summary['test_documents']:,} test documents counted and not "
        f"trained on, {summary['sampled_out']:,} left out by corpus.max_tokens, "
        f"{summary['repaired']:,} records with text UTF-8 cannot carry repaired"
    )
