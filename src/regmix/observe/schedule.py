"""The workflow's jobs as a dependency graph with durations, and a list-scheduling simulation
of running them on a machine's cores, as `snakemake --cores N` would.

`regmix plan` builds the jobs from the sweep (the same `regmix.workflow.sweep.Sweep` the rules
read), so the simulated DAG has the rules' shape: proxy rounds one after another, batches of a round
side by side, the baseline and held-out final models free to start as soon as the data is
prepared, and the optimum's final model and proxy check after the last fit and simulation.

Like Snakemake, the simulation starts whatever ready job fits the free cores and reserves
none for a job that waits: a 2-thread fit on 2 cores waits while 1-thread jobs keep one core
busy. Which ready job goes first is Snakemake's choice among rules of equal priority; the
simulation offers two orders, as the jobs become ready and longest chain first.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from regmix.observe.costs import RunCost
from regmix.observe.step_timing import StepTiming
from regmix.workflow.sweep import OPTIMUM, Sweep

STAGES: dict[str, tuple[str, ...]] = {
    "data": ("synth_corpus", "prepare"),
    "mixtures": ("sample_mixtures", "propose_mixtures"),
    "proxies": ("train_proxy", "collect_proxies"),
    "regression": ("fit", "simulate"),
    "optimum check": ("train_optimum_proxy",),
    "final models": (
        "final_mixture",
        "final_mixtures",
        "train_final",
        "collect_final",
        "predict_final",
    ),
    "evaluation": ("continuation_task", "evaluate", "collect_downstream"),
    "report": ("summarize", "report_figures", "report_downstream"),
}
"""The rules of each stage, as a reader of the workflow groups them (and `regmix plan` and
benchmarks/plan_accuracy.py report them). `final_mixtures` is the older single-table rule."""


def stage_of(rule: str) -> str:
    """The stage a rule belongs to (a batch rule of older layouts, `train_proxy_<batch>`, too)."""
    for stage, rules in STAGES.items():
        if rule in rules:
            return stage
    if rule.startswith("train_proxy_"):
        return "proxies"
    return "other"


SMALL_JOB_SECONDS = {
    "synth_corpus": 2.0,
    "prepare": 1.0,
    "sample_mixtures": 1.0,
    "propose_mixtures": 4.0,
    "collect_proxies": 1.0,
    "fit": 2.0,
    "simulate": 3.5,
    "final_mixture": 1.0,
    "final_mixtures": 1.0,
    "collect_final": 1.0,
    "predict_final": 1.5,
    "summarize": 1.5,
    "continuation_task": 1.0,
    "collect_downstream": 1.0,
    "report_downstream": 2.5,
    "report_figures": 5.0,
}
"""Seconds of the jobs that do not train, on the 2-core demo machine (the demo's Snakemake log
and benchmark files); they are seconds wherever the config is demo-sized."""
JOB_OVERHEAD_SECONDS = 0.5
"""Snakemake's own time between one job's end and the next one's start."""
PROCESS_START_SECONDS = 0.5
"""A training process's interpreter, CLI, data set-up and publishing, besides its imports and
first step (the demo's benchmark files: a job's seconds minus its runs' are ~1 s more than
the imports)."""
RUN_OVERHEAD_SECONDS = 0.1
"""Per run in a process besides its steps, evaluations and checkpoints: the Trainer, the model,
the validation windows and its result files (the demo's run.json records: wall minus training
seconds is 0.6 s a proxy, of which evaluation is 0.5 s)."""
SIMULATED_CANDIDATES = 1_000_000 * (1 + 5)
"""The candidates × (1 + bootstrap refits) SMALL_JOB_SECONDS['simulate'] was measured at."""


@dataclass(frozen=True)
class RunTime:
    """Seconds one run takes inside its process, and the process's start-up."""

    run_seconds: float
    process_seconds: float

    @classmethod
    def of(cls, cost: RunCost, timing: StepTiming, exports: bool) -> RunTime:
        train = cost.train
        run = (
            RUN_OVERHEAD_SECONDS
            + train.steps * timing.step_seconds
            + cost.evaluations * cost.valid_windows * timing.eval_window_seconds
            + cost.checkpoint_saves * timing.checkpoint_seconds
            + (timing.checkpoint_seconds if exports else 0.0)  # export ~ a third, then a copy
        )
        start = PROCESS_START_SECONDS + timing.import_seconds + timing.first_step_extra
        return cls(run, start)

    def job_seconds(self, runs: int) -> float:
        return self.process_seconds + runs * self.run_seconds


