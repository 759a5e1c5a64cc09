"""How close `regmix plan`'s estimate came to a finished run: per run, per job, per stage and in
total, with the error of each.

Run it from the workflow's working directory after `snakemake --cores N` has finished, with the
same config files and cores, on a machine as quiet as the run's was (it times training steps
again):

    snakemake --cores all
    python benchmarks/plan_accuracy.py [--configfile F ...] [--cores N] [--log L]

It reads the run's Snakemake log (the newest .snakemake/log/*.log unless --log: start and end of
every job, so the stage spans), its benchmark files (results/benchmarks/**/*.tsv: seconds per
job, to the hundredth) and the run records (results/{proxy,final}/*/run.json: wall and training
seconds per run). Besides the plan's own estimate it schedules the plan's jobs with their
*actual* durations: the gap between that and the actual total is the scheduling model's error
alone, the rest is the timing's.

A run of an older layout, whose final mixtures were all drawn after the optimum (one
`final_mixtures` job) and which had no optimum proxy check, is planned in that layout.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import tempfile
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from regmix.observe.plan import plan_workflow
from regmix.observe.schedule import (
    AS_READY,
    JOB_OVERHEAD_SECONDS,
    LONGEST_CHAIN,
    makespan,
    simulate_schedule,
    stage_of,
    stage_spans,
)

TIMESTAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
STARTED = re.compile(r"^(?:local)?rule (\S+):$")
JOB_ID = re.compile(r"^\s+jobid: (\d+)$")
WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\S+)\)$")
OLD_BATCH_RULE = re.compile(r"^train_proxy_(run\d+(?:_run\d+)?)$")


def job_name(rule: str, wildcards: dict[str, str]) -> str:
    """The plan's name of a job: `rule[wildcard]` (`train_proxy[run0001-run0008]`, ...)."""
    if m := OLD_BATCH_RULE.match(rule):  # one rule per batch, `_` between the runs
        return f"train_proxy[{m[1].replace('_', '-')}]"
    for key in ("batch", "name", "model"):
        if key in wildcards:
            return f"{rule}[{wildcards[key]}]"
    if "round" in wildcards:
        return f"{rule}[round{wildcards['round']}]"
    return rule


def job_spans(log: Path) -> dict[str, tuple[str, float, float]]:
    """{job name: (rule, start, end)} of every finished job, in seconds from the first start."""
    now: datetime | None = None
    pending: dict = {}
    started: dict[str, tuple[str, dict, datetime]] = {}
    spans: dict[str, tuple[str, datetime, datetime]] = {}
    for line in log.read_text().splitlines():
        if m := TIMESTAMP.match(line):
            now = datetime.strptime(m[1], "%a %b %d %H:%M:%S %Y")
        elif m := STARTED.match(line):
            pending = {"rule": m[1], "wildcards": {}, "start": now}
        elif (m := JOB_ID.match(line)) and pending:
            pending["jobid"] = m[1]
            started[m[1]] = (pending["rule"], pending["wildcards"], pending["start"])
        elif (m := WILDCARDS.match(line)) and pending:
            pending["wildcards"].update(
                part.split("=", 1) for part in m[1].split(", ") if "=" in part
            )
        elif (m := FINISHED.match(line)) and m[1] in started:
            rule, wildcards, start = started.pop(m[1])
            spans[job_name(rule, wildcards)] = (rule, start, now)
    if not spans:
        raise SystemExit(f"{log}: no finished jobs")
    origin = min(start for _, start, _ in spans.values())
    return {
        name: (rule, (start - origin).total_seconds(), (end - origin).total_seconds())
        for name, (rule, start, end) in spans.items()
    }


BENCHMARK_FOLDERS = {
    "proxy": "train_proxy",
    "final": "train_final",
    "regression": "fit",
    "mixtures": "propose_mixtures",
}
"""results/benchmarks/<folder>/[round<r>/]<wildcard>.tsv; the others are
results/benchmarks/<rule>.tsv."""


def benchmark_seconds() -> dict[str, float]:
    """{job name: seconds} from Snakemake's benchmark files."""
    out = {}
    root = Path("results/benchmarks")
    for path in root.rglob("*.tsv"):
        with path.open() as f:
            seconds = float(next(csv.DictReader(f, delimiter="\t"))["s"])
        rule = BENCHMARK_FOLDERS.get(path.relative_to(root).parts[0])
        if rule is None:
            out[path.stem] = seconds
        elif rule == "train_proxy":  # older batch files joined the runs with `_`
            out[f"{rule}[{path.stem.replace('_', '-')}]"] = seconds
        else:
            out[f"{rule}[{path.stem}]"] = seconds
    return out


