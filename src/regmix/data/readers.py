"""Streaming readers for corpus files: JSON lines (plain, gzip or zstd) and parquet.

Each yields `(number, record)` one document at a time (a line number, or a parquet row
number), never holding more than a batch of rows, so memory does not grow with the file. A
damaged file fails as one line naming it and, where known, the line.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pyarrow.parquet as pq
import zstandard

from regmix.errors import RegmixError

JSONL_EXTENSIONS = (".jsonl.zst", ".jsonl.gz", ".json.gz", ".jsonl")
EXTENSIONS = (*JSONL_EXTENSIONS, ".parquet")
PARQUET_BATCH_ROWS = 1024
READ_SIZE = 16_384
ZSTD_MAX_WINDOW = 2**31  # files compressed with --long need more than the default 128 MiB


def file_extension(path: Path) -> str | None:
    return next((ext for ext in EXTENSIONS if path.name.endswith(ext)), None)


class Progress:
    """How far a reader is into its file, in compressed (on-disk) bytes."""

    def __init__(self) -> None:
        self.raw: IO[bytes] | None = None
        self.done = 0

    @property
    def bytes_read(self) -> int:
        if self.raw is None or self.raw.closed:
            return self.done
        return self.raw.tell()


def read_records(
    path: Path, columns: list[str] | None = None, progress: Progress | None = None
) -> Iterator[tuple[int, object]]:
    """`(line or row number, record)` for every document of `path`, in order. For parquet,
    `columns` names the top-level columns to read (None: all)."""
    if path.name.endswith(".parquet"):
        return _parquet_rows(path, columns, progress)
    return _json_lines(path, progress)


def _open_text(path: Path, raw: IO[bytes]) -> IO[str]:
    if path.name.endswith(".zst"):
        # Small reads keep the file position (Progress) close to what was decoded.
        reader = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(
            raw, read_size=READ_SIZE, read_across_frames=True
        )
        return io.TextIOWrapper(io.BufferedReader(reader), encoding="utf-8")
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw, mode="rb"), encoding="utf-8")
    return io.TextIOWrapper(raw, encoding="utf-8")


def _json_lines(path: Path, progress: Progress | None) -> Iterator[tuple[int, object]]:
    number = 0
    try:
        with open(path, "rb") as raw:
            if progress is not None:
                progress.raw = raw
            with _open_text(path, raw) as lines:
                for number, line in enumerate(lines, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise RegmixError(f"{path}:{number}: malformed JSON ({exc.msg})") from exc
                    yield number, record
            if progress is not None:
                progress.done = path.stat().st_size
    except (OSError, EOFError, UnicodeDecodeError, zlib.error, zstandard.ZstdError) as exc:
        where = f"{path}:{number + 1}" if number else str(path)
        kind = (
            "corrupt or truncated file" if not isinstance(exc, UnicodeDecodeError) else "not UTF-8"
        )
        raise RegmixError(f"{where}: cannot read: {kind} ({exc})") from exc


def _parquet_rows(
    path: Path, columns: list[str] | None, progress: Progress | None
) -> Iterator[tuple[int, object]]:
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise RegmixError(f"{path}: not a readable parquet file ({exc})") from exc
    names = table.schema_arrow.names
    missing = [c for c in columns or () if c not in names]
    if missing:
        raise RegmixError(
            f"{path}: no {', '.join(repr(c) for c in missing)} column (columns: {', '.join(names)})"
        )
    row = 0
    size = path.stat().st_size
    groups = max(table.num_row_groups, 1)
    try:
        for group in range(table.num_row_groups):
            for batch in table.iter_batches(
                batch_size=PARQUET_BATCH_ROWS, row_groups=[group], columns=columns
            ):
                for record in batch.to_pylist():
                    row += 1
                    yield row, record
            if progress is not None:
                progress.done = size * (group + 1) // groups
    except OSError as exc:
        raise RegmixError(f"{path}: row {row + 1}: cannot read: corrupt file ({exc})") from exc
