"""`regmix plan`'s plan as a person reads it (`render_text`) and as plain data (`plan_dict`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from regmix.observe.costs import RunCost
from regmix.observe.data_stage import plan_lines as data_plan_lines
from regmix.observe.evaluation_cost import EVAL_PROCESS_SECONDS
from regmix.observe.plan import Plan, Section, evaluate_job_seconds, human_bytes
from regmix.observe.schedule import (
    PROCESS_START_SECONDS,
    RUN_OVERHEAD_SECONDS,
    STAGES,
    Job,
    makespan,
    stage_spans,
)


def _count(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def _clock(seconds: float) -> str:
    """m:ss, h:mm:ss, or days (`12d`) once it is past 99 hours."""
    seconds = round(seconds)
    if seconds >= 100 * 3600:
        return f"{seconds / 86400:,.0f}d"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _model_name(cost: RunCost) -> str:
    model = cost.train.model
    return model if isinstance(model, str) else "custom shape"


def jobs_per_stage(jobs: Sequence[Job]) -> dict[str, dict[str, int]]:
    """{stage: {rule: jobs}}, stages in STAGES order, rules in DAG order."""
    stages: dict[str, dict[str, int]] = {stage: {} for stage in [*STAGES, "other"]}
    for job in jobs:
        rules = stages[job.stage]
        rules[job.rule] = rules.get(job.rule, 0) + 1
    return {stage: rules for stage, rules in stages.items() if rules}


def render_text(plan: Plan) -> str:
    """The plan as a person reads it."""
    sweep = plan.sweep
    configs = ", ".join(["config/config.yaml", *plan.configfiles])
    lines = [f"regmix plan: {configs}; working directory {plan.directory}; {plan.cores} cores", ""]
    rounds = " + ".join(str(n) for n in sweep.rounds)
    check = "on" if sweep.check_optimum else "off"
    lines.append(
        f"sweep: {sweep.n_rounds} round(s) of {rounds} proxy runs in {len(sweep.batches())} jobs "
        f"of up to {sweep.proxies_per_job}; optimum proxy check {check}; "
        f"{len(sweep.final_names())} final models ({', '.join(sweep.final_names())})"
    )
    if plan.reuse:
        lines += ["", *plan.reuse]
    lines += ["", "jobs per stage"]
    stages = jobs_per_stage(plan.jobs)
    for stage, rules in stages.items():
        detail = ", ".join(f"{rule} {n}" for rule, n in rules.items())
        lines.append(f"  {stage:14s}{sum(rules.values()):5d}   {detail}")
    lines.append(f"  {'all':14s}{len(plan.jobs):5d}")

    if plan.data is not None:
        lines += ["", *data_plan_lines(plan.data)]
    lines += ["", f"compute (vocabulary {plan.vocab.size:,}: {plan.vocab.source})"]
    lines.append(
        f"  {'':8s}{'model':>14s}{'params':>9s}{'runs':>6s}{'tokens/run':>12s}"
        f"{'tokens':>9s}{'train FLOPs':>13s}{'eval FLOPs':>12s}"
    )
    for section in (plan.proxy, plan.final):
        cost = section.cost
        lines.append(
            f"  {section.name:8s}{_model_name(cost):>14s}{_count(cost.model.total_params):>9s}"
            f"{section.runs:6d}{_count(cost.tokens):>12s}{_count(section.tokens):>9s}"
            f"{section.flops:13.2e}{section.eval_flops:12.2e}"
        )
    total_tokens = plan.proxy.tokens + plan.final.tokens
    total_flops = plan.proxy.flops + plan.final.flops
    eval_flops = plan.proxy.eval_flops + plan.final.eval_flops
    lines.append(
        f"  {'total':8s}{'':41s}{_count(total_tokens):>9s}{total_flops:13.2e}{eval_flops:12.2e}"
    )

    lines += ["", f"disk (corpus: {plan.corpus.source})"]
    for item in plan.disk:
        lines.append(f"  {item.what:20s}{human_bytes(item.bytes):>10s}   {item.note}")
    lasting = sum(i.bytes for i in plan.disk if not i.what.startswith("checkpoints"))
    peak = sum(i.bytes for i in plan.disk)
    lines.append(
        f"  {'total':20s}{human_bytes(lasting):>10s}   at the end; {human_bytes(peak)} at the peak"
    )

    lines.append("")
    if plan.slots is None or plan.timings is None:
        lines.append("wall time: not estimated (--no-measure)")
    else:
        lines.append(f"wall time on this machine ({plan.cores} cores, simulated schedule)")
        for name, timing in plan.timings.items():
            tokens_per_s = getattr(plan, name).cost.train.tokens_per_step / timing.step_seconds
            lines.append(
                f"  {name} step {timing.step_seconds:.3f} s ({tokens_per_s:,.0f} tokens/s; "
                f"{timing.how})"
            )
        imports = max(t.import_seconds for t in plan.timings.values())
        lines.append(
            f"  per training process: {imports:.1f} s of imports (measured) + first step + "
            f"{PROCESS_START_SECONDS} s; per run {RUN_OVERHEAD_SECONDS} s; jobs that do not "
            "train: the demo's figures"
        )
        for section in (plan.proxy, plan.final):
            if section.cost.gpus and plan.timings[section.name].device == "cpu":
                lines.append(
                    f"  note: {section.name} jobs get {section.cost.gpus} GPU(s) but this "
                    "machine has none: they would train on its CPUs, as timed here"
                )
        if plan.proxy.cost.gpus or plan.final.cost.gpus:
            lines.append("  note: the schedule shares out cores only, not GPUs")
        if plan.load is not None and plan.load > 0.5:
            lines.append(
                f"  note: the load average was {plan.load:.1f} while timing; other processes "
                "on the cores inflate these figures"
            )
        lines.append(
            f"  {'stage':14s}{'jobs':>6s}{'start':>13s}{'end':>13s}{'span':>13s}{'core-time':>13s}"
        )
        for span in stage_spans(plan.slots):
            lines.append(
                f"  {span.stage:14s}{span.jobs:6d}{_clock(span.start):>13s}{_clock(span.end):>13s}"
                f"{_clock(span.span):>13s}{_clock(span.core_seconds):>13s}"
            )
        lines.append(
            f"  {'total':14s}{len(plan.slots):6d}{'':26s}{_clock(makespan(plan.slots)):>13s}"
        )
        lines.append(
            "  (jobs started as they become ready, as Snakemake does among rules of equal "
            "priority; started longest chain first, as priorities along the proxy-to-optimum "
            f"chain would make it: {_clock(makespan(plan.slots_prioritized))})"
        )
    lines += evaluation_lines(plan)
    if plan.gpu_hours is not None:
        lines += [
            "",
            f"GPU-hours at {plan.gpu_tokens_per_s:,.0f} tokens/s per GPU: {plan.gpu_hours:,.2f} "
            f"({_count(total_tokens)} proxy and final training tokens only; no evaluation, "
            "start-up or idle time)",
        ]
    return "\n".join(lines)


def evaluation_seconds(plan: Plan) -> float | None:
    """One final model's evaluation job on this machine (from the final step's timing)."""
    if plan.evaluation is None or plan.timings is None:
        return None
    return evaluate_job_seconds(plan)


def evaluation_lines(plan: Plan) -> list[str]:
    cost = plan.evaluation
    if cost is None:
        return []
    state = "on" if cost.enabled else "off: evaluation.enabled is false; an estimate"
    lines = ["", f"downstream evaluation per final model ({state}; lm-eval requests)"]
    lines.append(f"  {'task':24s}{'requests':>10s}{'tokens/req':>12s}{'tokens':>10s}   source")
    for task in cost.tasks:
        if task.requests is None:
            lines.append(f"  {task.task:24s}{'?':>10s}{'?':>12s}{'?':>10s}   {task.source}")
            continue
        lines.append(
            f"  {task.task:24s}{task.requests:10,d}{task.tokens_per_request:12d}"
            f"{_count(task.tokens):>10s}   {task.source}"
        )
    models = plan.final.runs
    lines.append(
        f"  per model: {_count(cost.tokens)} tokens, {cost.flops:.2e} forward FLOPs; "
        f"{models} models: {models * cost.flops:.2e} FLOPs "
        f"({cost.flops / max(plan.final.cost.flops, 1):.2%} of a final model's training)"
    )
    seconds = evaluation_seconds(plan)
    if seconds is not None:
        lines.append(
            f"  per model on this machine: ~{_clock(seconds)} ({EVAL_PROCESS_SECONDS:.0f} s "
            "start-up + forward passes at the final model's timed speed)"
        )
    if plan.gpu_tokens_per_s:
        gpu_hours = models * cost.tokens / (3 * plan.gpu_tokens_per_s) / 3600
        lines.append(
            f"  GPU-hours for all models (forward at 3× training tokens/s): {gpu_hours:,.2f}"
        )
    if cost.unknown:
        lines.append(f"  not counted (unknown size): {', '.join(cost.unknown)}")
    return lines


def plan_dict(plan: Plan) -> dict:
    """The plan as plain data (`regmix plan --json`)."""

    def section(s: Section) -> dict:
        cost = s.cost
        return {
            "model": cost.train.model,
            "params": cost.model.total_params,
            "non_embedding_params": cost.model.non_embedding_params,
            "runs": s.runs,
            "tokens_per_run": cost.tokens,
            "tokens": s.tokens,
            "flops": s.flops,
            "eval_flops": s.eval_flops,
            "evaluations_per_run": cost.evaluations,
            "checkpoint_bytes": cost.checkpoint_bytes,
            "threads": cost.threads,
        }

    out: dict = {
        "configfiles": plan.configfiles,
        "directory": str(plan.directory),
        "cores": plan.cores,
        "rounds": list(plan.sweep.rounds),
        "batches": len(plan.sweep.batches()),
        "final_models": plan.sweep.final_names(),
        "jobs": jobs_per_stage(plan.jobs),
        "vocab": asdict(plan.vocab),
        "corpus": {
            "tokens": plan.corpus.total,
            "exact": plan.corpus.exact,
            "source": plan.corpus.source,
        },
        "proxy": section(plan.proxy),
        "final": section(plan.final),
        "disk": [asdict(item) for item in plan.disk],
        "gpu_tokens_per_s": plan.gpu_tokens_per_s,
        "gpu_hours": plan.gpu_hours,
        "data": asdict(plan.data) if plan.data is not None else None,
    }
    if plan.evaluation is not None:
        out["evaluation"] = {
            "enabled": plan.evaluation.enabled,
            "tasks": [asdict(t) for t in plan.evaluation.tasks],
            "tokens_per_model": plan.evaluation.tokens,
            "flops_per_model": plan.evaluation.flops,
            "seconds_per_model": evaluation_seconds(plan),
        }
    if plan.slots is not None and plan.timings is not None:
        out["timings"] = {name: asdict(t) for name, t in plan.timings.items()}
        out["run_times"] = {name: asdict(t) for name, t in (plan.run_times or {}).items()}
        out["load_average"] = plan.load
        out["stages"] = [{**asdict(span), "span": span.span} for span in stage_spans(plan.slots)]
        out["wall_seconds"] = makespan(plan.slots)
        out["wall_seconds_prioritized"] = makespan(plan.slots_prioritized)
    return out
