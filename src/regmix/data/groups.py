"""Corpus files → data-stage jobs ("groups"), decided from file names and sizes alone.

A file of at least `bytes_per_job` is a job of its own. Smaller files are packed in path
order, and a group ends after a file with a chance proportional to its size (a hash of its
path against size / bytes_per_job), so groups hold about `bytes_per_job` on average and a
group's edges depend only on the files at them: a new file joins the group it lands in (that
job re-runs) and moves no other file, unless it happens to end a group itself (always when it
is large), which splits that one group in two. This is content-defined chunking over the
sorted file list, the same idea that keeps rsync's blocks stable under insertions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from regmix.data.corpus import CorpusFile, discover

DEFAULT_BYTES_PER_JOB = 1_000_000_000


@dataclass(frozen=True)
class Group:
    name: str
    files: tuple[CorpusFile, ...]
    bytes: int
    """On-disk (compressed) bytes of its files."""


def _unit_hash(text: str) -> float:
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def group_name(relative: str) -> str:
    """A readable, wildcard-safe job name from a file's path: `00.jsonl.zst` → `00-<hash>`."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", relative.split(".", 1)[0]).strip("_")[:40] or "file"
    return f"{slug}-{hashlib.blake2b(relative.encode(), digest_size=3).hexdigest()}"


def plan_groups(files: list[CorpusFile], sizes: dict[str, int], bytes_per_job: int) -> list[Group]:
    """Groups of `files` (sorted by path); `sizes` maps a file's relative path to its bytes."""
    ordered = sorted(files, key=lambda f: f.relative)
    groups: list[Group] = []
    current: list[CorpusFile] = []

    def close() -> None:
        if current:
            total = sum(sizes[f.relative] for f in current)
            groups.append(Group(group_name(current[-1].relative), tuple(current), total))
            current.clear()

    for file in ordered:
        size = sizes[file.relative]
        if size >= bytes_per_job:
            close()
            current.append(file)
            close()
            continue
        current.append(file)
        if _unit_hash(file.relative) < size / bytes_per_job:
            close()
    close()
    return groups


MEASURED_MB_PER_S = 2.9
"""Text a 32k byte-level BPE tokenizes per second on one thread (`encode_batch_fast`, measured
on 1 GB of real text on this project's 2-core machine; see benchmarks/data_stage.py). The
byte tokenizer is far faster, so runtimes from this rate are generous for it."""
TEXT_PER_DISK_BYTE = {".zst": 4.0, ".gz": 3.5, ".parquet": 3.0}
"""About how much text one byte on disk holds (compressed JSON lines, parquet)."""


def text_bytes_estimate(group: Group, sizes: dict[str, int]) -> float:
    total = 0.0
    for file in group.files:
        ratio = next(
            (r for ext, r in TEXT_PER_DISK_BYTE.items() if file.path.name.endswith(ext)), 1
        )
        total += sizes[file.relative] * ratio
    return total


def runtime_minutes(text_bytes: float, threads: int) -> int:
    """A job's time limit: twice its time at the measured rate, plus 10 minutes of slack."""
    seconds = text_bytes / (MEASURED_MB_PER_S * 1e6 * threads)
    return int(2 * seconds / 60) + 10


def corpus_groups(corpus: Mapping, path: Path) -> dict[str, tuple[Group, float]]:
    """The data jobs of a user's corpus as the workflow plans them, from the `corpus` config
    section and the corpus folder: name → (group, estimated text bytes)."""
    field = corpus["domain_field"]
    files = discover(path, None if field else corpus["domains"], field)
    sizes = {f.relative: f.path.stat().st_size for f in files}
    groups = plan_groups(files, sizes, corpus["bytes_per_job"])
    return {g.name: (g, text_bytes_estimate(g, sizes)) for g in groups}
