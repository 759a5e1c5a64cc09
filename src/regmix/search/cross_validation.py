"""Cross-validation, shared by every CV in the package (`regmix fit`'s metrics, the intervals'
calibration): folds, and each run predicted by a refit on the other folds.

A regressor with a posterior also gives each held-out run's predictive distribution
(`predictive`), and so its standardised error, which calibrates the intervals
(`regmix.search.calibration`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from regmix.errors import RegmixError
from regmix.parallel import parallel_map
from regmix.search.regressors import GaussianProcess, Regressor


def fold_ids(n_runs: int, folds: int, seed: int) -> np.ndarray:
    """Which fold holds out each run; the same (n_runs, folds, seed) gives the same folds for
    every model, so their CV figures compare like with like."""
    from sklearn.model_selection import KFold

    if folds < 2:
        raise RegmixError(f"--folds: need at least 2 (got {folds})")
    if n_runs < folds:
        raise RegmixError(f"{n_runs} usable run(s) cannot be split into {folds} folds")
    ids = np.empty(n_runs, dtype=int)
    for fold, (_, held_out) in enumerate(
        KFold(folds, shuffle=True, random_state=seed).split(np.zeros(n_runs))
    ):
        ids[held_out] = fold
    return ids


def predictive(regressor: Regressor, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """A new run's predictive distribution, uncalibrated: mean, standard deviation, and
    whether they are on the log-loss scale. Only regressors with a posterior have one."""
    if isinstance(regressor, GaussianProcess):
        std = regressor.latent_std(weights, observation=True, calibrated=False)
        return regressor.latent_mean(weights), std, regressor.log_target
    if hasattr(regressor, "predict_std"):
        return regressor.predict(weights), regressor.predict_std(weights, calibrated=False), False
    raise RegmixError(f"{regressor.name}: no predictive distribution to give intervals from")


def standardised_errors(fitted: Regressor, weights: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Each run's error in units of the fitted regressor's uncalibrated predictive standard
    deviation, on the scale it predicts on."""
    mean, std, log_scale = predictive(fitted, weights)
    return ((np.log(actual) if log_scale else actual) - mean) / std


@dataclass(frozen=True)
class HeldOut:
    """What cross-validation measured: each run predicted by a fresh model fitted on the other
    folds."""

    predictions: np.ndarray
    z: np.ndarray
    """Each run's standardised error under that model's uncalibrated predictive distribution
    (`regmix.search.calibration`); empty for a regressor without intervals."""


def held_out(
    model: Regressor, weights: np.ndarray, target: np.ndarray, folds: np.ndarray, threads: int = 1
) -> HeldOut:
    """Out-of-fold predictions, and standardised errors where the model gives intervals: one
    refit per fold serves both the CV metrics and the intervals' calibration."""
    with_intervals = hasattr(model, "interval_scale")

    def held_out_fold(fold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        train, test = folds != fold, folds == fold
        fitted = model.unfitted().fit(weights[train], target[train])
        z = standardised_errors(fitted, weights[test], target[test]) if with_intervals else None
        return test, fitted.predict(weights[test]), z

    predictions, z = np.empty(len(target)), np.empty(len(target) if with_intervals else 0)
    for test, predicted, errors in parallel_map(
        held_out_fold, sorted(set(folds.tolist())), threads
    ):
        predictions[test] = predicted
        if errors is not None:
            z[test] = errors
    return HeldOut(predictions, z)


def cross_validate(
    model: Regressor, weights: np.ndarray, target: np.ndarray, folds: np.ndarray, threads: int = 1
) -> np.ndarray:
    """Out-of-fold predictions (`held_out`)."""
    return held_out(model, weights, target, folds, threads).predictions
