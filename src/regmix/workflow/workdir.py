"""What a workflow's working directory shows while Snakemake works in it, read cheaply.

Snakemake 9 (`snakemake/persistence/file.py`) marks every output of a started job with a
file under `.snakemake/incomplete/`, named by the urlsafe base64 of the output's path (split
into `@`-prefixed folders past the file-name limit); it deletes the marks when the job
succeeds or fails, and keeps them when it is interrupted, so that `--rerun-incomplete` can
find them. Its locks (`.snakemake/locks/`) exist while a Snakemake runs in the folder, and
each run writes `.snakemake/log/<time>.snakemake.log` with an "Error in rule" block per
failed job. snakemake-executor-plugin-slurm keeps `.snakemake/slurm_logs/rule_<rule>/
<wildcards>/<jobid>.log` of running and failed jobs (a successful job's is deleted).

`regmix status` reads these and the tails of the jobs' own logs; nothing here parses more
than the end of a log or imports more than the standard library.
"""

from __future__ import annotations

import json
import os
import re
import time
from base64 import urlsafe_b64decode
from dataclasses import dataclass, field
from pathlib import Path

TAIL_BYTES = 16384
"""How much of a log's end is read: the last progress and error lines are there."""

PROGRESS = re.compile(
    r"^(?P<run>\S+): step (?P<step>\d+)/(?P<steps>\d+), [\d,]+ tokens, (?P<speed>[\d,.]+) tokens/s"
)
"""A training log's line per evaluation (`regmix.training.language_modeling.RunProgress.report`)."""
ERROR = re.compile(
    r"regmix: error:|^Traceback|^(\w+\.)*\w*(Error|Exception|Interrupt|Exit)\b|Killed|CANCELLED"
    r"|oom.kill|Out Of Memory|TIME LIMIT|slurmstepd: error|srun: error|non-zero exit",
    re.IGNORECASE,
)
"""Lines that say why a job stopped: ours, Python's, the kernel's and SLURM's."""
SNAKEMAKE_ERROR = re.compile(r"^Error in rule (?P<rule>\S+):$")
PROVIDED = re.compile(r"^Provided (?P<what>cores|remote nodes|resources): (?P<value>.+)$")


@dataclass(frozen=True)
class SnakemakeError:
    """One failed job in Snakemake's log."""

    rule: str
    outputs: tuple[str, ...]
    log: str | None


@dataclass
class SnakemakeLog:
    """What the newest Snakemake run here reported: its failed jobs and what it was given."""

    errors: list[SnakemakeError] = field(default_factory=list)
    cores: int | None = None
    """`--cores` of a local run."""
    nodes: int | None = None
    """`--jobs` of a cluster run (None: unlimited, or a local run)."""
    resources: dict[str, int] = field(default_factory=dict)
    """`--resources`, e.g. {"gpu": 4}."""

    def provided(self, what: str, value: str) -> None:
        if what == "cores":
            self.cores = int(value.split()[0])
        elif what == "remote nodes" and value.isdigit():
            self.nodes = int(value)
        elif what == "resources":
            for item in value.split(", "):
                name, _, amount = item.partition("=")
                if amount.isdigit():
                    self.resources[name] = int(amount)


@dataclass
class Workdir:
    """The facts of one working directory that many jobs consult, read once."""

    root: Path
    now: float
    marks: dict[str, float]
    """Outputs Snakemake marks as in progress, with the time their job started."""
    locked: bool
    """A Snakemake holds the folder (runs in it now)."""
    slurm_logs: dict[tuple[str, str], Path]
    """(rule, wildcards) -> the newest kept SLURM log of that job."""
    snakemake: SnakemakeLog
    """The newest Snakemake run here: its failed jobs and what it was given."""
    used: bool
    """Snakemake has run here (`.snakemake/` exists): its marks say what is in progress."""

    @classmethod
    def read(cls, root: str | os.PathLike) -> Workdir:
        root = Path(root)
        meta = root / ".snakemake"
        locks = meta / "locks"
        return cls(
            root=root,
            now=time.time(),
            marks=in_progress_outputs(meta / "incomplete"),
            locked=locks.is_dir() and any(locks.iterdir()),
            slurm_logs=slurm_logs(meta / "slurm_logs"),
            snakemake=read_snakemake_log(meta / "log"),
            used=meta.is_dir(),
        )

    def mtime(self, path: str | os.PathLike) -> float | None:
        """When a file under the folder was last written; None if it does not exist."""
        try:
            return (self.root / path).stat().st_mtime
        except OSError:
            return None


