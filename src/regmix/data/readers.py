"""Streaming readers for corpus files: JSON lines (plain, gzip or zstd) and parquet.

Each yields `(number, record)` one document at a time (a line number, or a parquet row
number), never holding more than a batch of rows, so memory does not grow with the file. A
damaged file fails as one line naming it and, where known, the line; so does a compressed
file that ends before its zstd frame or gzip trailer does (a download cut short), wherever
the cut falls. Bytes that are not UTF-8 are kept as lone surrogates (`surrogateescape`), for
the corpus reader to repair and count like the lone surrogates JSON escapes can spell.

A reader can also hash the raw bytes it reads (`digest`) and take about one record in k only
(`every`: a sample spread over the whole file, for the survey and the tokenizer's sample).
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
"""Compressed bytes read at a time: small, so that the file position (Progress) stays close to
what was decoded."""
BUFFER_SIZE = 1 << 20
ZSTD_MAX_WINDOW = 2**31  # files compressed with --long need more than the default 128 MiB


def file_extension(path: Path) -> str | None:
    return next((ext for ext in EXTENSIONS if path.name.endswith(ext)), None)


class Progress:
    """How far a reader is into its file, in compressed (on-disk) bytes."""

    def __init__(self) -> None:
        self.raw: IO[bytes] | None = None
        self.done = 0
        self.records = 0
        """Lines (or rows) in the file, once the reader reached its end."""
        self.sampled = 0
        """Of these, the positions a sampling reader chose (`every`)."""

    @property
    def bytes_read(self) -> int:
        if self.raw is None or self.raw.closed:
            return self.done
        return self.raw.tell()


class Truncated(EOFError):
    """A compressed stream that ends before its frame or trailer does."""


class _Hashing(io.RawIOBase):
    """A raw file that feeds every byte read to `digest` (the file's content hash, computed
    while the file is read anyway)."""

    def __init__(self, raw: IO[bytes], digest) -> None:
        self.raw = raw
        self.digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        if n:
            self.digest.update(memoryview(buffer)[:n])
        return n

    def tell(self) -> int:
        return self.raw.tell()


class _ZstdFrames(io.RawIOBase):
    """The decompressed bytes of a zstd file, frame after frame. At the end of the input, a
    frame that has not ended is a cut file (python-zstandard's stream reader reports a cut
    stream as a shorter one)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.context = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self.frame = None
        self.buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.buffer:
            if not self._decompress_more():
                return 0
        n = min(len(buffer), len(self.buffer))
        buffer[:n] = self.buffer[:n]
        self.buffer = self.buffer[n:]
        return n

    def _decompress_more(self) -> bool:
        chunk = self.raw.read(READ_SIZE)
        if not chunk:
            if self.frame is not None:
                raise Truncated("the file ends inside a zstd frame: cut short")
            return False
        out = []
        while chunk:
            if self.frame is None:
                self.frame = self.context.decompressobj()
            out.append(self.frame.decompress(chunk))
            chunk = b""
            if self.frame.eof:  # the next frame, if any, starts in what is left
                chunk, self.frame = self.frame.unused_data, None
        self.buffer = memoryview(b"".join(out))
        return True


def _decompressed(path: Path, raw: IO[bytes]) -> IO[bytes]:
    if path.name.endswith(".zst"):
        return io.BufferedReader(_ZstdFrames(raw), BUFFER_SIZE)
    if path.name.endswith(".gz"):  # gzip checks its trailer: a cut file raises EOFError
        return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), BUFFER_SIZE)  # type: ignore[arg-type]
    return io.BufferedReader(raw, BUFFER_SIZE)  # type: ignore[arg-type]


WEYL = 0x9E3779B97F4A7C15
"""2^64 / the golden ratio: record n is chosen when n × WEYL mod 2^64 falls in the first
1/every of the range. The chosen positions are spread evenly over the file with no period, so
a corpus whose sources alternate in a fixed pattern is not sampled from one source only (a
plain every-k-th stride would be)."""


def chosen(number: int, every: int) -> bool:
    return every == 1 or (number * WEYL) % 2**64 < 2**64 // every


def read_records(
    path: Path,
    columns: list[str] | None = None,
    progress: Progress | None = None,
    digest=None,
    every: int = 1,
) -> Iterator[tuple[int, object]]:
    """`(line or row number, record)` for every document of `path` (about one in `every`, spread
    over the file: `chosen`), in order. For
    parquet, `columns` names the top-level columns to read (None: all). `digest` (a hashlib
    object) is fed the file's bytes."""
    if path.name.endswith(".parquet"):
        return _parquet_rows(path, columns, progress, digest, every)
    return _json_lines(path, progress, digest, every)


def _json_lines(path: Path, progress: Progress | None, digest, every: int):
    number = sampled = 0
    try:
        with open(path, "rb", buffering=0) as file:
            raw: IO[bytes] = _Hashing(file, digest) if digest is not None else file  # type: ignore[assignment]
            if progress is not None:
                progress.raw = raw
            with _decompressed(path, raw) as lines:
                for number, line in enumerate(lines, start=1):
                    if every > 1:
                        if not chosen(number, every):
                            continue
                        sampled += 1
                    if not line.strip():
                        continue
                    text = line.decode("utf-8", "surrogateescape")
                    try:
                        record = json.loads(text)
                    except json.JSONDecodeError as exc:
                        raise RegmixError(f"{path}:{number}: malformed JSON ({exc.msg})") from exc
                    yield number, record
            if progress is not None:
                progress.done = path.stat().st_size
                progress.records, progress.sampled = number, sampled if every > 1 else number
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
        where = f"{path}:{number + 1}" if number else str(path)
        kind = "truncated file" if isinstance(exc, EOFError) else "corrupt or truncated file"
        raise RegmixError(f"{where}: cannot read: {kind} ({exc})") from exc


def _parquet_rows(path: Path, columns: list[str] | None, progress: Progress | None, digest, every):
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
    if digest is not None:  # pyarrow reads the file itself: hash it in one pass first
        with open(path, "rb") as file:
            while chunk := file.read(BUFFER_SIZE):
                digest.update(chunk)
    row = sampled = 0
    size = path.stat().st_size
    groups = max(table.num_row_groups, 1)
    try:
        for group in range(table.num_row_groups):
            for batch in table.iter_batches(
                batch_size=PARQUET_BATCH_ROWS, row_groups=[group], columns=columns
            ):
                numbers = range(row + 1, row + len(batch) + 1)
                row += len(batch)
                if every > 1:  # convert the chosen rows only
                    picked = [i for i, n in enumerate(numbers) if chosen(n, every)]
                    sampled += len(picked)
                    batch = batch.take(picked)
                    numbers = [numbers[i] for i in picked]
                yield from zip(numbers, batch.to_pylist(), strict=True)
            if progress is not None:
                progress.done = size * (group + 1) // groups
        if progress is not None:
            progress.records, progress.sampled = row, sampled if every > 1 else row
    except OSError as exc:
        raise RegmixError(f"{path}: row {row + 1}: cannot read: corrupt file ({exc})") from exc
