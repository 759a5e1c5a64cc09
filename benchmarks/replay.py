"""Replay active rounds on RegMix's 512 published proxy runs with `regmix propose --pool`.

Each replay starts from a few random runs of the pool (their losses are what a first round
would have measured), then asks `propose` for rounds of more runs, choosing only among runs
of the pool not yet chosen and reading the published loss of each pick. Regret after each
round is the best true target loss found so far minus the pool's best. Strategies, all with
the same starting runs per seed:

- active: the default acquisition (batch Thompson sampling from the GP posterior);
- ucb: GP-BUCB;
- greedy: the runs with the lowest predicted loss;
- random: random runs of the pool (RegMix's sampler, since the pool is its draws).

    python benchmarks/replay.py                        # mean and Pile-CC, 5 seeds
    python benchmarks/replay.py --targets mean --seeds 10 --methods thompson,random

The runs are read from ../shared/fixtures/regmix_pile_1m (or $REGMIX_FIXTURES).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from regmix.search.propose import AcquisitionConfig, propose
from regmix.search.regression import training_data_from
from regmix.search.runs import STATUS_OK, import_regmix_runs

FIXTURES = Path(
    os.environ.get("REGMIX_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures")
)
PILE = FIXTURES / "regmix_pile_1m"
LABELS = {"thompson": "active", "ucb": "ucb", "greedy": "greedy", "random": "random"}


def published_runs() -> pd.DataFrame:
    runs = import_regmix_runs(PILE / "train_mixture_1m.csv", PILE / "train_pile_loss_1m.csv")
    return runs[runs["status"] == STATUS_OK].reset_index(drop=True)


def replay(
    pool: pd.DataFrame, target: str, method: str, seed: int, start: int, step: int, total: int
) -> list[float]:
    """Regret after the first round and after each later round of one replay."""
    data, _ = training_data_from(pool, target)
    truth = pd.Series(data.target, index=data.runs)
    rng = np.random.default_rng(seed)
    chosen = list(rng.choice(pool["run"], start, replace=False))
    regrets = [truth[chosen].min() - truth.min()]
    config = AcquisitionConfig(method=method)
    while len(chosen) < total:
        measured = pool[pool["run"].isin(chosen)]
        picks = propose(measured, target, step, config, seed, len(chosen), pool=pool)
        chosen += picks["run"].tolist()
        regrets.append(truth[chosen].min() - truth.min())
    return regrets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="mean,the_pile_pile_cc")
    parser.add_argument("--methods", default="thompson,ucb,greedy,random")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--start", type=int, default=16, help="random runs before round 2")
    parser.add_argument("--step", type=int, default=8, help="runs per later round")
    parser.add_argument("--total", type=int, default=64, help="runs in all")
    args = parser.parse_args()
    pool = published_runs()
    sizes = list(range(args.start, args.total + 1, args.step))
    print(
        f"regret = best true target loss among the chosen runs - the pool's best "
        f"({len(pool)} runs), mean over {args.seeds} seeds; columns: runs chosen"
    )
    for target in args.targets.split(","):
        print(f"\ntarget {target}")
        print(f"{'strategy':9s}" + "".join(f"{n:>8d}" for n in sizes) + "   found best")
        for method in args.methods.split(","):
            started = time.perf_counter()
            runs = [
                replay(pool, target, method, s, args.start, args.step, args.total)
                for s in range(args.seeds)
            ]
            mean = np.mean(runs, axis=0)
            found = sum(r[-1] == 0 for r in runs)
            print(
                f"{LABELS[method]:9s}"
                + "".join(f"{m:8.4f}" for m in mean)
                + f"   {found}/{args.seeds}   ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
