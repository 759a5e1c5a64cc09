"""An evaluation kept by the content of what it scored: the model's files, the settings and the
local task files. A final model that was re-published unchanged (kept, or measured again on new
validation data after a corpus change) is not scored by lm-eval again: its results are copied.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from regmix.files import atomic_path

KEPT_FILES = ("results.json", "samples.jsonl")


def _files(path: Path) -> Iterable[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        yield from sorted(p for p in path.rglob("*") if p.is_file())


def evaluation_key(model_dir: str | os.PathLike, settings: Mapping) -> str:
    """A hash of the model folder's files, the settings and every local task file they name."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    sources = [Path(model_dir), *(Path(t).parent for t in settings.get("tasks", ()))]
    for source in sources:
        for path in _files(source):
            digest.update(str(path.relative_to(source)).encode())
            with open(path, "rb") as file:
                while chunk := file.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def republish(keep_dir: str | os.PathLike, key: str, out_dir: str | os.PathLike) -> bool:
    """Copy the results kept under `key` to `out_dir` (False: none kept)."""
    kept = Path(keep_dir) / key
    if not all((kept / name).is_file() for name in KEPT_FILES):
        return False
    for name in KEPT_FILES:  # results.json last: it marks a finished evaluation
        with atomic_path(Path(out_dir) / name) as tmp:
            shutil.copyfile(kept / name, tmp)
    return True


def keep(out_dir: str | os.PathLike, keep_dir: str | os.PathLike, key: str) -> None:
    """Keep a finished evaluation's results under `key` (the only one kept for this model)."""
    keep_dir = Path(keep_dir)
    if keep_dir.is_dir():
        shutil.rmtree(keep_dir)
    (keep_dir / key).mkdir(parents=True)
    for name in KEPT_FILES:
        shutil.copyfile(Path(out_dir) / name, keep_dir / key / name)
