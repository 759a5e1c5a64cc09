"""Where a workflow run spent its time: wall time per stage from a Snakemake log, and the proxy
stage's efficiency = pure training time / (stage wall time × parallel workers).

    snakemake --cores all                      # the embedded default, on a quiet machine
    python benchmarks/workflow_timing.py       # reads the newest .snakemake/log/*.log

Run from the workflow's working directory (it also reads results/proxy/*/run.json).
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from pathlib import Path

STAGES = {
    "data": ("synth_corpus", "prepare"),
    "mixtures": ("sample_mixtures",),
    "proxies": ("train_proxy", "collect_proxies"),
    "regression": ("fit", "simulate"),
    "final models": ("final_mixtures", "train_final", "collect_final", "predict_final"),
    "report": ("summarize", "report_figures"),
}
TIMESTAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
STARTED = re.compile(r"^(?:local)?rule (\S+):$")
JOB_ID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\S+)\)$")


def stage_of(rule: str) -> str:
    return next((s for s, prefixes in STAGES.items() if rule.startswith(prefixes)), "other")


def job_spans(log: Path) -> list[tuple[str, datetime, datetime]]:
    """(rule, start, end) of every finished job in a Snakemake log."""
    now = pending = None
    starts: dict[str, tuple[str, datetime]] = {}
    spans = []
    for line in log.read_text().splitlines():
        if m := TIMESTAMP.match(line):
            now = datetime.strptime(m[1], "%a %b %d %H:%M:%S %Y")
        elif m := STARTED.match(line):
            pending = m[1]
        elif (m := JOB_ID.match(line)) and pending:
            starts[m[1]] = (pending, now)
            pending = None
        elif (m := FINISHED.match(line)) and m[1] in starts:
            rule, start = starts.pop(m[1])
            spans.append((rule, start, now))
    return spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, help="a Snakemake log (default: the newest)")
    parser.add_argument("--workers", type=int, default=2, help="parallel jobs the run had")
    args = parser.parse_args()
    log = args.log or max(Path(".snakemake/log").glob("*.log"), key=lambda p: p.stat().st_mtime)
    spans = job_spans(log)
    if not spans:
        raise SystemExit(f"{log}: no finished jobs")
    begin, end = min(s for _, s, _ in spans), max(e for _, _, e in spans)
    print(f"{log}: {len(spans)} jobs, {(end - begin).total_seconds() / 60:.1f} min in all")
    stage_wall = {}
    for stage in STAGES:
        mine = [(s, e) for rule, s, e in spans if stage_of(rule) == stage]
        if mine:
            wall = (max(e for _, e in mine) - min(s for s, _ in mine)).total_seconds()
            stage_wall[stage] = wall
            print(f"  {stage:13s} {wall / 60:5.1f} min  ({len(mine)} jobs)")
    records = [json.loads(p.read_text()) for p in Path("results/proxy").glob("*/run.json")]
    if records and "proxies" in stage_wall:
        train = sum(r["train_seconds"] for r in records)
        tokens = sum(r["tokens"] for r in records)
        efficiency = train / (stage_wall["proxies"] * args.workers)
        print(
            f"proxy stage: {len(records)} runs, {tokens:,} tokens, pure training "
            f"{train / 60:.1f} worker-min; efficiency {efficiency:.2f} "
            f"(training / (wall × {args.workers} workers))"
        )


if __name__ == "__main__":
    main()
