"""Did the chosen mixture make a better model on the benchmarks? The summary's downstream
section and its figure.

Scores are each task's headline metric (regmix.evaluation.downstream) ± lm-eval's standard
error, a group's (MMLU) as lm-eval aggregates it over its subtasks; the average weights the
scored tasks and groups equally. RegMix against a baseline is a paired
comparison on the same examples, bootstrapped, so the interval and P(regmix better) account for
how few examples a task has. The rank correlation of target loss and downstream average says
whether the loss we optimised tracks the benchmarks across the final models.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from regmix.evaluation.continuation import describe
from regmix.evaluation.downstream import (
    example_weights,
    headline,
    paired_difference,
    read_samples,
    sample_metrics,
)
from regmix.files import atomic_path, read_table

OPTIMUM = "regmix"
BASELINES = ("prior", "uniform", "planted")


@dataclass(frozen=True)
class DownstreamReport:
    scores: pd.DataFrame
    """model, task, metric, value, stderr: each task's headline metric, plus task `average`."""
    comparisons: pd.DataFrame
    """baseline, difference, lower, upper, p_better: regmix − baseline on the same examples."""
    spearman: float | None
    """Rank correlation of target loss and downstream average across the final models."""
    spearman_p: float | None
    n_models: int
    notes: tuple[str, ...] = ()
    """What a task measures, for tasks that say (regmix's continuation task)."""


