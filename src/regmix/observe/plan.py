"""`regmix plan`: what the current configuration will cost, before anything runs.

Jobs per stage (from the same `Sweep` the rules read), training tokens and FLOPs of the proxy
and final runs, disk for token shards, checkpoints and exported models, and an estimate of the
wall time on this machine: a few real training steps of each configured shape are timed
(`regmix.observe.step_timing`) and the workflow's jobs are scheduled on the cores in a simulation
(`regmix.observe.schedule`). With a GPU throughput figure it also gives the GPU-hours of training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from regmix.errors import RegmixError
from regmix.observe.costs import (
    BYTE_VOCAB,
    BYTES_PER_SUBWORD_TOKEN,
    KEPT_RESULT_BYTES,
    CorpusTokens,
    RunCost,
    Vocabulary,
    corpus_tokens,
    run_cost,
    vocabulary,
)
from regmix.observe.data_stage import DataPlan, data_plan
from regmix.observe.evaluation_cost import (
    EvaluationCost,
    evaluation_cost,
)
from regmix.observe.schedule import (
    AS_READY,
    LONGEST_CHAIN,
    SIMULATED_CANDIDATES,
    SMALL_JOB_SECONDS,
    Job,
    RunTime,
    Slot,
    peak_checkpoint_bytes,
    simulate_schedule,
    workflow_jobs,
)
from regmix.observe.step_timing import Shape, StepTiming, measure_steps
from regmix.workflow.config import REPO, load_config
from regmix.workflow.preflight import check_workflow
from regmix.workflow.reuse_plan import planned_sweep, reuse_plan
from regmix.workflow.sweep import Sweep


@dataclass(frozen=True)
class Section:
    """The training runs of one section (proxy or final) and what they compute in all."""

    name: str
    cost: RunCost
    runs: int

    @property
    def tokens(self) -> int:
        return self.runs * self.cost.tokens

    @property
    def flops(self) -> float:
        return self.runs * self.cost.flops

    @property
    def eval_flops(self) -> float:
        return self.runs * self.cost.eval_flops


@dataclass(frozen=True)
class DiskItem:
    what: str
    bytes: int
    note: str


@dataclass
class Plan:
    """Everything `regmix plan` prints."""

    configfiles: list[str]
    directory: Path
    cores: int
    sweep: Sweep
    synthetic: bool
    regressors: list[str]
    vocab: Vocabulary
    corpus: CorpusTokens
    proxy: Section
    final: Section
    jobs: list[Job]
    disk: list[DiskItem] = field(default_factory=list)
    timings: dict[str, StepTiming] | None = None
    slots: list[Slot] | None = None
    """The jobs scheduled as they become ready: Snakemake's way among rules of equal priority."""
    slots_prioritized: list[Slot] | None = None
    """The jobs scheduled longest chain first: what rule priorities along the chain would do."""
    run_times: dict[str, RunTime] | None = None
    """Seconds per proxy and final run and per training process, from the timings."""
    load: float | None = None
    """The 1-minute load average when the steps were timed."""
    gpu_tokens_per_s: float | None = None
    data: DataPlan | None = None
    evaluation: EvaluationCost | None = None
    """Downstream evaluation of each final model (also when the section is off: its estimate)."""
    reuse: list[str] = field(default_factory=list)
    """What the run does with the runs trained before (regmix.workflow.reuse_plan), by reason;
    empty when nothing was trained before or all of it is kept."""

    @property
    def gpu_hours(self) -> float | None:
        if not self.gpu_tokens_per_s:
            return None
        return (self.proxy.tokens + self.final.tokens) / self.gpu_tokens_per_s / 3600


