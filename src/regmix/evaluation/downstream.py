"""The final models' downstream scores as one table, and how sure a comparison of them is.

`downstream.parquet` has one row per (model, task, metric): lm-eval's value and standard error.
Comparisons pair models on the same examples (every model answers the same questions, so the
per-example differences cancel the questions' own difficulty) and bootstrap those differences.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from regmix.errors import RegmixError
from regmix.files import write_table

COLUMNS = ["model", "task", "metric", "value", "stderr", "samples"]
PRIMARY_METRICS = ("acc", "acc_norm", "exact_match", "f1", "mcc", "word_perplexity")
"""A task's headline metric is the first of these it reports (the same for every model)."""


def results_rows(model: str, results: dict) -> list[dict]:
    """lm-eval's `results` section as rows: `acc,none` → metric `acc` (a filter other than
    `none` stays in the name: `exact_match,flexible-extract`)."""
    rows = []
    counts = results.get("n-samples", {})
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            name = metric if filt == "none" else f"{metric},{filt}"
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append(
                {
                    "model": model,
                    "task": task,
                    "metric": name,
                    "value": float(value),
                    "stderr": float(stderr) if isinstance(stderr, (int, float)) else np.nan,
                    "samples": int(counts.get(task, {}).get("effective", 0)),
                }
            )
    return rows


def collect_downstream(eval_dirs: list[str | os.PathLike], out: str | os.PathLike) -> pd.DataFrame:
    """One row per (model, task, metric) from `<model>/eval/results.json` folders."""
    rows = []
    for folder in map(Path, eval_dirs):
        path = folder / "results.json"
        if not path.is_file():
            raise RegmixError(f"{path}: no evaluation results (expected lm-eval's results.json)")
        rows += results_rows(folder.parent.name, json.loads(path.read_text()))
    table = pd.DataFrame(rows, columns=COLUMNS)
    write_table(table, out)
    return table


def primary_metric(table: pd.DataFrame, task: str) -> str:
    metrics = set(table.loc[table.task == task, "metric"])
    return next((m for m in PRIMARY_METRICS if m in metrics), min(metrics))


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """Each model's headline score per task (rows: models, columns: tasks) and its stderr."""
    keep = [
        table[(table.task == t) & (table.metric == primary_metric(table, t))]
        for t in sorted(set(table.task))
    ]
    return pd.concat(keep, ignore_index=True) if keep else table.iloc[:0]


def read_samples(eval_dir: str | os.PathLike, metrics: dict[str, str]) -> pd.DataFrame:
    """Per-example scores of one model: `task, doc_id, score` for each task's headline metric."""
    rows = []
    with open(Path(eval_dir) / "samples.jsonl") as f:
        for line in f:
            record = json.loads(line)
            metric = metrics.get(record["task"])
            if metric is not None and isinstance(record.get(metric), (int, float)):
                rows.append((record["task"], record["doc_id"], float(record[metric])))
    return pd.DataFrame(rows, columns=["task", "doc_id", "score"])


def paired_difference(
    ours: pd.DataFrame, theirs: pd.DataFrame, n_boot: int = 2000, seed: int = 0
) -> dict:
    """Mean per-example score difference (ours − theirs) over the examples both answered, its
    95% bootstrap interval and P(ours better): the share of resamples with a positive mean, a
    tie counting half (two models that answer alike are a coin toss, not a loss).

    The average over tasks weights each task equally, so resampling is stratified by task.
    """
    both = ours.merge(theirs, on=["task", "doc_id"], suffixes=("_a", "_b"))
    if both.empty:
        return {"difference": np.nan, "lower": np.nan, "upper": np.nan, "p_better": np.nan}
    rng = np.random.default_rng(seed)
    means, observed = [], []
    for _, group in both.groupby("task"):
        diff = (group.score_a - group.score_b).to_numpy()
        observed.append(diff.mean())
        picks = rng.integers(0, len(diff), size=(n_boot, len(diff)))
        means.append(diff[picks].mean(axis=1))
    boot = np.mean(means, axis=0)
    lower, upper = np.quantile(boot, [0.025, 0.975])
    return {
        "difference": float(np.mean(observed)),
        "lower": float(lower),
        "upper": float(upper),
        "p_better": float((boot > 0).mean() + 0.5 * (boot == 0).mean()),
    }