def in_progress_outputs(folder: Path) -> dict[str, float]:
    """Snakemake's in-progress marks: {output path: when its job started}."""
    marks = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            mark = Path(dirpath, name)
            encoded = "".join(p.removeprefix("@") for p in mark.relative_to(folder).parts)
            try:
                path = urlsafe_b64decode(encoded).decode()
                marks[os.path.normpath(path)] = mark.stat().st_mtime
            except (ValueError, OSError):  # not a mark (`migration_underway`), or just deleted
                continue
    return marks


def slurm_logs(folder: Path) -> dict[tuple[str, str], Path]:
    """The newest SLURM log of each (rule, wildcards) the SLURM executor kept."""
    found: dict[tuple[str, str], tuple[float, Path]] = {}
    for log in folder.glob("rule_*/**/*.log") if folder.is_dir() else ():
        parts = log.relative_to(folder).parts
        key = (parts[0].removeprefix("rule_"), "/".join(parts[1:-1]))
        written = log.stat().st_mtime
        if key not in found or written > found[key][0]:
            found[key] = (written, log)
    return {key: log for key, (_, log) in found.items()}


def read_snakemake_log(folder: Path) -> SnakemakeLog:
    """What the newest Snakemake log in `folder` says (an empty record if there is none)."""
    logs = sorted(folder.glob("*.snakemake.log")) if folder.is_dir() else []
    found = SnakemakeLog()
    if not logs:
        return found
    rule, fields = None, {}
    for line in [*logs[-1].read_text(errors="replace").splitlines(), ""]:
        if rule is not None and line.startswith("    ") and ": " in line:
            key, _, value = line.strip().partition(": ")
            fields.setdefault(key, value)
            continue
        if rule is not None:
            outputs = tuple(os.path.normpath(o) for o in fields.get("output", "").split(", ") if o)
            log = fields.get("log", "").split(" (check log")[0].split(", ")[0] or None
            found.errors.append(SnakemakeError(rule, outputs, log))
            rule, fields = None, {}
        if match := SNAKEMAKE_ERROR.match(line):
            rule = match["rule"]
        elif match := PROVIDED.match(line):
            found.provided(match["what"], match["value"])
    return found


def tail_lines(path: str | os.PathLike) -> list[str]:
    """The non-empty lines at the end of a log (at most TAIL_BYTES of it)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def failure_reason(lines: list[str]) -> str | None:
    """The last line that reads as an error, else the last line."""
    errors = (line for line in reversed(lines) if ERROR.search(line))
    return next(errors, lines[-1] if lines else None)


def last_progress(lines: list[str], run: str) -> tuple[float, float] | None:
    """A run's last evaluation line in its log: (fraction of steps done, tokens/s)."""
    for line in reversed(lines):
        match = PROGRESS.match(line)
        if match and match["run"] == run:
            fraction = int(match["step"]) / max(1, int(match["steps"]))
            return fraction, float(match["speed"].replace(",", ""))
    return None


def read_record(path: str | os.PathLike) -> tuple[dict, float] | None:
    """A published run.json and when it was written; None while the run has not finished."""
    path = Path(path)
    try:
        return json.loads(path.read_text()), path.stat().st_mtime
    except (OSError, ValueError):  # absent, or caught mid-rename on a network filesystem
        return None
