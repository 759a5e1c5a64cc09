"""Regression and simulation on RegMix's 512 published 1M-parameter proxy runs.

Prints, for one target (default Pile-CC validation loss):
1. 5-fold CV Spearman / Pearson / MSE of every registered model on identical folds, and the
   default model's margin over LightGBM;
2. wall time of `fit` with the default model (CV + final fit) plus `simulate` over 1M
   candidates (without bootstrap: the issue's < 1 min figure), and of the bootstrap refits;
3. the extrapolation guard's effect on the linear model, with RegMix's caps and without any
   caps (as RegMix's own simulation ran);
4. the optimum's stability: bootstrap refits and candidate seeds.

The Pile has no stats.parquet here; one is built from RegMix's published token prior
(mixture_config/synthesize_mixture.py) times 300B tokens, with the final budget equal to
the corpus, so the caps are RegMix's 15 × prior.

    flock /tmp/regmix-cpu.lock python benchmarks/regression.py [--candidates 1000000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from regmix.search.cross_validation import cross_validate, fold_ids
from regmix.search.mixtures import SamplerConfig
from regmix.search.regression import cv_metrics, fit_model, training_data
from regmix.search.regressors import DEFAULT_MODEL, MODELS, make_model
from regmix.search.runs import write_imported_runs
from regmix.search.simulate import SimulationConfig, simulate

PILE_PRIOR = {  # RegMix's token shares of the Pile's 17 training domains
    "arxiv": 0.113285273,
    "freelaw": 0.079608651,
    "nih_exporter": 0.003913491,
    "pubmed_central": 0.185375901,
    "wikipedia_en": 0.051081359,
    "dm_mathematics": 0.015962925,
    "github": 0.101750772,
    "philpapers": 0.003707518,
    "stackexchange": 0.066529351,
    "enron_emails": 0.001750772,
    "gutenberg_pg_19": 0.027085479,
    "pile_cc": 0.236869207,
    "ubuntu_irc": 0.01184346,
    "europarl": 0.007929969,
    "hackernews": 0.008032956,
    "pubmed_abstracts": 0.038825953,
    "uspto_backgrounds": 0.046446962,
}
CORPUS_TOKENS = 300e9
DEFAULT_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def pile_stats(path: Path) -> Path:
    rows = []
    for domain, share in PILE_PRIOR.items():
        tokens = int(share * CORPUS_TOKENS)
        rows.append((f"the_pile_{domain}", "train", tokens, tokens // 1000))
        rows.append((f"the_pile_{domain}", "valid", tokens // 1000, tokens // 10**6))
    pd.DataFrame(rows, columns=["domain", "split", "tokens", "documents"]).to_parquet(path)
    return path


def compare_models(runs: Path, target: str, threads: int) -> dict[str, dict]:
    data, _ = training_data(runs, target)
    folds = fold_ids(len(data.runs), 5, seed=0)
    results = {}
    for name in MODELS:
        start = time.perf_counter()
        predicted = cross_validate(make_model(name), data.weights, data.target, folds, threads)
        results[name] = {**cv_metrics(data.target, predicted), "s": time.perf_counter() - start}
    return results


def print_comparison(target: str, results: dict[str, dict]) -> None:
    print(f"\n5-fold CV on identical folds (seed 0), target {target}")
    print(f"{'model':10s} {'spearman':>9s} {'pearson':>9s} {'mse':>9s} {'cv s':>6s}")
    for name, r in sorted(results.items(), key=lambda item: -item[1]["spearman"]):
        mark = "  (default)" if name == DEFAULT_MODEL else ""
        print(
            f"{name:10s} {r['spearman']:9.4f} {r['pearson']:9.4f} {r['mse']:9.5f} "
            f"{r['s']:6.1f}{mark}"
        )
    margin = results[DEFAULT_MODEL]["spearman"] - results["lightgbm"]["spearman"]
    print(f"default ({DEFAULT_MODEL}) Spearman margin over lightgbm: {margin:+.4f}")


def timed_pipeline(runs: Path, stats: Path, target: str, work: Path, args) -> dict:
    start = time.perf_counter()
    fit_model(runs, target, DEFAULT_MODEL, work / "default", threads=args.threads)
    fit_s = time.perf_counter() - start
    config = SimulationConfig(candidates=args.candidates, bootstrap=0)
    start = time.perf_counter()
    plain = simulate(work / "default", stats, CORPUS_TOKENS, config, threads=args.threads)
    simulate_s = time.perf_counter() - start
    print(f"\nwall time, {DEFAULT_MODEL}, {args.threads} thread(s), {args.candidates:,} candidates")
    print(f"fit (5-fold CV + final fit): {fit_s:6.1f} s")
    print(f"simulate, no bootstrap:      {simulate_s:6.1f} s")
    print(f"fit + simulate:              {fit_s + simulate_s:6.1f} s")
    start = time.perf_counter()
    config = SimulationConfig(candidates=args.candidates, bootstrap=args.bootstrap)
    boot = simulate(work / "default", stats, CORPUS_TOKENS, config, threads=args.threads)
    print(f"simulate, {args.bootstrap} bootstrap refits: {time.perf_counter() - start:6.1f} s")
    return {"plain": plain, "boot": boot}


def describe(simulation, label: str) -> None:
    report = simulation.report
    where = report["support"]["optimum"]
    top = np.argsort(simulation.optimum)[::-1][:2]
    heaviest = ", ".join(f"{simulation.domains[i]} {simulation.optimum[i]:.3f}" for i in top)
    beyond = ", ".join(where["beyond_runs"]) or "none"
    print(
        f"{label:28s} predicted {report['predicted_loss']:.3f} (best run "
        f"{report['best_run_loss']:.3f}); heaviest: {heaviest}; nearest run "
        f"{where['nearest_run']:.3f} = {where['radius_ratio']}x radius; beyond runs: {beyond}"
    )


def guard_effect(runs: Path, stats: Path, target: str, work: Path, args) -> None:
    fit_model(runs, target, "linear", work / "linear", threads=args.threads)
    print(f"\nextrapolation guard, linear model, {args.candidates:,} candidates")
    for caps, epochs in (("RegMix caps", 15.0), ("no caps", 1e9)):
        sampler = SamplerConfig(max_epochs=epochs)
        for guard in (False, True):
            config = SimulationConfig(candidates=args.candidates, guard=guard, bootstrap=0)
            result = simulate(work / "linear", stats, CORPUS_TOKENS, config, sampler, args.threads)
            describe(result, f"{caps}, guard {'on' if guard else 'off'}:")
            if guard:
                moved = result.report["support"]["unguarded"]
                print(
                    f"{'':28s} guard moved {moved['tv_shift']:.3f} of the mixture; "
                    f"{moved['top_k_outside']} of the unguarded top-k were outside the support; "
                    f"{result.report['candidates']['inside_support']:,} of "
                    f"{result.report['candidates']['within_caps']:,} candidates inside"
                )


def stability(pipeline: dict, stats: Path, work: Path, args) -> None:
    boot = pipeline["boot"]
    figures = boot.report.get("stability")
    print(f"\nstability of the {DEFAULT_MODEL} optimum (TV distance = share of tokens that moves)")
    describe(pipeline["plain"], "default optimum:")
    if figures:
        print(
            f"{figures['bootstrap_refits']} bootstrap refits: mean TV shift "
            f"{figures['mean_tv_shift']:.4f}, max {figures['max_tv_shift']:.4f}"
        )
    optima = [pipeline["plain"].optimum]
    for seed in (1, 2):
        config = SimulationConfig(candidates=args.candidates, seed=seed, bootstrap=0)
        optima.append(
            simulate(work / "default", stats, CORPUS_TOKENS, config, threads=args.threads).optimum
        )
    shifts = [0.5 * np.abs(o - optima[0]).sum() for o in optima[1:]]
    print(f"candidate seeds 1, 2 vs 0: TV shift {', '.join(f'{s:.4f}' for s in shifts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    fixtures = Path(os.environ.get("REGMIX_FIXTURES", DEFAULT_FIXTURES)) / "regmix_pile_1m"
    parser.add_argument("--fixtures", type=Path, default=fixtures)
    parser.add_argument("--target", default="the_pile_pile_cc")
    parser.add_argument("--candidates", type=int, default=1_000_000)
    parser.add_argument("--bootstrap", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--all-targets", action="store_true", help="also compare models on every loss and mean"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = work / "runs.parquet"
        write_imported_runs(
            args.fixtures / "train_mixture_1m.csv", args.fixtures / "train_pile_loss_1m.csv", runs
        )
        stats = pile_stats(work / "stats.parquet")
        print_comparison(args.target, compare_models(runs, args.target, args.threads))
        pipeline = timed_pipeline(runs, stats, args.target, work, args)
        guard_effect(runs, stats, args.target, work, args)
        stability(pipeline, stats, work, args)
        if args.all_targets:
            targets = [
                c.removeprefix("loss.")
                for c in pd.read_parquet(runs).columns
                if c.startswith("loss.")
            ] + ["mean"]
            print("\nSpearman of every model on every target (identical folds)")
            for target in targets:
                results = compare_models(runs, target, args.threads)
                line = "  ".join(f"{n} {r['spearman']:.4f}" for n, r in results.items())
                print(f"{target:36s} {line}")


if __name__ == "__main__":
    main()
