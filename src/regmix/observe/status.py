"""Where a sweep stands: runs done, running, failed and pending per stage, from its folders.

`regmix status` gathers a `Snapshot` of the sweep the config plans (`regmix.workflow.sweep`)
from the workflow's `results/`, `logs/` and `.snakemake/` (`regmix.workflow.workdir`), then
renders it as plain text or JSON. It reads file names, the runs' small run.json files and the
ends of logs, and imports neither torch nor Lightning, so `watch -n 5 regmix status` costs little
while a sweep runs locally or on SLURM.

A training job (a proxy batch, the optimum's proxy check, one final model) and its runs are:

- **done**: the run's `run.json` is published; its `status` says ok or diverged. Proxies
  publish theirs one by one as they finish, so a batch can be partly done.
- **queued**: Snakemake marks the job in progress but the job has not (re)written its log
  since: under SLURM, submitted and waiting in the queue or behind other jobs of its bundle.
- **running**: marked in progress while a Snakemake holds the folder, and the log was written
  after the mark. In a folder where Snakemake has never run (runs trained by hand with
  `regmix train-proxy`), the log or a checkpoint (`last.ckpt`, `.partial`) written in the last
  `FRESH_SECONDS` instead. In a running batch the first unfinished run is the one training;
  the later ones wait behind it (pending).
- **failed**: none of the above, its outputs are missing and it left a log (ours, or a SLURM
  log the executor kept), or Snakemake's log reports its rule failed for it: it started and
  stopped without finishing. A job still marked in progress when no Snakemake holds the folder
  was interrupted with it and counts as failed too (`--rerun-incomplete` runs it again). The
  reason shown is the log's last error line (`regmix: error: ...`, an exception, a kill).
- **pending**: none of these; not started.

The small stages (mixtures, runs table, fit, simulate, final mixtures, summary) are done when
their outputs exist, running when marked, failed when Snakemake's log says so.
"""

from __future__ import annotations

import os
import statistics
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from regmix.observe.data_stage import DataStatus, data_status
from regmix.observe.data_stage import status_line as data_status_line
from regmix.observe.eta import estimate
from regmix.observe.run_state import DONE, FAILED, PENDING, QUEUED, RUNNING, STAGES, STATES, Run
from regmix.workflow import sweep as layout
from regmix.workflow.sweep import Sweep
from regmix.workflow.workdir import Workdir, failure_reason, last_progress, read_record, tail_lines

FRESH_SECONDS = 120.0
"""A log or checkpoint written this recently means its job runs (when Snakemake marks none)."""

TRAINING_RULES = ("train_proxy", "train_optimum_proxy", "train_final")
SIMULATED = f"{layout.RESULTS}/optimal/mixture.yaml"
SUMMARY = f"{layout.RESULTS}/final/summary.md"


@dataclass
class Step:
    """A small stage: how many of its outputs exist, and its state."""

    name: str
    state: str
    done: int
    total: int


@dataclass
class Failure:
    """A failed job of a small stage, from Snakemake's log."""

    rule: str
    log: str | None
    reason: str | None


@dataclass
class Snapshot:
    """Everything `regmix status` prints, gathered once."""

    directory: str
    taken_at: float
    snakemake_running: bool
    started: bool
    """Anything exists under results/ or logs/."""
    runs: list[Run]
    steps: list[Step]
    failures: list[Failure]
    eta: dict[str, Any] = field(default_factory=dict)
    """`regmix.observe.eta.estimate`: seconds (None: unknown) and what they rest on."""
    data: DataStatus | None = None
    """The data stage's jobs (regmix.observe.data_stage)."""

    def stage_rows(self) -> dict[str, dict[str, int]]:
        """Runs per state for each proxy round, the optimum's proxy check and the finals."""
        rows: dict[str, dict[str, int]] = {}
        for run in self.runs:
            label = {"proxy": f"proxy round {run.round}", "optimum": "optimum proxy check"}
            counts = rows.setdefault(label.get(run.stage, "final models"), dict.fromkeys(STATES, 0))
            counts[run.state] += 1
        return rows

    def throughput(self, stage: str) -> dict[str, Any]:
        """Tokens/s per run of a stage: the median over finished runs, and the sum over the
        runs training now (a run that printed no progress line yet counts as the median)."""
        finished = [r.tokens_per_s for r in self.runs if r.stage == stage and r.state == DONE]
        finished = [s for s in finished if s]
        median = statistics.median(finished) if finished else None
        running = [r for r in self.runs if r.stage == stage and r.state == RUNNING]
        speeds = [r.tokens_per_s or median for r in running]
        now = sum(speeds) if running and all(speeds) else None  # type: ignore[arg-type]
        return {"median": median, "finished": len(finished), "now": now, "running": len(running)}

    def as_json(self) -> dict:
        stages = {s: self.throughput(s) for s in STAGES}
        return {**asdict(self), "stages": self.stage_rows(), "tokens_per_s": stages}


