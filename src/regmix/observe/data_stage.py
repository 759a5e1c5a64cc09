"""The data stage seen from outside: what `regmix plan` expects it to cost, and where
`regmix status` finds it (groups of files done, running, failed, pending; MB/s).

Reads file names and sizes, the groups' small `group.json` records and the ends of their logs;
never a corpus document.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regmix.data.groups import MEASURED_MB_PER_S, Group, corpus_groups, runtime_minutes
from regmix.data.shards import FILE_RECORD, GROUP_RECORD, partial_folder
from regmix.workflow.workdir import Workdir, tail_lines

DATA = Path("results/data")
LOGS = Path("logs/data/prepare")
FRESH_SECONDS = 120.0
"""A data job logs progress every 30 s: a log this fresh means the job runs."""
SYNTHETIC = "synthetic"
_RATE = re.compile(r"\(([\d.]+) MB/s\)")


def planned_groups(config: dict, directory: Path) -> dict[str, tuple[Group | None, float]]:
    """The data jobs of the config (as rules/common.smk plans them): name → (group, text
    bytes estimate); the synthetic corpus is one job."""
    corpus = config["corpus"]
    if not corpus["path"]:
        return {SYNTHETIC: (None, 0.0)}
    return corpus_groups(corpus, directory / corpus["path"])


@dataclass
class DataStatus:
    """`regmix status`'s data line."""

    files: dict[str, int] = field(default_factory=dict)
    """Input files per state (done, running, failed, pending)."""
    groups: dict[str, int] = field(default_factory=dict)
    megabytes_per_s: float | None = None
    """Text MB/s of the finished jobs (per job), or of the running ones now."""
    failed: list[str] = field(default_factory=list)
    """`group: last log line` for each failed job."""


def data_status(
    config: dict, directory: Path, now: float | None = None, workdir: Workdir | None = None
) -> DataStatus:
    """Each data job's state: done (its group record exists), running (its log was written
    lately, or Snakemake marks it started while it runs here), failed (its log ends in an
    error, or it started and stopped without one: killed, cut off with Snakemake), pending."""
    now = time.time() if now is None else now
    workdir = workdir or Workdir.read(directory)
    status = DataStatus(files=dict.fromkeys(("done", "running", "failed", "pending"), 0))
    status.groups = dict(status.files)
    done_mb = done_s = 0.0
    running_rates = []
    for name, (group, _) in planned_groups(config, directory).items():
        files = len(group.files) if group else 1
        state, line = group_state(name, files, directory, workdir, now)
        if state == "done":
            made = json.loads((directory / DATA / "shards" / name / GROUP_RECORD).read_text())
            done_mb += (made["text_bytes"] - made.get("resumed_text_bytes", 0)) / 1e6
            done_s += made["seconds"]
        elif state == "running" and line and (rate := _RATE.search(line)):
            running_rates.append(float(rate.group(1)))
        elif state == "failed":
            status.failed.append(f"{name}: {line}")
        status.files[state] += files
        status.groups[state] += 1
    if running_rates:
        status.megabytes_per_s = sum(running_rates)
    elif done_s:
        status.megabytes_per_s = done_mb / done_s
    return status


def group_state(
    name: str, files: int, directory: Path, workdir: Workdir, now: float
) -> tuple[str, str | None]:
    """One data job's state and the line that says why (its log's last)."""
    shards = directory / DATA / "shards"
    if (shards / name / GROUP_RECORD).is_file():
        return "done", None
    log = directory / LOGS / f"{name}.log"
    lines = tail_lines(log)
    last = lines[-1] if lines else None
    marked = str(DATA / "shards" / name) in workdir.marks
    nothing_runs = workdir.used and not workdir.locked  # no Snakemake here: no job of it runs
    fresh = log.is_file() and now - log.stat().st_mtime < FRESH_SECONDS
    if not nothing_runs and (fresh or (marked and workdir.locked)):
        return "running", last
    if last and last.startswith("regmix: error"):
        return "failed", last
    partial = partial_folder(shards / name)
    if log.is_file() or marked or partial.is_dir():
        kept = len(list(partial.glob(f"*/{FILE_RECORD}")))
        said = f"its log ends: {last}" if last else "its log is empty"
        return "failed", (
            f"stopped without an error (killed, or cut off with Snakemake); {said}; "
            f"{kept} of {files} file(s) finished, kept for the re-run"
        )
    return "pending", None