def average_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Each model's mean over tasks; its stderr treats the tasks' errors as independent."""
    grouped = scores.groupby("model")
    return pd.DataFrame(
        {
            "model": list(grouped.groups),
            "task": "average",
            "metric": "mean",
            "value": grouped["value"].mean().to_numpy(),
            "stderr": grouped["stderr"].apply(lambda s: np.sqrt((s**2).sum()) / len(s)).to_numpy(),
        }
    )


def downstream_report(
    table: pd.DataFrame,
    samples: dict[str, Path],
    summary: pd.DataFrame | None,
    notes: tuple[str, ...] = (),
) -> DownstreamReport:
    """Scores, paired comparisons (from each model's samples.jsonl) and the loss ↔ score rank
    correlation (from summary.parquet's target_loss)."""
    scores = headline(table)[["model", "task", "metric", "value", "stderr"]]
    scores = pd.concat([scores, average_scores(scores)], ignore_index=True)
    metrics = sample_metrics(table)
    per_example = {model: read_samples(path, metrics) for model, path in samples.items()}
    rows = []
    if OPTIMUM in per_example:
        ours = per_example[OPTIMUM]
        weights = example_weights(table, OPTIMUM, set(ours.task))
        for baseline in BASELINES:
            if baseline in per_example:
                diff = paired_difference(ours, per_example[baseline], weights)
                rows.append({"baseline": baseline, **diff})
    comparisons = pd.DataFrame(
        rows, columns=["baseline", "difference", "lower", "upper", "p_better"]
    )
    rho = p = None
    averages = scores[scores.task == "average"].set_index("model")["value"]
    if summary is not None:
        losses = summary.set_index("run")["target_loss"].reindex(averages.index).dropna()
        if len(losses) >= 3:
            result = spearmanr(losses, averages.loc[losses.index])
            rho, p = float(result.statistic), float(result.pvalue)
    return DownstreamReport(scores, comparisons, rho, p, len(averages), notes)


def downstream_lines(report: DownstreamReport) -> list[str]:
    """The summary's markdown section."""
    scores = report.scores
    tasks = [t for t in dict.fromkeys(scores.task) if t != "average"] + ["average"]
    metric = {t: scores.loc[scores.task == t, "metric"].iloc[0] for t in tasks}
    lines = [
        "## Downstream (lm-eval)",
        "",
        "Each task's headline metric ± standard error (a group's as lm-eval aggregates its "
        "subtasks); `average` weights these columns equally.",
        "",
        *(f"- {note}" for note in report.notes),
        *([""] if report.notes else []),
        "| model | " + " | ".join(f"{t} ({metric[t]})" for t in tasks) + " |",
        "|" + "---|" * (len(tasks) + 1),
    ]
    table = scores.set_index(["model", "task"])
    models = sorted(set(scores.model), key=lambda m: (m != OPTIMUM, m not in BASELINES, m))
    for model in models:
        cells = []
        for task in tasks:
            if (model, task) not in table.index:
                cells.append("n/a")
                continue
            row = table.loc[(model, task)]
            cells.append(f"{row.value:.3f} ± {row.stderr:.3f}")
        lines.append(f"| `{model}` | " + " | ".join(cells) + " |")
    if len(report.comparisons):
        lines += [
            "",
            "RegMix against each baseline on the same examples (the per-example difference, "
            "weighted as `average` weighs them; 95% bootstrap interval, stratified by task):",
            "",
            "| baseline | regmix − baseline | 95% interval | P(regmix better) |",
            "|---|---|---|---|",
        ]
        for row in report.comparisons.itertuples():
            lines.append(
                f"| `{row.baseline}` | {row.difference:+.3f} | "
                f"[{row.lower:+.3f}, {row.upper:+.3f}] | {row.p_better:.2f} |"
            )
    lines.append("")
    if report.spearman is None:
        lines.append("- target loss ↔ downstream average: too few final models to rank")
    else:
        lines.append(
            f"- Spearman(target loss, downstream average) over {report.n_models} final models: "
            f"{report.spearman:+.3f} (p = {report.spearman_p:.3f}; negative: a lower loss "
            "goes with a higher score, as optimising the loss assumes)"
        )
    return [*lines, ""]


def plot_downstream(
    report: DownstreamReport, summary: pd.DataFrame | None, path: str | os.PathLike
) -> None:
    """Left: each model's downstream average ± stderr; right: against its target loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    averages = report.scores[report.scores.task == "average"].sort_values("value")
    colours = [
        "tab:red" if m == OPTIMUM else "tab:blue" if m in BASELINES else "tab:grey"
        for m in averages.model
    ]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.barh(averages.model, averages.value, xerr=averages.stderr, color=colours, capsize=3)
    left.set_xlabel("downstream average (headline metric) ± stderr")
    left.set_title("Downstream score per final model")
    if summary is not None:
        losses = summary.set_index("run")["target_loss"]
        x = losses.reindex(averages.model).to_numpy()
        right.errorbar(x, averages.value, yerr=averages.stderr, fmt="none", ecolor="lightgrey")
        right.scatter(x, averages.value, c=colours)
        for model, xi, yi in zip(averages.model, x, averages.value, strict=True):
            right.annotate(model, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        rho = "n/a" if report.spearman is None else f"{report.spearman:+.2f}"
        right.set_title(f"Target loss vs downstream (Spearman {rho})")
        right.set_xlabel("final target loss")
        right.set_ylabel("downstream average")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)


def read_downstream(
    downstream: str | os.PathLike, samples: list[str | os.PathLike], summary: pd.DataFrame | None
) -> DownstreamReport:
    """The report from downstream.parquet and `<model>/eval/samples.jsonl` files."""
    folders = {Path(s).parent.parent.name: Path(s).parent for s in samples}
    notes = task_notes(next(iter(folders.values()))) if folders else ()
    return downstream_report(read_table(downstream), folders, summary, notes)


def task_notes(eval_dir: Path) -> tuple[str, ...]:
    """What each task measures, for the tasks whose YAML says it in its `metadata` (as lm-eval
    records the configs in results.json): the continuation task's split, domains and size."""
    path = eval_dir / "results.json"
    configs = json.loads(path.read_text()).get("configs", {}) if path.is_file() else {}
    return tuple(
        note for name, config in sorted(configs.items()) if (note := describe(name, config))
    )
