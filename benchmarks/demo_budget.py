"""Is the demo's proxy budget right? Time and signal of the proxy stage on the demo corpus.

Trains proxies the way the workflow does (`regmix train-proxy` jobs of several runs, one
single-threaded worker per core) on the synthetic demo corpus and prints:

- the wall time, the stage's efficiency (pure training seconds / (wall seconds × workers)) and
  the wall time extrapolated to the demo's 64 proxies;
- the signal: the spread of each validation domain's final loss across the sampled mixtures;
- the noise: the spread between two seeds of the same mixture;
- how well the target loss ranks the mixtures by their distance to the planted blend.

Hold the CPU lock while it runs (it uses every core):

    flock /tmp/regmix-cpu.lock python benchmarks/demo_budget.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from demo_data import prepare_demo_data, regmix
from scipy.stats import spearmanr

from regmix.search.runs import LOSS

DEMO = {
    "model": "demo_proxy",
    "seq_len": 256,
    "batch_size": 16,
    "steps": 80,
    "lr": 2e-3,
    "warmup_steps": 10,
    "eval_windows": 16,
    "checkpoint_every": 40,
}


def train_jobs(root: Path, jobs: list[list[str]], settings: dict, out: str, workers: int) -> float:
    """Run the jobs `workers` at a time; returns the wall seconds."""

    def job(runs: list[str]) -> None:
        command = [sys.executable, "-m", "regmix.cli", "train-proxy", "--threads", "1"]
        command += ["--data", str(root / "data"), "--mixtures", str(root / "mixtures.parquet")]
        command += ["--runs", *runs, "--settings", json.dumps(settings)]
        command += ["--out", str(root / out), "--work", str(root / f"{out}-work")]
        subprocess.run(command, check=True, stderr=subprocess.DEVNULL)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(job, jobs))
    return time.perf_counter() - start


def collect(root: Path, out: str, runs: list[str]) -> pd.DataFrame:
    mixtures = pd.read_parquet(root / "mixtures.parquet")
    subset = root / f"{out}-mixtures.parquet"
    mixtures[mixtures["run"].isin(runs)].to_parquet(subset)
    regmix(
        "collect-proxies",
        "--mixtures",
        str(subset),
        "--proxy-dir",
        str(root / out),
        "--out",
        str(root / f"{out}.parquet"),
    )
    return pd.read_parquet(root / f"{out}.parquet").set_index("run")


def distance_to_planted(runs: pd.DataFrame, planted: dict[str, float]) -> pd.Series:
    weights = runs[[c for c in runs.columns if c.startswith("weight.")]]
    weights.columns = [c[len("weight.") :] for c in weights.columns]
    target = pd.Series(planted).reindex(weights.columns, fill_value=0.0)
    return (weights - target).abs().sum(axis=1)


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", type=json.loads, default=DEMO, help="TrainConfig (JSON)")
    parser.add_argument("--mixtures", type=int, default=16, help="mixtures to train")
    parser.add_argument(
        "--seed-pairs", type=int, default=4, help="mixtures trained with seed 1 too"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="concurrent jobs")
    parser.add_argument("--proxies-per-job", type=int, default=8)
    parser.add_argument(
        "--final-tokens", type=int, default=400 * 32 * 128, help="sets the caps (config: final)"
    )
    parser.add_argument("--demo-proxies", type=int, default=64, help="extrapolate to this many")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temp dir)")
    args = parser.parse_args()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="regmix-demo-budget-"))
    prepare_demo_data(root, args.final_tokens, args.mixtures)
    runs = list(pd.read_parquet(root / "mixtures.parquet")["run"])
    paired = runs[: args.seed_pairs]

    jobs = chunks(runs, args.proxies_per_job)
    wall = train_jobs(root, jobs, args.settings, "proxy", args.workers)
    reseeded = {**args.settings, "seed": args.settings.get("seed", 0) + 1}
    train_jobs(root, chunks(paired, args.proxies_per_job), reseeded, "reseed", args.workers)

    table = collect(root, "proxy", runs)
    again = collect(root, "reseed", paired)
    planted = yaml.safe_load((root / "corpus" / "planted.yaml").read_text())["weights"]

    train_seconds = table["train_seconds"].sum()
    per_proxy = wall * args.workers / len(runs)
    print(f"settings: {json.dumps(args.settings)}")
    print(
        f"{len(runs)} proxies in {len(jobs)} jobs on {args.workers} workers: {wall:.0f} s wall, "
        f"{table['tokens'].iloc[0]:,} tokens each at {table['tokens_per_s'].median():,.0f} "
        f"tokens/s (median)"
    )
    efficiency = train_seconds / (wall * args.workers)
    print(f"efficiency: pure training / (wall × workers) = {efficiency:.2f}")
    print(
        f"extrapolated: {args.demo_proxies} proxies ≈ "
        f"{per_proxy * args.demo_proxies / args.workers / 60:.1f} min on {args.workers} workers"
    )
    print()
    print(f"{'domain':<8} {'mean':>6} {'spread sd':>9} {'range':>6} {'seed sd':>8} {'ratio':>6}")
    for column in sorted(c for c in table.columns if c.startswith(LOSS)):
        losses = table[column]
        diffs = again[column] - table.loc[paired, column]
        noise = float(np.sqrt(np.mean(diffs**2) / 2))  # sd of one run's loss across seeds
        spread = float(losses.std())
        print(
            f"{column[len(LOSS) :]:<8} {losses.mean():>6.3f} {spread:>9.4f} "
            f"{losses.max() - losses.min():>6.3f} {noise:>8.4f} {spread / noise:>6.1f}"
        )
    rho = spearmanr(table[LOSS + "target"], distance_to_planted(table, planted))[0]
    print()
    print(f"Spearman(target loss, L1 distance of the mixture to the planted blend) = {rho:.2f}")
    print(f"files: {root}")


if __name__ == "__main__":
    main()