# --- training jobs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One training job of the workflow: its runs, what it writes, where it logs."""

    stage: str
    round: int | None
    name: str
    runs: tuple[str, ...]
    run_dirs: tuple[str, ...]
    outputs: tuple[str, ...]
    """Its declared outputs (any of them marked in progress means the job started)."""
    log: str
    rule: str
    wildcards: str
    """As the SLURM executor names the job's log folder."""


def planned_jobs(plan: Sweep) -> list[Job]:
    """The training jobs of a sweep: proxies round by round, the optimum check, the finals."""
    jobs = []
    for batch in plan.batches():
        dirs = tuple(layout.proxy_dir(r) for r in batch.runs)
        # A run's own run.json was a declared output before batches had a table; both count.
        outputs = (layout.batch_table(batch.round, batch.name), *(f"{d}/run.json" for d in dirs))
        log = layout.batch_log(batch.round, batch.name)
        jobs.append(Job("proxy", batch.round, batch.name, batch.runs, dirs, outputs, log,
                        "train_proxy", batch.name))  # fmt: skip
    if plan.check_optimum:
        folder = layout.optimum_proxy_dir()
        jobs.append(Job("optimum", None, layout.OPTIMUM, (layout.OPTIMUM,), (folder,),
                        (f"{folder}/run.json",), f"{layout.LOGS}/optimal/proxy.log",
                        "train_optimum_proxy", ""))  # fmt: skip
    for name in plan.final_names():
        folder = layout.final_dir(name)
        jobs.append(Job("final", None, name, (name,), (folder,), (f"{folder}/run.json",),
                        layout.final_log(name), "train_final", name))  # fmt: skip
    return jobs


def job_state(job: Job, workdir: Workdir, unfinished: str) -> tuple[str, str | None]:
    """The state of a job that has unfinished runs (`unfinished` is the first of them), and
    for a failed one why."""
    started = max((workdir.marks[o] for o in job.outputs if o in workdir.marks), default=None)
    log_written = workdir.mtime(job.log)
    if started is not None and workdir.locked:
        opened = log_written is not None and log_written >= started - 1  # 1 s: coarse clocks
        return (RUNNING if opened else QUEUED), None
    if not workdir.used and recently_written(job, workdir, unfinished, log_written):
        return RUNNING, None  # trained by hand: no Snakemake marks to go by
    logs = [workdir.root / job.log, workdir.slurm_logs.get((job.rule, job.wildcards))]
    logs = [p for p in logs if p is not None and p.is_file()]
    reported = any(
        e.rule == job.rule and set(e.outputs) & set(job.outputs) for e in workdir.snakemake.errors
    )
    if started is None and not logs and not reported:
        return PENDING, None
    reason = failure_reason(tail_lines(logs[0])) if logs else None
    if started is not None:
        reason = f"interrupted (Snakemake stopped while it ran): {reason or 'no log'}"
    return FAILED, reason or "Snakemake reports it failed (no log)"


def recently_written(job: Job, workdir: Workdir, run: str, log_written: float | None) -> bool:
    """The job's log or the run's checkpoint was written in the last FRESH_SECONDS."""
    checkpoints = workdir.root / layout.checkpoint_dir(job.stage.replace("optimum", "proxy"), run)
    written = [log_written, *(workdir.mtime(p) for p in checkpoints.glob("*/last.ckpt*"))]
    return any(t is not None and workdir.now - t < FRESH_SECONDS for t in written)


