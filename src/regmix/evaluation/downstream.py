"""The final models' downstream scores as one table, and how sure a comparison of them is.

`downstream.parquet` has one row per (model, task, metric): lm-eval's value and standard error,
and `group`, the entry the row's score counts toward as lm-eval scores it. A group with an
aggregate score (MMLU) stands for its subtasks at any depth: its subtasks' rows carry its name,
and only the rows whose `group` is their own `task` are the scores to read and average.
Comparisons pair models on the same examples (every model answers the same questions, so the
per-example differences cancel the questions' own difficulty) and bootstrap those differences.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from regmix.errors import RegmixError
from regmix.files import write_table

COLUMNS = ["model", "task", "metric", "value", "stderr", "samples", "group"]
PRIMARY_METRICS = ("acc", "acc_norm", "exact_match", "f1", "mcc", "word_perplexity")
"""A task's headline metric is the first of these it reports (the same for every model)."""


def _has_score(metrics: Mapping) -> bool:
    return any("," in key and isinstance(v, (int, float)) for key, v in metrics.items())


def scored_in(results: dict) -> dict[str, str]:
    """Each entry of lm-eval's `results` → the entry its score counts toward: the outermost
    group above it that reports a score (lm-eval aggregates a group over all its tasks, at any
    depth), else itself. A group without an aggregate reports no score of its own (only its
    name): its members then count on their own, as lm-eval's table shows them."""
    parents = {
        child: group
        for group, children in results.get("group_subtasks", {}).items()
        for child in children
    }
    entries = results.get("results", {})
    scored = {name for name, metrics in entries.items() if _has_score(metrics)}
    counted = {}
    for name in entries:
        top = node = name
        while node in parents:
            node = parents[node]
            top = node if node in scored else top
        counted[name] = top
    return counted


def results_rows(model: str, results: dict) -> list[dict]:
    """lm-eval's `results` section as rows: `acc,none` → metric `acc` (a filter other than
    `none` stays in the name: `exact_match,flexible-extract`)."""
    rows = []
    counts = results.get("n-samples", {})
    groups = scored_in(results)
    for task, metrics in results.get("results", {}).items():
        # a task's evaluated examples; a group's: the sum over its tasks (lm-eval's sample_len)
        samples = counts.get(task, {}).get("effective", metrics.get("sample_len", 0))
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
                    "samples": int(samples),
                    "group": groups[task],
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
    """Each model's headline score per scored entry (a task, or a group standing for its
    subtasks) and its stderr; subtasks of a scored group are left out."""
    scored = table[table.task == table.group]
    keep = [
        scored[(scored.task == t) & (scored.metric == primary_metric(scored, t))]
        for t in sorted(set(scored.task))
    ]
    return pd.concat(keep, ignore_index=True) if keep else table.iloc[:0]


def sample_metrics(table: pd.DataFrame) -> dict[str, str]:
    """The per-example score to read for each task: its scored entry's headline metric."""
    groups = dict(zip(table.task, table.group, strict=True))
    return {task: primary_metric(table, group) for task, group in groups.items()}


def example_weights(table: pd.DataFrame, model: str, tasks: set[str]) -> dict[str, float]:
    """How much each task in `tasks` (those with per-example records: lm-eval's leaf tasks)
    counts in `model`'s average over the scored entries; the weights sum to 1.

    Entries count equally. A group's tasks share its weight as lm-eval weighs them in the
    group's score: by their number of examples (`weight_by_size`) or equally. results.json
    does not say which, so the weighting that reproduces the group's own value is used.
    """
    rows = table[table.model == model]
    entries = sorted(set(rows.loc[rows.task == rows.group, "task"]))
    weights: dict[str, float] = {}
    for entry in entries:
        if entry in tasks:
            weights[entry] = 1.0
            continue
        metric = primary_metric(rows, entry)
        members = rows[(rows.group == entry) & rows.task.isin(tasks) & (rows.metric == metric)]
        if members.empty:
            continue
        value = rows.loc[(rows.task == entry) & (rows.metric == metric), "value"].iloc[0]
        sizes = members.samples.to_numpy(dtype=float)
        by_size = sizes / sizes.sum()
        equal = np.full(len(members), 1.0 / len(members))
        values = members.value.to_numpy()
        share = min((by_size, equal), key=lambda w: abs(float(w @ values) - value))
        weights.update(zip(members.task, share, strict=True))
    total = len(entries)
    return {task: weight / total for task, weight in weights.items()}


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
    ours: pd.DataFrame,
    theirs: pd.DataFrame,
    weights: Mapping[str, float] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Mean per-example score difference (ours − theirs) over the examples both answered, its
    95% bootstrap interval and P(ours better): the share of resamples with a positive mean, a
    tie counting half (two models that answer alike are a coin toss, not a loss).

    The difference is each task's mean difference weighted by `weights` (task → weight, as
    `example_weights` gives; default: tasks equally), so resampling is stratified by task.
    """
    both = ours.merge(theirs, on=["task", "doc_id"], suffixes=("_a", "_b"))
    if both.empty:
        return {"difference": np.nan, "lower": np.nan, "upper": np.nan, "p_better": np.nan}
    rng = np.random.default_rng(seed)
    means, observed, shares = [], [], []
    for task, group in both.groupby("task"):
        share = 1.0 if weights is None else weights.get(task, 0.0)
        if share == 0:
            continue
        diff = (group.score_a - group.score_b).to_numpy()
        shares.append(share)
        observed.append(diff.mean())
        picks = rng.integers(0, len(diff), size=(n_boot, len(diff)))
        means.append(diff[picks].mean(axis=1))
    shares = np.asarray(shares) / np.sum(shares)
    boot = shares @ np.asarray(means)
    lower, upper = np.quantile(boot, [0.025, 0.975])
    return {
        "difference": float(shares @ np.asarray(observed)),
        "lower": float(lower),
        "upper": float(upper),
        "p_better": float((boot > 0).mean() + 0.5 * (boot == 0).mean()),
    }
