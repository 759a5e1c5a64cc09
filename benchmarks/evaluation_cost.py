"""What downstream evaluation cost in a finished run, against `regmix plan`'s estimate.

Reads the `evaluate` jobs' Snakemake benchmark files (results/benchmarks/evaluate/<name>.tsv:
wall seconds, CPU seconds and peak memory of each model's lm-eval job) and each model's
results.json (examples scored), and prints them per model and in all, beside the plan's
requests, tokens and FLOPs per model for the same config (no steps timed).

    python benchmarks/evaluation_cost.py [RESULTS_DIR] [--configfile F ...]

For the paper preset's estimate (its 13 downstream tasks), see `regmix plan --configfile
config/presets/pile_paper.yaml` in a folder with a corpus (the README shows how).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from regmix.observe.plan import plan_workflow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=Path("results"))
    parser.add_argument("--configfile", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    files = sorted((args.results / "benchmarks" / "evaluate").glob("*.tsv"))
    if not files:
        raise SystemExit(f"{args.results}/benchmarks/evaluate: no benchmark files (run it first)")
    rows = []
    for path in files:
        bench = pd.read_csv(path, sep="\t").iloc[-1]
        results = json.loads(
            (args.results / "final" / path.stem / "eval" / "results.json").read_text()
        )
        examples = sum(n.get("effective", 0) for n in results.get("n-samples", {}).values())
        rows.append(
            {
                "model": path.stem,
                "wall_s": bench["s"],
                "cpu_s": bench.get("cpu_time", float("nan")),
                "max_rss_mb": bench.get("max_rss", float("nan")),
                "examples": examples,
            }
        )
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    print(
        f"\nevaluate jobs: {len(table)}; wall s per model: mean {table.wall_s.mean():.1f}, "
        f"min {table.wall_s.min():.1f}, max {table.wall_s.max():.1f}; "
        f"sum {table.wall_s.sum():.1f} s"
        f" (core-seconds of 1-thread jobs; on 2 cores ~{table.wall_s.sum() / 2:.0f} s of wall)"
    )
    plan = plan_workflow(args.configfile, args.results.parent, measure=False)
    cost = plan.evaluation
    if cost is not None:
        print(
            f"regmix plan, per model: {sum(t.requests or 0 for t in cost.tasks):,} requests, "
            f"{cost.tokens:,} tokens, {cost.flops:.2e} forward FLOPs"
        )


if __name__ == "__main__":
    main()
