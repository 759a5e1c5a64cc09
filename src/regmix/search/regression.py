"""Regress a target loss on mixture weights: cross-validation, and the fitted-model folder
that `predict`, `simulate` and `propose` load. The models themselves are in
`regmix.search.regressors`.

Hyper-parameters are chosen on the runs a model is fitted on and nowhere else, so under
`cross_validate` each fold tunes on its own training runs and the out-of-fold figures are
honest.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from regmix import __version__
from regmix.errors import RegmixError
from regmix.files import atomic_path, read_table, write_json, write_table
from regmix.parallel import available_threads
from regmix.search.cross_validation import fold_ids, held_out
from regmix.search.mixtures import (
    WEIGHT,
    mixture_domains,
    mixture_table,
)
from regmix.search.regressors import DEFAULT_MODEL, Regressor, make_model, predict_weights
from regmix.search.runs import (
    Target,
    loss_domains,
    parse_target,
    read_runs,
    status_counts,
    usable_runs,
)

MODEL_FILE = "model.joblib"
SPEC_FILE = "model.json"
TRAIN_FILE = "train.parquet"
CV_FILE = "cv.parquet"
METRICS_FILE = "metrics.json"

# --- cross-validation -----------------------------------------------------------------------


TOP_SHARE = 0.25
"""The best quarter of mixtures: where ranking decides which mixture is chosen."""


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _spearman(actual: np.ndarray, predicted: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(actual) < 3 or np.ptp(predicted) == 0 or np.ptp(actual) == 0:
        return None
    return _finite(spearmanr(actual, predicted).statistic)


def ranking_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    """How well predictions rank mixtures the way the method uses them: Spearman over all of
    them; Spearman within the best quarter (by actual loss), where the choice is made; and
    the regret of the predicted best, its actual loss minus the best actual loss (0: the
    predictions pick the best mixture there is)."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    best = actual <= np.quantile(actual, TOP_SHARE) if len(actual) else actual.astype(bool)
    return {
        "spearman": _spearman(actual, predicted),
        "spearman_top_quarter": _spearman(actual[best], predicted[best]),
        "regret": _finite(actual[np.argmin(predicted)] - actual.min()) if len(actual) else None,
    }


def cv_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    """Ranking figures (`ranking_metrics`), Pearson and MSE of out-of-fold predictions."""
    from scipy.stats import pearsonr

    constant = np.ptp(predicted) == 0 or np.ptp(actual) == 0
    return {
        **ranking_metrics(actual, predicted),
        "pearson": None if constant else _finite(pearsonr(actual, predicted).statistic),
        "mse": _finite(np.mean((predicted - actual) ** 2)),
    }


# --- fitting and the model folder -----------------------------------------------------------


@dataclass
class TrainingData:
    """The usable runs of a runs table, reduced to what a regressor sees."""

    runs: list[str]
    domains: list[str]
    weights: np.ndarray
    target: np.ndarray
    excluded: dict[str, int]
    """Runs left out, counted by status."""


def training_data(runs_path: str | os.PathLike, target: str) -> tuple[TrainingData, Target]:
    """Read a runs table, keep the runs with status ok, and compute the target for them."""
    return training_data_from(read_runs(runs_path), target, str(runs_path))


def training_data_from(
    runs: pd.DataFrame, target: str, source: str = "runs"
) -> tuple[TrainingData, Target]:
    """The usable runs of a runs table (status ok) and the target computed for them."""
    parsed = parse_target(target, loss_domains(runs), source)
    usable, excluded = usable_runs(runs)
    if usable.empty:
        raise RegmixError(f"{source}: no run has status 'ok' ({status_counts(excluded)})")
    domains = mixture_domains(runs)
    data = TrainingData(
        runs=usable["run"].tolist(),
        domains=domains,
        weights=usable[[WEIGHT + d for d in domains]].to_numpy(dtype=float),
        target=parsed.values(usable, source),
        excluded={str(k): int(v) for k, v in excluded.items()},
    )
    return data, parsed


@dataclass
class FittedModel:
    """A fitted regressor with what it was fitted on: the folder `regmix fit` writes."""

    regressor: Regressor
    spec: dict[str, Any]
    train: pd.DataFrame
    """`run`, `weight.<domain>`..., `target` of the runs it was fitted on."""

    @property
    def domains(self) -> list[str]:
        return list(self.spec["domains"])

    @cached_property
    def train_weights(self) -> np.ndarray:
        return self.train[[WEIGHT + d for d in self.domains]].to_numpy(dtype=float)

    def predict(self, weights: np.ndarray, threads: int = 1) -> np.ndarray:
        return predict_weights(self.regressor, weights, threads)