def job_runs(job: Job, workdir: Workdir) -> list[Run]:
    """Each run of one job: published ones done, the first unfinished one in the job's state,
    the later ones waiting behind it."""
    runs, state = [], None
    for name, folder in zip(job.runs, job.run_dirs, strict=True):
        run = Run(name, job.stage, job.round, job.name, PENDING, log=job.log)
        published = read_record(workdir.root / folder / "run.json")
        if published is not None:
            record, run.finished_at = published
            run.state, run.outcome = DONE, record.get("status")
            run.tokens_per_s = record.get("tokens_per_s")
            run.wall_seconds = record.get("wall_seconds")
        elif state is None:
            state, run.reason = job_state(job, workdir, name)
            run.state = state
            progress = last_progress(tail_lines(workdir.root / job.log), name)
            if state == RUNNING and progress is not None:
                run.progress, run.tokens_per_s = progress
        else:
            run.state = QUEUED if state == QUEUED else PENDING
        runs.append(run)
    return runs


# --- the small stages -------------------------------------------------------------------------


def planned_steps(plan: Sweep, config: dict) -> list[tuple[str, list[str]]]:
    """The small stages, each with the outputs that make it done."""
    regression = config["regression"]
    models = dict.fromkeys([regression["model"], *regression["compare"]])
    return [
        *((f"mixtures round {r}", [layout.mixtures_path(r)]) for r in range(1, plan.n_rounds + 1)),
        ("runs table", [layout.runs_table()]),
        ("fit", [f"{layout.RESULTS}/regression/{m}/model.joblib" for m in models]),
        ("simulate", [SIMULATED]),
        ("final mixtures", [layout.final_mixture_path(n) for n in plan.final_names()]),
        ("summary", [SUMMARY]),
    ]


def step_state(name: str, outputs: list[str], workdir: Workdir) -> Step:
    done = sum(workdir.mtime(o) is not None for o in outputs)
    if done == len(outputs):
        state = DONE
    elif workdir.locked and any(o in workdir.marks for o in outputs):
        state = RUNNING
    elif any(set(e.outputs) & set(outputs) for e in workdir.snakemake.errors):
        state = FAILED
    else:
        state = PENDING
    return Step(name, state, done, len(outputs))


def small_stage_failures(workdir: Workdir) -> list[Failure]:
    """Jobs other than training that failed in the newest Snakemake run and are still missing
    (whatever their rule: their log is named in Snakemake's report)."""
    failures = {}
    for error in workdir.snakemake.errors:
        if error.rule in TRAINING_RULES or any(o in workdir.marks for o in error.outputs):
            continue
        if all(workdir.mtime(o) is not None for o in error.outputs):
            continue  # re-run since, successfully
        lines = tail_lines(workdir.root / error.log) if error.log else []
        failures[(error.rule, error.log)] = Failure(error.rule, error.log, failure_reason(lines))
    return list(failures.values())


# --- the snapshot -----------------------------------------------------------------------------


def has_planted_answer(config: dict, directory: Path) -> bool:
    """As the workflow decides: the synthetic corpus, or a corpus folder with planted.yaml."""
    corpus = config["corpus"]["path"]
    return not corpus or (directory / corpus / "planted.yaml").is_file()


def gather(config: dict, directory: str | os.PathLike = ".") -> Snapshot:
    """The state of the sweep `config` plans (a validated workflow config, `load_config`) in
    the workflow's working directory `directory`."""

    root = Path(directory)
    plan = Sweep.from_config(config, has_planted_answer(config, root))
    workdir = Workdir.read(root)
    runs = [run for job in planned_jobs(plan) for run in job_runs(job, workdir)]
    snapshot = Snapshot(
        directory=str(root.resolve()),
        taken_at=workdir.now,
        snakemake_running=workdir.locked,
        started=any((root / d).is_dir() for d in (layout.RESULTS, layout.LOGS)),
        runs=runs,
        steps=[step_state(name, out, workdir) for name, out in planned_steps(plan, config)],
        failures=small_stage_failures(workdir),
    )
    snapshot.eta = estimate(runs, config, root, workdir.snakemake)
    snapshot.data = data_status(config, root, workdir.now, workdir)
    return snapshot


# --- rendering --------------------------------------------------------------------------------

SHOWN = 8
"""Running and failed runs listed by name before the rest are counted."""
WIDTH = 100


