"""Which regressor transfers: proxy→final ranking on a finished demo, and CV on RegMix's runs.

For every candidate regressor it prints
- the 5-fold CV Spearman on the demo's own proxy runs (what the workflow can see),
- the transfer Spearman: each candidate fitted on the demo's proxies predicts the final
  models' mixtures, ranked against their actual final-scale target loss, over the held-out
  random mixtures and over every final model (more final runs tables can be pooled in with
  --more-finals: final models of other demos share the final settings, so they are extra
  held-out evidence),
- the 5-fold CV Spearman on RegMix's 512 published runs (Pile-CC and the mean loss), unless
  --skip-published;
- with --proxy-ceiling, the ceiling no regressor can pass: each final model's mixture trained
  as a proxy (the sweep's own proxy settings, one process per core), and how its measured
  proxy loss ranks the final models. A ceiling near 1 with a low transfer figure means the
  regressor's extrapolation loses the ranking, not the change of scale.

Ensembles are cross-validated honestly: their member weights come from an inner CV inside
each outer training fold, which makes them slow on 512 runs.

    python benchmarks/transfer.py results/                       # a finished demo
    python benchmarks/transfer.py results/ --more-finals other/final/runs.parquet
    python benchmarks/transfer.py results/ --proxy-ceiling --skip-published --models gp
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from replay import published_runs
from scipy.stats import spearmanr

from regmix.search.cross_validation import cross_validate, fold_ids
from regmix.search.mixtures import WEIGHT
from regmix.search.regression import cv_metrics, training_data_from
from regmix.search.regressors import MODELS, make_model
from regmix.search.runs import LOSS, STATUS_OK, loss_domains, parse_target

TARGETS_PUBLISHED = ("the_pile_pile_cc", "mean")


def final_runs(paths: list[Path]) -> pd.DataFrame:
    """Final models of one or more demos, each mixture once."""
    runs = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    runs = runs[runs["status"] == STATUS_OK]
    weights = [c for c in runs.columns if c.startswith(WEIGHT)]
    return runs.drop_duplicates(subset=weights).reset_index(drop=True)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b).statistic)


def demo_figures(results: Path, more: list[Path], target: str, models: list[str]) -> None:
    proxies = pd.read_parquet(results / "proxy" / "runs.parquet")
    finals = final_runs([results / "final" / "runs.parquet", *more])
    data, parsed = training_data_from(proxies, target)
    actual = parsed.values(finals)
    held = finals["run"].str.startswith("heldout").to_numpy()
    first = np.zeros(len(finals), dtype=bool)
    first[: len(pd.read_parquet(results / "final" / "runs.parquet"))] = True
    x = finals[[WEIGHT + d for d in data.domains]].to_numpy()
    folds = fold_ids(len(data.runs), 5, seed=0)
    print(
        f"demo {results}: {len(data.runs)} proxies; {held.sum()} held-out final models "
        f"({(held & first).sum()} of this demo), {len(finals)} final models in all"
    )
    print(f"{'model':10s} {'proxy CV':>9s} {'held-out':>9s} {'this demo':>10s} {'all final':>10s}")
    for name in models:
        oof = cross_validate(make_model(name), data.weights, data.target, folds, threads=2)
        predicted = make_model(name).fit(data.weights, data.target).predict(x)
        print(
            f"{name:10s} {cv_metrics(data.target, oof)['spearman']:9.3f} "
            f"{spearman(predicted[held], actual[held]):9.3f} "
            f"{spearman(predicted[held & first], actual[held & first]):10.3f} "
            f"{spearman(predicted, actual):10.3f}",
            flush=True,
        )


def _train_as_proxy(job: tuple[str, dict[str, float], dict, str]) -> dict[str, float]:
    """One mixture trained at proxy scale: its run name and last per-domain losses."""
    name, weights, settings, data = job
    import torch

    from regmix.training.train import train_mixture
    from regmix.training.train_config import TrainConfig

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        result = train_mixture(data, name, weights, TrainConfig(**settings), work)
    last = result.losses[result.losses["step"] == result.losses["step"].max()]
    losses = zip(last["domain"], last["loss"], strict=True)
    return {"run": name, **{LOSS + domain: float(loss) for domain, loss in losses}}


def proxy_ceiling(results: Path, target: str) -> None:
    """Train every final model's mixture at proxy scale; rank the finals by that loss."""
    finals = final_runs([results / "final" / "runs.parquet"])
    first_proxy = sorted((results / "proxy").glob("run*/run.json"))[0]
    settings = json.loads(first_proxy.read_text())["settings"]
    columns = [c for c in finals.columns if c.startswith(WEIGHT)]
    jobs = [
        (row["run"], {c.removeprefix(WEIGHT): row[c] for c in columns}, settings, results / "data")
        for row in finals.to_dict("records")
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(min(2, os.cpu_count() or 1)) as pool:
        measured = pd.DataFrame(pool.map(_train_as_proxy, jobs))
    parsed = parse_target(target, loss_domains(finals))
    proxy, actual = parsed.values(measured), parsed.values(finals)
    held = finals["run"].str.startswith("heldout").to_numpy()
    print(f"\nfinal mixtures trained as proxies ({time.perf_counter() - started:.0f} s)")
    print(f"{'model':10s} {'proxy':>8s} {'final':>8s}")
    for i in np.argsort(actual):
        print(f"{finals['run'].iloc[i]:10s} {proxy[i]:8.4f} {actual[i]:8.4f}")
    print(
        "ceiling, Spearman(measured proxy loss, final loss): "
        f"held-out {spearman(proxy[held], actual[held]):.3f}, all {spearman(proxy, actual):.3f}"
    )


def published_figures(models: list[str]) -> None:
    runs = published_runs()
    print(f"\n5-fold CV Spearman on RegMix's {len(runs)} published runs (same folds per model)")
    print(f"{'model':10s}" + "".join(f"{t:>18s}" for t in TARGETS_PUBLISHED) + "   seconds")
    for name in models:
        started, cells = time.perf_counter(), []
        for target in TARGETS_PUBLISHED:
            data, _ = training_data_from(runs, target)
            folds = fold_ids(len(data.runs), 5, seed=0)
            oof = cross_validate(make_model(name), data.weights, data.target, folds, threads=2)
            cells.append(cv_metrics(data.target, oof)["spearman"])
        elapsed = time.perf_counter() - started
        print(f"{name:10s}" + "".join(f"{c:18.4f}" for c in cells) + f"   {elapsed:7.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a finished demo's results/ folder")
    parser.add_argument("--more-finals", type=Path, nargs="*", default=[])
    parser.add_argument("--target", default="target")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--skip-published", action="store_true")
    parser.add_argument(
        "--proxy-ceiling", action="store_true", help="also train the final mixtures as proxies"
    )
    args = parser.parse_args()
    models = args.models.split(",")
    demo_figures(args.results, args.more_finals, args.target, models)
    if args.proxy_ceiling:
        proxy_ceiling(args.results, args.target)
    if not args.skip_published:
        published_figures(models)


if __name__ == "__main__":
    main()