def plan_workflow(
    configfiles: Sequence[str | os.PathLike] = (),
    directory: str | os.PathLike = ".",
    cores: int | None = None,
    gpu_tokens_per_s: float | None = None,
    measure: bool = True,
    workflow_dir: str | os.PathLike | None = None,
    baselines_wait_for_optimum: bool = False,
    timings: dict[str, StepTiming] | None = None,
) -> Plan:
    """The plan of the workflow run in `directory` with the config Snakemake would see.

    With `measure`, the proxy and final shapes' steps are timed here, unless `timings` gives
    them ('proxy' and 'final': e.g. figures from another machine). `baselines_wait_for_optimum`
    models the older layout in which all final mixtures were drawn in one job after the
    simulation (for checking estimates against such runs).
    """
    config = load_config(configfiles, workflow_dir or REPO)
    directory = Path(directory)
    check_workflow(config, directory)  # the mistakes Snakemake would stop on, in its words
    cores = cores or os.cpu_count() or 1
    if cores < 1:
        raise RegmixError(f"--cores: must be >= 1, got {cores}")
    if gpu_tokens_per_s is not None and gpu_tokens_per_s <= 0:
        raise RegmixError(f"--gpu-tokens-per-s: must be > 0, got {gpu_tokens_per_s}")
    corpus_path = config["corpus"]["path"]
    synthetic = not corpus_path
    planted = synthetic or (directory / corpus_path / "planted.yaml").is_file()
    sweep = planned_sweep(config, directory, planted)
    vocab = vocabulary(config["corpus"]["tokenizer"], directory)
    corpus = corpus_tokens(config, directory, vocab)
    proxy = Section(
        "proxy",
        run_cost("proxy", config["proxy"], vocab.size, corpus.valid),
        len(sweep.runs()) + int(sweep.check_optimum),
    )
    final = Section(
        "final",
        run_cost("final", config["final"], vocab.size, corpus.valid),
        len(sweep.final_names()),
    )
    chosen = config["regression"]["model"]
    regressors = [chosen, *(m for m in config["regression"]["compare"] if m != chosen)]
    plan = Plan(
        [str(f) for f in configfiles],
        directory,
        cores,
        sweep,
        synthetic,
        regressors,
        vocab,
        corpus,
        proxy,
        final,
        jobs=[],
        gpu_tokens_per_s=gpu_tokens_per_s,
    )
    if config["evaluation"]["enabled"] or config["evaluation"]["tasks"]:
        plan.evaluation = evaluation_cost(
            config["evaluation"], final.cost, config["corpus"]["tokenizer"] == "byte"
        )
    if timings is not None:
        plan.timings = dict(timings)
    elif measure:
        plan.load = os.getloadavg()[0]
        shapes = [Shape.of("proxy", proxy.cost, cores), Shape.of("final", final.cost, cores)]
        plan.timings = measure_steps(shapes)
    if plan.timings is not None:
        imports = max(t.import_seconds for t in plan.timings.values())
        plan.run_times = {
            name: RunTime.of(
                section.cost,
                _with_imports(plan.timings[name], imports),
                exports=name == "final",
            )
            for name, section in (("proxy", proxy), ("final", final))
        }
    small = dict(SMALL_JOB_SECONDS)
    simulation = config["simulation"]
    small["simulate"] *= max(
        1.0, simulation["candidates"] * (1 + simulation["bootstrap"]) / SIMULATED_CANDIDATES
    )
    plan.jobs = workflow_jobs(
        sweep,
        synthetic,
        regressors,
        proxy.cost,
        final.cost,
        plan.run_times,
        small,
        baselines_wait_for_optimum,
        evaluate_job_seconds(plan) if plan.evaluation and plan.evaluation.enabled else None,
    )
    if plan.run_times is not None:
        plan.slots = simulate_schedule(plan.jobs, cores, AS_READY)
        plan.slots_prioritized = simulate_schedule(plan.jobs, cores, LONGEST_CHAIN)
    plan.disk = disk_items(plan)
    plan.reuse = reuse_plan(config, directory, sweep).table_lines()
    per_byte = 1.0 if vocab.size == BYTE_VOCAB else 1 / BYTES_PER_SUBWORD_TOKEN
    plan.data = data_plan(config, directory, per_byte, corpus.generated_bytes)
    return plan


def evaluate_job_seconds(plan: Plan) -> float:
    """One evaluate job in the schedule: timed from the final step, or 0 when not measured."""
    if plan.timings is None:
        return 0.0
    tokens_per_s = plan.final.cost.train.tokens_per_step / plan.timings["final"].step_seconds
    return plan.evaluation.seconds(tokens_per_s)


def _with_imports(timing: StepTiming, imports: float) -> StepTiming:
    return replace(timing, import_seconds=imports)


def disk_items(plan: Plan) -> list[DiskItem]:
    """What the run writes: the lasting files, and the checkpoints' peak while it runs."""
    items = []
    corpus = plan.corpus
    if plan.synthetic:
        items.append(
            DiskItem("synthetic corpus", corpus.generated_bytes, "text it generates (estimate)")
        )
    shard = plan.vocab.token_bytes
    how = "counted by prepare" if corpus.exact else "estimate"
    items.append(
        DiskItem(
            "token shards", corpus.total * shard, f"{corpus.total:,} tokens × {shard} B, {how}"
        )
    )
    proxy, final = plan.proxy.cost, plan.final.cost
    if plan.slots is not None:
        peak = peak_checkpoint_bytes(plan.slots)
        note = "runs in flight at once in the schedule; each deleted when its run ends"
    else:
        workers = plan.cores // max(1, min(proxy.threads, final.threads))
        peak = workers * max(proxy.checkpoint_bytes, final.checkpoint_bytes)
        note = f"at most {workers} runs in flight; each deleted when its run ends"
    items.append(DiskItem("checkpoints (peak)", peak, note))
    runs = plan.proxy.runs + plan.final.runs
    items.append(
        DiskItem("kept results", 2 * runs * KEPT_RESULT_BYTES, f"{runs} runs, published and kept")
    )
    exports = plan.final.runs * final.export_bytes
    items.append(
        DiskItem(
            "exported models",
            2 * exports,
            f"{plan.final.runs} × {human_bytes(final.export_bytes)} fp32 safetensors, twice: "
            "results/final/*/hf and the kept copy in results/checkpoints/final",
        )
    )
    return items


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # unreachable