def status_line(status: DataStatus) -> str:
    parts = [f"{n} {state}" for state, n in status.files.items() if n]
    rate = f", {status.megabytes_per_s:.1f} MB/s" if status.megabytes_per_s else ""
    jobs = sum(status.groups.values())
    return f"data:     files {', '.join(parts)} ({jobs} jobs){rate}"


@dataclass
class DataPlan:
    """`regmix plan`'s data section."""

    jobs: int
    bytes_to_read: int
    text_bytes: float
    text_to_tokenize: float
    tokens_to_write: float | None
    core_hours: float
    core_hours_all: float
    longest_job_minutes: int
    note: str


def data_plan(
    config: dict, directory: Path, tokens_per_byte: float, generated_bytes: int = 0
) -> DataPlan:
    """Bytes to read, text to tokenize (all of it, or the share corpus.max_tokens keeps), tokens
    to write and core-hours at the measured single-thread tokenizer rate. `generated_bytes`:
    the synthetic corpus's text, which a rule writes."""
    groups = planned_groups(config, directory)
    read = sum(g.bytes for g, _ in groups.values() if g) or generated_bytes
    text = sum(t for _, t in groups.values()) or generated_bytes
    if generated_bytes:
        groups = {SYNTHETIC: (None, float(generated_bytes))}
    threads = config["corpus"]["resources"]["threads"]
    keep, note = _kept_share(config, directory, text * tokens_per_byte)
    tokenized = text * keep
    rate = MEASURED_MB_PER_S * 1e6 * 3600
    longest = max((runtime_minutes(t * keep, threads) for _, t in groups.values()), default=0)
    return DataPlan(
        jobs=len(groups),
        bytes_to_read=read,
        text_bytes=text,
        text_to_tokenize=tokenized,
        tokens_to_write=tokenized * tokens_per_byte if text else None,
        core_hours=tokenized / rate,
        core_hours_all=text / rate,
        longest_job_minutes=longest,
        note=note,
    )


def _kept_share(config: dict, directory: Path, tokens: float) -> tuple[float, str]:
    setting = config["corpus"]["max_tokens"]
    if setting == "all":
        return 1.0, "corpus.max_tokens: all (every document)"
    survey = directory / DATA / "survey.json"
    if survey.is_file():
        domains: dict[str, Any] = json.loads(survey.read_text())["domains"]
        total = sum(d["estimated_tokens"] for d in domains.values())
        kept = sum(d["estimated_tokens"] * d["keep"] for d in domains.values())
        return (kept / total if total else 1.0), f"max_tokens {setting}: per domain, from {survey}"
    return 1.0, f"max_tokens {setting}: the share kept is known once the survey job has run"


def plan_lines(plan: DataPlan) -> list[str]:
    saved = 1 - plan.core_hours / plan.core_hours_all if plan.core_hours_all else 0.0
    tokens = f"~{plan.tokens_to_write:,.0f} tokens" if plan.tokens_to_write else "no tokens"
    return [
        f"data stage ({plan.jobs} jobs, one per group of files; {MEASURED_MB_PER_S} MB/s of text "
        "per core, the tokenizer's measured rate)",
        f"  read {plan.bytes_to_read / 1e6:,.1f} MB on disk, ~{plan.text_bytes / 1e6:,.1f} MB of "
        f"text; tokenize ~{plan.text_to_tokenize / 1e6:,.1f} MB -> {tokens}",
        f"  {plan.core_hours:.3f} core-hours (all of the corpus: {plan.core_hours_all:.3f}; "
        f"saved by max_tokens: {saved:.0%}); longest job's limit {plan.longest_job_minutes} min",
        f"  {plan.note}",
    ]