def run_records(section: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in Path(f"results/{section}").glob("*/run.json")]


MIN_COMPARED_SECONDS = 5.0
"""Shorter spans are within the log's one-second timestamps: their relative error is noise."""


def error(estimate: float, actual: float) -> str:
    if actual < MIN_COMPARED_SECONDS:
        return "-"
    return f"{(estimate - actual) / actual:+.0%}"


def row(label: str, estimate: float, actual: float, unit: float = 1.0) -> str:
    return f"  {label:34s}{estimate / unit:10.1f}{actual / unit:10.1f}{error(estimate, actual):>9s}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", nargs="+", default=[], help="the run's config files")
    parser.add_argument("--cores", type=int, help="the run's --cores (default: all)")
    parser.add_argument("--log", type=Path, help="a Snakemake log (default: the newest)")
    args = parser.parse_args()

    log = args.log or max(Path(".snakemake/log").glob("*.log"), key=lambda p: p.stat().st_mtime)
    spans = job_spans(log)
    rules = {rule for rule, _, _ in spans.values()}
    old_layout = "final_mixtures" in rules
    configfiles = list(args.configfile)
    if "train_optimum_proxy" not in rules:
        override = Path(tempfile.mkdtemp(prefix="plan-accuracy-")) / "no_check.yaml"
        override.write_text("proxy: {check_optimum: false}\n")
        configfiles.append(str(override))
    plan = plan_workflow(configfiles, ".", cores=args.cores, baselines_wait_for_optimum=old_layout)
    layout = "older (final mixtures after the optimum)" if old_layout else "current"
    print(f"{log}: {len(spans)} jobs; planned in the {layout} layout on {plan.cores} cores")
    if plan.load is not None and plan.load > 0.5:
        print(f"note: load average {plan.load:.1f} while timing steps: the estimate is inflated")
    print(f"  {'':34s}{'estimate':>10s}{'actual':>10s}{'error':>9s}")

    print("seconds per run (run.json)")
    for section in ("proxy", "final"):
        records = run_records(section)
        if records and plan.run_times:
            run = plan.run_times[section]
            step = plan.timings[section].step_seconds * getattr(plan, section).cost.train.steps
            wall = statistics.mean(r["wall_seconds"] for r in records)
            train = statistics.mean(r["train_seconds"] for r in records)
            print(row(f"{section} run, wall ({len(records)} runs)", run.run_seconds, wall))
            print(row(f"{section} run, training steps only", step, train))

    print("seconds per job (benchmark files; mean per rule)")
    planned = {job.name: job for job in plan.jobs}
    measured = benchmark_seconds()
    by_rule: dict[str, list[tuple[float, float]]] = {}
    for name, seconds in measured.items():
        if name in planned:
            estimate = planned[name].seconds - JOB_OVERHEAD_SECONDS
            by_rule.setdefault(planned[name].rule, []).append((estimate, seconds))
    for rule, pairs in by_rule.items():
        estimate = statistics.mean(e for e, _ in pairs)
        actual = statistics.mean(a for _, a in pairs)
        print(row(f"{rule} ({len(pairs)} jobs)", estimate, actual))

    print("stage spans, minutes (Snakemake log)")
    actual_stages: dict[str, list[tuple[float, float]]] = {}
    for rule, start, end in spans.values():
        actual_stages.setdefault(stage_of(rule), []).append((start, end))
    for span in stage_spans(plan.slots):
        mine = actual_stages.get(span.stage)
        if mine:
            actual = max(e for _, e in mine) - min(s for s, _ in mine)
            print(row(span.stage, span.span, actual, 60))
    actual_total = max(end for _, _, end in spans.values())
    print(row("total", makespan(plan.slots), actual_total, 60))
    print(row("total, longest chain first", makespan(plan.slots_prioritized), actual_total, 60))

    # The same schedule with each job's actual duration: what is left is the model's error.
    def actual_seconds(name: str) -> float:
        if name in measured:
            return measured[name] + JOB_OVERHEAD_SECONDS
        _, start, end = spans[name]
        return end - start

    actual_jobs = [
        replace(job, seconds=actual_seconds(job.name)) if job.name in spans else job
        for job in plan.jobs
    ]
    print("the schedule alone: the plan's jobs with their actual seconds, minutes")
    for order in (AS_READY, LONGEST_CHAIN):
        replayed = makespan(simulate_schedule(actual_jobs, plan.cores, order))
        print(row(f"total, {order}", replayed, actual_total, 60))
    missing = sorted(set(planned) - set(spans))
    if missing:
        print(f"planned jobs missing from the log: {', '.join(missing[:5])}")


if __name__ == "__main__":
    main()
