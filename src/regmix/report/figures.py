"""Plots a person reads: which mixtures the proxies covered, how well the regressor ranks
held-out runs, where the optimum sits relative to the token prior (and a planted blend), and
how the final models compare. PNG, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from regmix.files import atomic_path, read_table, read_yaml
from regmix.search.mixtures import WEIGHT


def _pyplot():
    """matplotlib with the file-only Agg backend: rules run on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_cv(cv: pd.DataFrame, metrics: dict, path: str | os.PathLike) -> None:
    """Out-of-fold prediction against actual target loss, one point per run."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.scatter(cv["actual"], cv["prediction"], s=10, alpha=0.6, c=cv["fold"], cmap="tab10")
    low = float(min(cv["actual"].min(), cv["prediction"].min()))
    high = float(max(cv["actual"].max(), cv["prediction"].max()))
    axes.plot([low, high], [low, high], color="grey", linewidth=1, linestyle="--")
    axes.set_xlabel(f"actual {metrics['target']} loss")
    axes.set_ylabel("out-of-fold prediction")

    def figure_of(key: str) -> str:
        return "n/a" if metrics.get(key) is None else f"{metrics[key]:.4f}"

    axes.set_title(
        f"{metrics['model']}, {metrics['folds']}-fold CV on {metrics['n_runs']} runs\n"
        f"Spearman {figure_of('spearman')}  Pearson {figure_of('pearson')}  "
        f"MSE {figure_of('mse')}",
        fontsize=10,
    )
    _save(figure, path)
    plt.close(figure)


def plot_optimum(
    optimum: pd.Series,
    prior: pd.Series,
    path: str | os.PathLike,
    spread: pd.Series | None = None,
    title: str = "",
    references: dict[str, pd.Series] | None = None,
) -> None:
    """The optimum's weight per domain next to the token prior (and any other reference
    mixtures, e.g. a planted blend); error bars show the optimum's bootstrap sd when given."""
    plt = _pyplot()
    bars = {"token prior": prior, **(references or {})}
    order = optimum.add(prior, fill_value=0).sort_values(ascending=True).index
    rows = np.arange(len(order))
    height = 0.8 / (len(bars) + 1)
    figure, axes = plt.subplots(figsize=(7, 0.25 * (len(bars) + 1) * len(order) + 1.5))
    for i, (name, weights) in enumerate(bars.items()):
        offset = (i - len(bars) / 2) * height
        axes.barh(rows + offset, weights.reindex(order, fill_value=0), height=height, label=name)
    weights = optimum.reindex(order, fill_value=0).to_numpy()
    errors = None
    if spread is not None:  # a weight cannot go below 0: clip the lower bar there
        sd = spread.reindex(order, fill_value=0).to_numpy()
        errors = np.vstack([np.minimum(sd, weights), sd])
    axes.barh(
        rows + len(bars) / 2 * height,
        weights,
        height=height,
        xerr=errors,
        label="optimum" + (" (± bootstrap sd)" if spread is not None else ""),
    )
    axes.set_yticks(rows, list(order))
    axes.set_xlabel("mixture weight")
    axes.legend(loc="lower right")
    if title:
        axes.set_title(title, fontsize=10)
    _save(figure, path)
    plt.close(figure)


KIND_COLOURS = {"regmix": "tab:red", "baseline": "tab:blue", "heldout": "tab:grey"}


def plot_weight_distributions(
    mixtures: pd.DataFrame, prior: pd.Series, path: str | os.PathLike
) -> None:
    """Each domain's weight across the proxy mixtures (as RegMix's figure), prior marked; the
    points are coloured by the round that proposed them."""
    plt = _pyplot()
    domains = list(prior.sort_values().index)
    figure, axes = plt.subplots(figsize=(7, 0.4 * len(domains) + 1.5))
    values = [mixtures[WEIGHT + d].to_numpy() for d in domains]
    axes.boxplot(values, vert=False, widths=0.6, showfliers=False)
    jitter = np.random.default_rng(0)
    rounds = mixtures["round"].to_numpy() if "round" in mixtures else np.ones(len(mixtures))
    for number in np.unique(rounds):
        chosen = rounds == number
        for row, weights in enumerate(values, start=1):
            axes.scatter(
                weights[chosen],
                row + jitter.uniform(-0.2, 0.2, int(chosen.sum())),
                s=6,
                alpha=0.6,
                color=f"C{int(number) - 1}",
                label=f"round {int(number)}" if row == 1 and len(np.unique(rounds)) > 1 else None,
            )
    axes.scatter(
        prior[domains],
        np.arange(1, len(domains) + 1),
        marker="|",
        s=300,
        color="black",
        label="token prior",
    )
    axes.set_yticks(np.arange(1, len(domains) + 1), domains)
    axes.set_xlabel("mixture weight")
    axes.set_title(f"{len(mixtures)} proxy mixtures", fontsize=10)
    axes.legend(loc="lower right")
    _save(figure, path)
    plt.close(figure)


