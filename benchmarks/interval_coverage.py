"""How often do the 95% intervals hold the later rounds' runs? Replayed on RegMix's runs.

The workflow's rounds are replayed on RegMix's 512 published proxy runs (1M parameters): 32
random runs, then two rounds of 16 proposed by `regmix propose --pool` with the default
acquisition, each writing the interval record its runs later check (`--intervals-out`,
calibrated on the records before it, `--checks`), as the workflow does. The pool's measured
losses stand in for training. Per target it prints the share of the later rounds' runs inside
their 95% interval:

- as fitted: the GP's posterior, uncalibrated;
- checks only: rescaled by split-conformal on earlier rounds' checks alone, and left as
  fitted before there are any (the rule before cross-validation joined it);
- recorded: what the proposer wrote (`regmix.search.calibration`): the 95th percentile of the
  checks' |z|, or, before any check, of the proposer's own cross-validation.

With `--demo RESULTS` (a finished workflow's `results/`) it also recomputes that run's later
rounds under the current rule: round 2's factor from the proposer's cross-validation on round 1,
each later one's from the checks before it (proposals do not depend on the factor).

    python benchmarks/interval_coverage.py --seeds 20      # ~1 min on an idle core
    python benchmarks/interval_coverage.py --seeds 0 --demo results
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from replay import published_runs

from regmix.search.calibration import (
    LEVEL,
    MIN_CHECKS,
    Z_95,
    cross_validated_z,
    held_out_scale,
    interval_checks,
    interval_scale,
    read_records,
)
from regmix.search.propose import AcquisitionConfig, proposal_model, write_proposal
from regmix.search.regression import training_data_from
from regmix.search.runs import loss_domains, parse_target, read_runs
from regmix.workflow.config import load_config

TARGETS = ("the_pile_pile_cc", "mean")
ROUNDS = (32, 16, 16)


def replay_checks(pool: pd.DataFrame, target: str, seed: int, folder: Path) -> pd.DataFrame:
    """One replay of the rounds; the later rounds' runs checked against their records."""
    pool_path = folder / "pool.parquet"
    pool.to_parquet(pool_path)
    rng = np.random.default_rng(seed)
    chosen = pool[pool["run"].isin(rng.choice(pool["run"], ROUNDS[0], replace=False))]
    records = []
    for number, size in enumerate(ROUNDS[1:], start=2):
        chosen.to_parquet(folder / "runs.parquet")
        record = folder / f"intervals{number}.parquet"
        picked = write_proposal(
            [folder / "runs.parquet"], target, size, folder / f"round{number}.parquet",
            AcquisitionConfig(), seed, number, pool_path,
            with_optimum=number == len(ROUNDS), intervals_out=record, checks=records,
        )  # fmt: skip
        records.append(record)
        chosen = pd.concat([chosen, pool[pool["run"].isin(picked["run"])]], ignore_index=True)
    target_spec = parse_target(target, loss_domains(pool))
    return interval_checks(read_records(records), chosen, target_spec)


def checks_only_inside(checks: pd.DataFrame) -> pd.Series:
    """Inside under the earlier rule: split-conformal on the earlier rounds' checks alone."""
    inside = pd.Series(False, index=checks.index)
    for number in sorted(checks["round"].unique()):
        earlier = np.sort(checks.loc[checks["round"] < number, "z"].abs().to_numpy())
        scale = 1.0
        if len(earlier) >= MIN_CHECKS:
            rank = min(len(earlier), math.ceil((len(earlier) + 1) * LEVEL))
            scale = earlier[rank - 1] / Z_95
        rows = checks["round"] == number
        inside[rows] = checks.loc[rows, "z"].abs() <= Z_95 * scale
    return inside


def proposer_cv_z(runs: pd.DataFrame, target: str, seed: int) -> np.ndarray:
    """The cross-validated errors a proposer fitted on `runs` calibrates on before any check."""
    data, _ = training_data_from(runs, target)
    model = proposal_model(data.weights, data.target, seed)
    return cross_validated_z(model, data.weights, data.target, seed)


def demo(results: Path) -> None:
    """A finished run's later rounds, each rescaled as the current rule would have."""
    config = load_config([], results.parent)
    target, seed = config["target"], config["mixtures"]["seed"]
    runs = read_runs(results / "proxy" / "runs.parquet")
    records = read_records(sorted((results / "mixtures" / "intervals").glob("round*.parquet")))
    checks = interval_checks(records, runs, parse_target(target, loss_domains(runs)))
    print(f"\n{results}: target {target}")
    inside = 0
    for number in sorted(checks["round"].unique()):
        before = runs[~runs["run"].isin(records.loc[records["round"] >= number, "run"])]
        scale, basis = held_out_scale(
            checks[checks["round"] < number], partial(proposer_cv_z, before, target, seed)
        )
        z = checks.loc[checks["round"] == number, "z"].abs()
        held = int((z <= Z_95 * (scale or 1.0)).sum())
        inside += held
        print(f"  round {number}: x{scale or 1.0:.2f} ({basis}), {held} of {len(z)} inside")
    print(f"  all: {inside} of {len(checks)} ({inside / len(checks):.1%}); the fitted regressor's"
          f" factor on every check: x{interval_scale(checks['z'].to_numpy()):.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--demo", type=Path, help="a finished run's results/ to recompute")
    args = parser.parse_args()
    if args.demo is not None:
        demo(args.demo.resolve())
    if not args.seeds:
        return
    pool = published_runs()
    print(f"share of later rounds' runs inside their 95% interval, {args.seeds} replays each")
    print(f"{'target':18s} {'round':>5s} {'runs':>5s} {'as fitted':>10s} {'checks only':>12s}"
          f" {'recorded':>9s}  factor (median)")  # fmt: skip
    for target in TARGETS:
        started = time.perf_counter()
        tables = []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as folder:
                checks = replay_checks(pool, target, seed, Path(folder))
            tables.append(checks.assign(seed=seed, checks_only=checks_only_inside(checks)))
        table = pd.concat(tables, ignore_index=True)
        for number, rows in [*table.groupby("round"), ("all", table)]:
            print(
                f"{target:18s} {number!s:>5s} {len(rows):5d} {rows['inside_fitted'].mean():10.3f}"
                f" {rows['checks_only'].mean():12.3f} {rows['inside'].mean():9.3f}"
                f"  x{rows.groupby(['seed', 'round'])['interval_scale'].first().median():.2f}",
                flush=True,
            )
        print(f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