def render(snapshot: Snapshot) -> str:
    """The snapshot as plain text of a fixed layout, for a terminal under `watch`."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snapshot.taken_at))
    held = "Snakemake is running here" if snapshot.snakemake_running else "no Snakemake running"
    lines = [f"regmix status: {snapshot.directory}  {when}  ({held})"]
    if not snapshot.started:
        planned = ", ".join(
            f"{label}: {sum(c.values())}" for label, c in snapshot.stage_rows().items()
        )
        return "\n".join([
            *lines,
            "Nothing has run here yet (no results/ or logs/): start the sweep with `snakemake`,",
            "or pass --directory to the folder it runs in.",
            f"Planned runs: {planned}.",
        ])  # fmt: skip
    lines += ["", f"{'':22}" + "".join(f"{s:>9}" for s in (*STATES, "total"))]
    for label, counts in snapshot.stage_rows().items():
        values = [counts[s] for s in STATES] + [sum(counts.values())]
        lines.append(f"{label:22}" + "".join(f"{v:>9}" for v in values))
    lines += ["", *wrapped(f"stages:   {steps_text(snapshot.steps)}")]
    if snapshot.data is not None:
        lines += wrapped(data_status_line(snapshot.data))
        lines += [f"  failed {clip(line)}" for line in snapshot.data.failed[:SHOWN]]
    diverged = [r.name for r in snapshot.runs if r.outcome == "diverged"]
    if diverged:
        lines += wrapped(f"diverged: {listed(diverged)}")
    running = [r for r in snapshot.runs if r.state == RUNNING]
    if running:
        lines += wrapped("running:  " + listed([describe_running(r) for r in running]))
    lines += ["", *throughput_lines(snapshot)]
    failed = [r for r in snapshot.runs if r.state == FAILED]
    if failed or snapshot.failures:
        lines += ["", "failed:"]
        lines += [f"  {r.name} ({r.log}): {clip(r.reason)}" for r in failed[:SHOWN]]
        lines += [f"  ... and {len(failed) - SHOWN} more"] if len(failed) > SHOWN else []
        lines += [f"  rule {f.rule} ({f.log}): {clip(f.reason)}" for f in snapshot.failures]
    lines += ["", *eta_lines(snapshot.eta, [s.name for s in snapshot.steps if s.state != DONE])]
    return "\n".join(lines)


def wrapped(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, subsequent_indent=" " * 10)


def listed(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def describe_running(run: Run) -> str:
    return f"{run.name} {run.progress:.0%}" if run.progress is not None else run.name


def throughput_lines(snapshot: Snapshot) -> list[str]:
    lines = []
    for stage, label in (("proxy", "proxies"), ("optimum", "optimum"), ("final", "finals")):
        t = snapshot.throughput(stage)
        if not t["finished"] and not t["running"]:
            continue
        parts = [f"{t['median']:,.0f} median of {t['finished']} finished"] if t["median"] else []
        if t["running"] and t["now"]:
            parts.append(f"~{t['now']:,.0f} now over {t['running']} running")
        elif t["running"]:
            parts.append(f"{t['running']} running, no speed reported yet")
        lines.append(f"tokens/s  {label:8} " + "; ".join(parts or ["no speed recorded"]))
    return lines or ["tokens/s  no run has finished or reported progress yet"]


def steps_text(steps: list[Step]) -> str:
    """`mixtures round 1 done, round 2 running, fit 1/4, ...`: a count where a stage has
    several outputs."""
    parts = []
    for i, step in enumerate(steps):
        name = step.name
        if i and name.startswith("mixtures round") and steps[i - 1].name.startswith("mixtures"):
            name = name.removeprefix("mixtures ")
        shown = step.state if step.total == 1 or step.state in (RUNNING, FAILED) else None
        parts.append(f"{name} {shown or f'{step.done}/{step.total}'}")
    return ", ".join(parts)


def clip(text: str | None, width: int = 2 * WIDTH) -> str | None:
    return text if text is None or len(text) <= width else text[: width - 3] + "..."


def eta_lines(eta: dict, steps_left: list[str]) -> list[str]:
    seconds, left = eta.get("seconds"), eta.get("runs_left")
    if left == 0 and not steps_left:
        return ["ETA: done, every run has finished and every stage is done"]
    if left == 0:
        return wrapped(f"ETA: every run has finished; still to do: {', '.join(steps_left)}")
    if seconds is None:
        return [f"ETA: unknown, {plural(left, 'run')} left ({eta['basis']})"]
    return [
        f"ETA: ~{duration(seconds)} for {plural(left, 'run')} left (an estimate: training time)",
        *textwrap.wrap(
            f"from {eta['basis']}", WIDTH, initial_indent=" " * 5, subsequent_indent=" " * 5
        ),
    ]


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