def plot_final_losses(summary: pd.DataFrame, target: str, path: str | os.PathLike) -> None:
    """Final-scale target loss of every final model, best first, coloured by kind."""
    plt = _pyplot()
    rows = summary.dropna(subset=["target_loss"]).sort_values("target_loss", ascending=False)
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.5))
    colours = [KIND_COLOURS.get(k, "tab:grey") for k in rows["kind"]]
    axes.barh(np.arange(len(rows)), rows["target_loss"], color=colours)
    if rows["predicted_loss"].notna().any():
        axes.scatter(
            rows["predicted_loss"],
            np.arange(len(rows)),
            marker="x",
            color="black",
            label="regressor's prediction (proxy scale)",
            zorder=3,
        )
        axes.legend(loc="lower right")
    axes.set_yticks(np.arange(len(rows)), list(rows["run"]))
    low = np.nanmin(rows[["target_loss", "predicted_loss"]].to_numpy())
    high = np.nanmax(rows[["target_loss", "predicted_loss"]].to_numpy())
    axes.set_xlim(low - 0.1 * (high - low), high + 0.05 * (high - low))
    axes.set_xlabel(f"final-model {target} loss (lower is better)")
    _save(figure, path)
    plt.close(figure)


def plot_loss_curves(
    losses: pd.DataFrame, target_weights: dict[str, float], path: str | os.PathLike
) -> None:
    """Validation target loss against training tokens for each final model."""
    from regmix.report.summary import kind_of  # here, not at the top: summary loads scipy

    plt = _pyplot()
    weight = losses["domain"].map(target_weights)
    curves = (
        losses.assign(weighted=losses["loss"] * weight)
        .dropna(subset=["weighted"])
        .groupby(["run", "tokens"], as_index=False)["weighted"]
        .sum()
    )
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for run, curve in curves.groupby("run"):
        kind = kind_of(run)
        # each baseline keeps a colour of its own, so that the legend tells them apart
        style = {} if kind == "baseline" else {"color": KIND_COLOURS[kind]}
        axes.plot(
            curve["tokens"],
            curve["weighted"],
            label=None if kind == "heldout" else run,
            linewidth=2.5 if run == "regmix" else 1.2,
            alpha=0.5 if kind == "heldout" else 1,
            **style,
        )
    axes.set_xlabel("training tokens")
    axes.set_ylabel("target validation loss")
    axes.set_title("final models (grey: held-out random mixtures)", fontsize=10)
    axes.legend()
    _save(figure, path)
    plt.close(figure)


FIGURES = ("weights.png", "cv.png", "optimum.png", "final_losses.png", "loss_curves.png")


def write_report_figures(
    proxy_mixtures: str | os.PathLike,
    stats: str | os.PathLike,
    fit_dir: str | os.PathLike,
    optimum: str | os.PathLike,
    summary: str | os.PathLike,
    final_losses: list[str | os.PathLike],
    target: str,
    out_dir: str | os.PathLike,
    planted: str | os.PathLike | None = None,
) -> list[Path]:
    """Draw every report figure (FIGURES) into out_dir from the workflow's artefacts."""
    from regmix.data.stats import full_train_tokens, read_stats
    from regmix.search.mixtures import read_planted, token_prior, weights_from_yaml
    from regmix.search.regression import CV_FILE, METRICS_FILE
    from regmix.search.runs import parse_target

    out_dir = Path(out_dir)
    prior = token_prior(full_train_tokens(read_stats(stats)))
    domains = list(prior.index)
    plot_weight_distributions(read_table(proxy_mixtures, ["run"]), prior, out_dir / FIGURES[0])

    metrics = json.loads((Path(fit_dir) / METRICS_FILE).read_text())
    plot_cv(read_table(Path(fit_dir) / CV_FILE), metrics, out_dir / FIGURES[1])

    simulation = read_yaml(optimum)
    best = weights_from_yaml(simulation, str(optimum), domains)
    spread = simulation.get("stability", {}).get("weight_std")
    references = {}
    if planted is not None:
        references["planted blend"] = read_planted(planted, domains)
    plot_optimum(
        best,
        prior,
        out_dir / FIGURES[2],
        pd.Series(spread) if spread else None,
        f"{simulation.get('model', '')} optimum for {target}",
        references,
    )

    table = read_table(summary, ["run", "kind", "target_loss", "predicted_loss"])
    plot_final_losses(table, target, out_dir / FIGURES[3])

    losses = pd.concat([read_table(p) for p in final_losses], ignore_index=True)
    weights = parse_target(target, sorted(losses["domain"].unique()), "final losses").weights
    plot_loss_curves(losses, weights, out_dir / FIGURES[4])
    return [out_dir / name for name in FIGURES]
