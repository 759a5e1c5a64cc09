"""A multi-domain corpus in RegMix's layout: `<corpus>/{train,valid}/<domain>-<k>.<ext>`.

One document per JSON line (`.jsonl`, `.jsonl.gz`) or parquet row (`.parquet`), text in the
field `text`. The domain is the file-name prefix before the first `-`, and `<k>` is a shard
number, so `pile_cc-0.jsonl` and `pile_cc-1.jsonl.gz` are both domain `pile_cc`. A domain may
exist only in `valid/`: it is then a pure evaluation target.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from regmix.errors import RegmixError

SPLITS = ("train", "valid")
EXTENSIONS = (".jsonl.gz", ".jsonl", ".parquet")
DOMAIN_NAME = re.compile(r"[A-Za-z0-9_]+")
SHARD_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class CorpusFile:
    split: str
    domain: str
    path: Path


def file_extension(path: Path) -> str | None:
    return next((ext for ext in EXTENSIONS if path.name.endswith(ext)), None)


def domain_of(path: Path) -> str:
    """`pile_cc-3.jsonl.gz` → `pile_cc`; a dash inside the domain name is an error."""
    stem = path.name[: -len(file_extension(path) or "")]
    domain, dash, shard = stem.partition("-")
    if dash and not SHARD_NUMBER.fullmatch(shard):
        head, _, tail = stem.rpartition("-")
        if not tail.isdigit():
            head, tail = stem, "0"
        suggestion = f"{head.replace('-', '_')}-{tail}"
        raise RegmixError(
            f"{path}: expected <domain>-<k>{file_extension(path)} with a numeric shard k; domain "
            f"names may not contain '-' (rename to e.g. {suggestion})"
        )
    if not DOMAIN_NAME.fullmatch(domain):
        raise RegmixError(f"{path}: domain {domain!r} must use only letters, digits and '_'")
    return domain


def discover(corpus: str | os.PathLike, domains: list[str] | None = None) -> list[CorpusFile]:
    """All corpus files, sorted by split, domain and name; checks the layout first."""
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise RegmixError(f"{corpus}: corpus folder does not exist")
    if not (corpus / "train").is_dir():
        expected = f"{corpus}/train/<domain>-<k>.jsonl"
        raise RegmixError(f"{corpus}: no train/ folder (expected {expected})")
    files = []
    for split in SPLITS:
        folder = corpus / split
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if file_extension(path) is not None:
                files.append(CorpusFile(split, domain_of(path), path))
    if not any(f.split == "train" for f in files):
        raise RegmixError(f"{corpus}/train: no .jsonl, .jsonl.gz or .parquet files")
    if domains is not None:
        found = {f.domain for f in files}
        missing = [d for d in domains if d not in found]
        if missing:
            raise RegmixError(f"{corpus}: no files for domain(s) {', '.join(missing)}")
        files = [f for f in files if f.domain in domains]
    return files


def _document_text(record: object, where: str) -> str:
    if not isinstance(record, dict):
        raise RegmixError(f"{where}: expected a JSON object with a 'text' field")
    if "text" not in record:
        raise RegmixError(f"{where}: record has no 'text' field")
    text = record["text"]
    if not isinstance(text, str):
        raise RegmixError(f"{where}: 'text' must be a string, got {type(text).__name__}")
    return text


def _read_jsonl(path: Path) -> Iterator[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RegmixError(f"{path}:{number}: malformed JSON ({exc.msg})") from exc
                yield _document_text(record, f"{path}:{number}")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise RegmixError(f"{path}: cannot read ({exc})") from exc


def _read_parquet(path: Path, batch_rows: int = 4096) -> Iterator[str]:
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise RegmixError(f"{path}: not a readable parquet file ({exc})") from exc
    if "text" not in table.schema_arrow.names:
        columns = ", ".join(table.schema_arrow.names)
        raise RegmixError(f"{path}: no 'text' column (columns: {columns})")
    row = 0
    for batch in table.iter_batches(batch_size=batch_rows, columns=["text"]):
        for text in batch.column(0).to_pylist():
            row += 1
            if not isinstance(text, str):
                raise RegmixError(f"{path}: row {row}: 'text' must be a string, got {text!r}")
            yield text


def read_documents(path: Path) -> Iterator[str]:
    """The documents of one corpus file, in order."""
    return _read_parquet(path) if path.name.endswith(".parquet") else _read_jsonl(path)