@dataclass(frozen=True)
class Job:
    """One job of the workflow: what it waits for, how many cores it holds and how long."""

    name: str
    """The rule with its wildcard, e.g. `train_proxy[run0001-run0008]`."""
    rule: str
    threads: int
    seconds: float
    after: tuple[str, ...] = ()
    checkpoint_bytes: int = 0
    """Disk its run in flight holds as a checkpoint (one run at a time per job)."""

    @property
    def stage(self) -> str:
        return stage_of(self.rule)


@dataclass(frozen=True)
class Slot:
    """When a job runs in the simulated schedule."""

    job: Job
    start: float
    end: float


LONGEST_CHAIN = "longest-chain"
AS_READY = "as-ready"


def simulate_schedule(jobs: Sequence[Job], cores: int, order: str = LONGEST_CHAIN) -> list[Slot]:
    """Run the jobs on `cores` cores: whenever cores are free, start ready jobs, skipping one
    that does not fit for one that does (Snakemake reserves no cores for a waiting job). A job
    asking for more threads than there are cores gets them all, as Snakemake scales it down.

    `order` says which ready jobs go first: LONGEST_CHAIN, the ones with the longest chain of
    work still behind them (what a good scheduler does; Snakemake does it where rules set
    `priority:`), or AS_READY, the ones ready longest, then in listing order (what Snakemake's
    choice among equal priorities tends to look like). Returns the slots in start order.
    """
    if order not in (LONGEST_CHAIN, AS_READY):
        raise ValueError(f"order {order!r}: expected {LONGEST_CHAIN} or {AS_READY}")
    by_name = {job.name: job for job in jobs}
    for job in jobs:
        missing = [name for name in job.after if name not in by_name]
        if missing:
            raise ValueError(f"job {job.name} waits for unknown job {missing[0]}")
    remaining = {job.name: len(set(job.after)) for job in jobs}
    followers: dict[str, list[str]] = {job.name: [] for job in jobs}
    for job in jobs:
        for name in set(job.after):
            followers[name].append(job.name)
    listed = {job.name: i for i, job in enumerate(jobs)}
    chain = _critical_paths(jobs, followers)
    ready_since = {job.name: 0.0 for job in jobs}

    def rank(name: str) -> tuple[float, int]:
        first = -chain[name] if order == LONGEST_CHAIN else ready_since[name]
        return first, listed[name]

    ready = [job.name for job in jobs if remaining[job.name] == 0]
    running: list[tuple[float, int, str]] = []  # (end, tie-break, name)
    slots: list[Slot] = []
    free, now = cores, 0.0
    while ready or running:
        ready.sort(key=rank)
        for name in list(ready):
            need = min(by_name[name].threads, cores)
            if need <= free:
                free -= need
                ready.remove(name)
                end = now + by_name[name].seconds
                heapq.heappush(running, (end, listed[name], name))
                slots.append(Slot(by_name[name], now, end))
        if not running:
            raise ValueError(f"jobs wait for each other in a cycle: {', '.join(sorted(ready))}")
        now, _, done = heapq.heappop(running)
        finished = [done]
        while running and running[0][0] <= now:
            finished.append(heapq.heappop(running)[2])
        for name in finished:
            free += min(by_name[name].threads, cores)
            for follower in followers[name]:
                remaining[follower] -= 1
                if remaining[follower] == 0:
                    ready.append(follower)
                    ready_since[follower] = now
    return slots


def _critical_paths(jobs: Sequence[Job], followers: Mapping[str, list[str]]) -> dict[str, float]:
    """Each job's own seconds plus the longest chain of seconds that waits for it."""
    by_name = {job.name: job for job in jobs}
    path: dict[str, float] = {}

    def longest(name: str) -> float:
        if name not in path:
            tail = max((longest(f) for f in followers[name]), default=0.0)
            path[name] = by_name[name].seconds + tail
        return path[name]

    for job in reversed(jobs):  # jobs are listed roughly in DAG order: recursion stays shallow
        longest(job.name)
    return path


