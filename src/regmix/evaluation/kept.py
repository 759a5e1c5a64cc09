"""What an evaluation scores, as one key: the model's files, the settings and the local task
files. A final model re-published unchanged (kept, or measured again on new validation data
after a corpus change) is not scored by lm-eval again: `regmix evaluate --keep` copies the
results kept under this key (regmix.files.kept_outputs).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path


def _files(path: Path) -> Iterable[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        yield from sorted(p for p in path.rglob("*") if p.is_file())


def evaluation_key(model_dir: str | os.PathLike, settings: Mapping) -> str:
    """A hash of the model folder's files, the settings and every local task file they name."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    tasks = [Path(t) for t in settings.get("tasks", ())]
    local = [t if t.is_dir() else t.parent for t in tasks if t.is_file() or t.is_dir()]
    sources = [Path(model_dir), *local]
    for source in sources:
        for path in _files(source):
            digest.update(str(path.relative_to(source)).encode())
            with open(path, "rb") as file:
                while chunk := file.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()
