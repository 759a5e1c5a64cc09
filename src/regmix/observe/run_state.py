"""The states a training run of a sweep can be in, and what `regmix status` knows of one run.

Shared by `status` (which finds them) and `eta` (which turns them into a time left).
"""

from __future__ import annotations

from dataclasses import dataclass

DONE, RUNNING, QUEUED, FAILED, PENDING = "done", "running", "queued", "failed", "pending"
STATES = (DONE, RUNNING, QUEUED, FAILED, PENDING)
STAGES = ("proxy", "optimum", "final")


@dataclass
class Run:
    """One training run of the sweep and what is known about it."""

    name: str
    stage: str
    """'proxy', 'optimum' (the recommended mixture at proxy scale) or 'final'."""
    round: int | None
    job: str
    """The job that trains it: its proxy batch, or the run itself."""
    state: str
    outcome: str | None = None
    """run.json's status once done: 'ok' or 'diverged'."""
    tokens_per_s: float | None = None
    """Done: from run.json; running: from its last progress line, if it printed one."""
    wall_seconds: float | None = None
    finished_at: float | None = None
    progress: float | None = None
    """Fraction of its steps done, for a running run that printed a progress line."""
    log: str | None = None
    reason: str | None = None
    """Why a failed run stopped: its log's last error line (or last line)."""