def workflow_jobs(
    sweep: Sweep,
    synthetic: bool,
    regressors: Sequence[str],
    proxy: RunCost,
    final: RunCost,
    times: Mapping[str, RunTime] | None = None,
    small: Mapping[str, float] = SMALL_JOB_SECONDS,
    baselines_wait_for_optimum: bool = False,
    evaluation_seconds: float | None = None,
) -> list[Job]:
    """The jobs of the workflow's DAG in DAG order, with their seconds (training jobs: 0 when
    `times` is None). `regressors` starts with the one the optimum comes from.

    `baselines_wait_for_optimum` models the older layout in which all final mixtures were
    drawn by one job after the simulation (to check estimates against runs of it).
    `evaluation_seconds` (one evaluate job's seconds) adds the downstream evaluation.
    """
    jobs: list[Job] = []

    def add(rule: str, wildcard: str = "", after: Sequence[str] = (), **kw) -> str:
        name = f"{rule}[{wildcard}]" if wildcard else rule
        seconds = kw.pop("seconds", small.get(rule, 0.0))
        threads = kw.pop("threads", 1)
        jobs.append(Job(name, rule, threads, seconds + JOB_OVERHEAD_SECONDS, tuple(after), **kw))
        return name

    def training(section: str, runs: int) -> float:
        return times[section].job_seconds(runs) if times else 0.0

    proxy_threads = proxy.threads
    data = [add("synth_corpus")] if synthetic else []
    prepare = add("prepare", after=data, threads=2)
    batches_before: list[str] = []
    for round in range(1, sweep.n_rounds + 1):
        if round == 1:
            mixtures = add("sample_mixtures", after=[prepare])
        else:
            mixtures = add("propose_mixtures", f"round{round}", [prepare, *batches_before])
        for batch in sweep.batches(round):
            batches_before.append(
                add(
                    "train_proxy",
                    batch.name,
                    [prepare, mixtures],
                    seconds=training("proxy", len(batch.runs)),
                    threads=proxy_threads,
                    checkpoint_bytes=proxy.checkpoint_bytes,
                )
            )
    collect = add("collect_proxies", after=batches_before)
    fits = {model: add("fit", model, [collect]) for model in regressors}
    chosen = fits[regressors[0]]
    simulate = add("simulate", after=[chosen, prepare])

    final_threads = final.threads
    names = sweep.final_names()
    if baselines_wait_for_optimum:
        table = add("final_mixtures", after=[simulate, prepare])
        mixture = dict.fromkeys(names, table)
    else:
        mixture = {
            name: add("final_mixture", name, [prepare, *([simulate] if name == OPTIMUM else [])])
            for name in names
        }
    finals = [
        add(
            "train_final",
            name,
            [prepare, mixture[name]],
            seconds=training("final", 1),
            threads=final_threads,
            checkpoint_bytes=final.checkpoint_bytes,
        )
        for name in names
    ]
    check = []
    if sweep.check_optimum:
        check = [
            add(
                "train_optimum_proxy",
                after=[prepare, mixture[OPTIMUM]],
                seconds=training("proxy", 1),
                threads=proxy_threads,
                checkpoint_bytes=proxy.checkpoint_bytes,
            )
        ]
    collect_final = add("collect_final", after=[*set(mixture.values()), *finals])
    predict = add("predict_final", after=[chosen, collect_final])
    downstream = []
    if evaluation_seconds is not None:
        task = add("continuation_task", after=data)
        evaluations = [
            add("evaluate", name, [train, task], seconds=evaluation_seconds)
            for name, train in zip(names, finals, strict=True)
        ]
        downstream = [add("collect_downstream", after=evaluations)]
    summary = add(
        "summarize", after=[collect_final, predict, chosen, simulate, *check, *downstream]
    )
    add("report_figures", after=[collect, chosen, simulate, summary, *finals])
    if downstream:
        add("report_downstream", after=[*downstream, summary])
    return jobs


def makespan(slots: Iterable[Slot]) -> float:
    return max((slot.end for slot in slots), default=0.0)


def peak_checkpoint_bytes(slots: Sequence[Slot]) -> int:
    """The most checkpoint bytes held at once by the training jobs running side by side."""
    events = sorted(
        [(slot.start, 1, slot.job.checkpoint_bytes) for slot in slots]
        + [(slot.end, 0, -slot.job.checkpoint_bytes) for slot in slots]
    )  # at equal times, ends (0) come before starts (1)
    held = peak = 0
    for _, _, change in events:
        held += change
        peak = max(peak, held)
    return peak


@dataclass(frozen=True)
class StageSpan:
    """A stage's jobs in the schedule: from its first start to its last end."""

    stage: str
    jobs: int
    start: float
    end: float
    core_seconds: float
    """Seconds × threads of its jobs: the work, whatever the overlap."""

    @property
    def span(self) -> float:
        return self.end - self.start


def stage_spans(slots: Sequence[Slot]) -> list[StageSpan]:
    """The stages in STAGES order (stages without jobs left out)."""
    spans = []
    for stage in [*STAGES, "other"]:
        mine = [s for s in slots if s.job.stage == stage]
        if mine:
            spans.append(
                StageSpan(
                    stage,
                    len(mine),
                    min(s.start for s in mine),
                    max(s.end for s in mine),
                    sum(s.job.seconds * s.job.threads for s in mine),
                )
            )
    return spans