def _versions() -> dict[str, str]:
    import lightgbm
    import scipy
    import sklearn

    return {
        "regmix": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "lightgbm": lightgbm.__version__,
    }


def fit_model(
    runs_path: str | os.PathLike,
    target: str,
    model: str = DEFAULT_MODEL,
    out: str | os.PathLike = "results/regression",
    folds: int = 5,
    seed: int = 0,
    threads: int | None = None,
    checks: list[str | os.PathLike] = (),
) -> dict[str, Any]:
    """`regmix fit`: cross-validate, fit on all usable runs, write the model folder; returns
    the metrics. Everything is computed before anything is written. `checks`: interval
    records of later rounds (`regmix propose --intervals-out`), which calibrate the fitted
    model's intervals (`regmix.search.calibration`)."""
    import joblib

    from regmix.search.calibration import calibrate, read_records

    threads = threads or available_threads()
    runs = read_runs(runs_path)
    data, parsed = training_data_from(runs, target, str(runs_path))
    regressor = make_model(model, seed)
    ids = fold_ids(len(data.runs), folds, seed)

    started = time.perf_counter()
    held = held_out(regressor, data.weights, data.target, ids, threads)
    cv_seconds = time.perf_counter() - started
    started = time.perf_counter()
    regressor.fit(data.weights, data.target)
    fit_seconds = time.perf_counter() - started
    calibration = None
    if checks or hasattr(regressor, "interval_scale"):
        records = read_records(list(checks))
        calibration = calibrate(regressor, records, runs, parsed, lambda: held.z)

    metrics = {
        "model": model,
        "target": parsed.text,
        **cv_metrics(data.target, held.predictions),
        "n_runs": len(data.runs),
        "n_excluded": sum(data.excluded.values()),
        "excluded": data.excluded,
        "folds": folds,
        "seed": seed,
        "target_weights": parsed.weights,
        "hyperparameters": regressor.hyperparameters(),
        **({"calibration": calibration} if calibration is not None else {}),
        "cv_seconds": round(cv_seconds, 3),
        "fit_seconds": round(fit_seconds, 3),
    }
    spec = {
        "model": model,
        "summary": regressor.summary,
        "target": parsed.text,
        "target_weights": parsed.weights,
        "domains": data.domains,
        "n_runs": len(data.runs),
        "seed": seed,
        "versions": _versions(),
    }
    train = mixture_table(data.runs, data.domains, data.weights)
    train["target"] = data.target
    cv = pd.DataFrame(
        {"run": data.runs, "fold": ids, "actual": data.target, "prediction": held.predictions}
    )

    out = Path(out)
    with atomic_path(out / MODEL_FILE) as tmp:
        joblib.dump(regressor, tmp)
    write_table(train, out / TRAIN_FILE)
    write_table(cv, out / CV_FILE)
    write_json(spec, out / SPEC_FILE)
    write_json(metrics, out / METRICS_FILE)
    return metrics


def load_model(model_dir: str | os.PathLike) -> FittedModel:
    """Load a folder written by `fit_model`, failing in one line if it is not one."""
    import joblib

    model_dir = Path(model_dir)
    for name in (MODEL_FILE, SPEC_FILE, TRAIN_FILE):
        if not (model_dir / name).is_file():
            raise RegmixError(f"{model_dir}: not a fitted model folder (no {name}; run regmix fit)")
    spec = json.loads((model_dir / SPEC_FILE).read_text())
    built_with = spec.get("versions", {})
    now = _versions()
    for package in ("scikit-learn", "lightgbm"):
        if built_with.get(package) not in (None, now[package]):
            print(
                f"regmix: warning: {model_dir} was fitted with {package} {built_with[package]}, "
                f"loading with {now[package]}",
                file=sys.stderr,
            )
    try:
        regressor = joblib.load(model_dir / MODEL_FILE)
    except Exception as exc:  # unpickling raises anything from EOFError to AttributeError
        reason = f"{exc.__class__.__name__}: {exc}"
        raise RegmixError(f"{model_dir / MODEL_FILE}: cannot load ({reason})") from exc
    train = read_table(model_dir / TRAIN_FILE)
    return FittedModel(regressor, spec, train)
