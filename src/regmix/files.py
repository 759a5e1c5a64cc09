"""Atomic writes and checked reads of the tables, YAML and JSON files the stages exchange.

Every artefact is written to a temporary file in its destination folder and renamed into
place, so an interrupted or failed run never leaves a half-written result behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from regmix.errors import RegmixError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        tmp.chmod(0o666 & ~_UMASK)  # mkstemp creates 0600; results should read like any file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a parquet table atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_yaml(data: Any, path: str | os.PathLike) -> None:
    write_text(yaml.safe_dump(data, sort_keys=False), path)


def write_json(data: Any, path: str | os.PathLike) -> None:
    write_text(json.dumps(data, indent=2) + "\n", path)


def read_table(path: str | os.PathLike, columns: Iterable[str] = ()) -> pd.DataFrame:
    """Read a parquet or CSV table, failing with one line if it is missing or lacks `columns`."""
    path = Path(path)
    if not path.is_file():
        raise RegmixError(f"{path}: no such file")
    try:
        df = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # pyarrow/pandas raise many types for a damaged file
        reason = f"{exc.__class__.__name__}: {exc}"
        raise RegmixError(f"{path}: not a readable table ({reason})") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise RegmixError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def read_yaml(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RegmixError(f"{path}: no such file")
    try:
        return yaml.safe_load(path.read_text())
    except UnicodeDecodeError as exc:
        raise RegmixError(f"{path}: expected a YAML text file, not binary data") from exc
    except yaml.YAMLError as exc:
        raise RegmixError(f"{path}: not valid YAML ({exc})") from exc


def kept_outputs(
    outputs: Sequence[str | os.PathLike],
    keep_dir: str | os.PathLike,
    key: str,
    compute: Callable[[], Any],
) -> bool:
    """Write `outputs` from the copies kept under `keep_dir/key`, or call `compute` (which
    writes them) and keep copies there, replacing those of other keys. Returns True when the
    kept copies were used.

    For a workflow step whose result depends only on `key` (what it was computed from): the
    workflow deletes a step's declared outputs before running it, so a step that runs again
    on unchanged inputs re-publishes its kept result instead of computing it again.
    """
    kept = Path(keep_dir) / key
    # Numbered: two outputs may share a file name (round2.parquet and intervals/round2.parquet).
    copies = [kept / f"{i}-{Path(out).name}" for i, out in enumerate(outputs)]
    if all(copy.is_file() for copy in copies):
        for out, copy in zip(outputs, copies, strict=True):
            with atomic_path(out) as tmp:
                shutil.copyfile(copy, tmp)
        return True
    compute()
    if Path(keep_dir).is_dir():
        shutil.rmtree(keep_dir)
    kept.mkdir(parents=True)
    for out, copy in zip(outputs, copies, strict=True):
        shutil.copyfile(out, copy)
    return False
