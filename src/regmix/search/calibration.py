"""Are the regressor's 95% intervals honest? Each later round checks them.

Round r's mixtures are proposed by a regressor fitted on the runs of rounds < r, so its
predictions for them are made before they are trained: the proposing job records, per
proposed run, its predictive distribution and 95% interval (`interval_record`). Once the
round has trained, each run's measured target loss checks the interval given for it
(`interval_checks`): none of those runs was in the regressor's training set.

Where the checks show the intervals too narrow or too wide, their width is rescaled by one
factor on the predictive standard deviation (`interval_scale`): split-conformal on the
checks' standardised errors |z|, the factor that would have put the ⌈(n + 1)·0.95⌉-th
smallest of them on the interval's edge (the largest, below 39 checks). A proposer calibrates
its record with the checks of the rounds before it, and `regmix fit` calibrates the fitted
regressor with all of them, so every interval a person reads (the optimum's, the final
models') carries the correction, and every coverage reported was measured on runs that the
correction had not seen.

The checks lie where later rounds sample, near the optimum: that is where the recommended
mixture's interval is used. Mixtures far from every run (marked extrapolated) are not what
they calibrate.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd

from regmix.errors import RegmixError
from regmix.files import read_table
from regmix.search.regressors import GaussianProcess, Regressor
from regmix.search.runs import STATUS_OK, Target

LEVEL = 0.95
Z_95 = 1.959964
"""The central 95% interval is ± this many standard deviations."""
MIN_CHECKS = 5
"""Fewer checks than this leave the intervals as fitted: one or two runs say little."""
RECORD_COLUMNS = [
    "run",
    "round",
    "model",
    "prediction",
    "lower",
    "upper",
    "mean",
    "std",
    "log_scale",
    "interval_scale",
    "checks",
]
"""An interval record: the 95% interval as given (`lower`, `upper`, with the proposer's
`interval_scale`, fitted on `checks` earlier checks) and the predictive distribution it came
from, uncalibrated: normal with `mean` and `std` on the log-loss scale when `log_scale`, else
on the loss scale."""


def predictive(regressor: Regressor, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """A new run's predictive distribution, uncalibrated: mean, standard deviation, and
    whether they are on the log-loss scale. Only regressors with a posterior have one."""
    if isinstance(regressor, GaussianProcess):
        std = regressor.latent_std(weights, observation=True, calibrated=False)
        return regressor.latent_mean(weights), std, regressor.log_target
    if hasattr(regressor, "predict_std"):
        return regressor.predict(weights), regressor.predict_std(weights, calibrated=False), False
    raise RegmixError(f"{regressor.name}: no predictive distribution to give intervals from")


def interval_record(
    regressor: Regressor,
    runs: list[str],
    weights: np.ndarray,
    round_number: int | None,
    scale: float,
    checks: int,
) -> pd.DataFrame:
    """What a proposer promises for the runs it proposes (`RECORD_COLUMNS`)."""
    mean, std, log_scale = predictive(regressor, weights)
    lower, upper = mean - Z_95 * scale * std, mean + Z_95 * scale * std
    to_loss = np.exp if log_scale else (lambda v: v)
    return pd.DataFrame(
        {
            "run": runs,
            "round": round_number if round_number is not None else -1,
            "model": regressor.name,
            "prediction": regressor.predict(weights),
            "lower": to_loss(lower),
            "upper": to_loss(upper),
            "mean": mean,
            "std": std,
            "log_scale": log_scale,
            "interval_scale": scale,
            "checks": checks,
        },
        columns=RECORD_COLUMNS,
    )


def read_records(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """Interval records of several rounds as one table."""
    tables = [read_table(p, RECORD_COLUMNS) for p in paths]
    if not tables:
        return pd.DataFrame(columns=RECORD_COLUMNS)
    return pd.concat(tables, ignore_index=True)


def interval_checks(records: pd.DataFrame, runs: pd.DataFrame, target: Target) -> pd.DataFrame:
    """Each recorded run that has trained (status ok), with its measured target loss: `actual`,
    `z` (its standardised error under the uncalibrated predictive), `inside_fitted` (within
    the uncalibrated 95% interval) and `inside` (within the interval as recorded)."""
    measured = runs[(runs["status"] == STATUS_OK) & runs["run"].isin(records["run"])]
    actual = pd.Series(target.values(measured), index=measured["run"].to_numpy())
    checks = records[records["run"].isin(actual.index)].copy()
    checks["actual"] = checks["run"].map(actual).astype(float)
    value = np.where(checks["log_scale"], np.log(checks["actual"]), checks["actual"])
    checks["z"] = (value - checks["mean"]) / checks["std"]
    checks["inside_fitted"] = checks["z"].abs() <= Z_95
    checks["inside"] = (checks["lower"] <= checks["actual"]) & (checks["actual"] <= checks["upper"])
    return checks.reset_index(drop=True)


def interval_scale(z: np.ndarray) -> float | None:
    """Split-conformal factor on the predictive standard deviation from checks' standardised
    errors; None (leave the intervals as fitted) with fewer than `MIN_CHECKS` checks."""
    scores = np.sort(np.abs(np.asarray(z, dtype=float)))
    if len(scores) < MIN_CHECKS:
        return None
    rank = min(len(scores), math.ceil((len(scores) + 1) * LEVEL))
    return max(float(scores[rank - 1]) / Z_95, 1e-3)


def scale_from_records(
    records: pd.DataFrame, runs: pd.DataFrame, target: Target
) -> tuple[float, int]:
    """The factor for new intervals from earlier records checked against the runs (1 when
    there are too few checks), and how many checks it rests on."""
    checks = interval_checks(records, runs, target)
    scale = interval_scale(checks["z"].to_numpy())
    return (scale if scale is not None else 1.0), len(checks)


def calibration_report(checks: pd.DataFrame, scale: float | None) -> dict[str, Any]:
    """Coverage per round and overall, for metrics.json and the summary: `coverage_fitted`
    of the intervals as the regressor gave them, `coverage` as recorded (each round
    calibrated on the rounds before it), and the factor fitted on every check."""

    def share(mask: pd.Series) -> float | None:
        return round(float(mask.mean()), 4) if len(mask) else None

    rounds = {
        int(number): {
            "checks": len(group),
            "coverage_fitted": share(group["inside_fitted"]),
            "coverage": share(group["inside"]),
            "interval_scale": round(float(group["interval_scale"].iloc[0]), 4),
        }
        for number, group in checks.groupby("round")
    }
    return {
        "level": LEVEL,
        "checks": len(checks),
        "coverage_fitted": share(checks["inside_fitted"]),
        "coverage": share(checks["inside"]),
        "interval_scale": round(scale, 4) if scale is not None else None,
        "model": str(checks["model"].iloc[0]) if len(checks) else None,
        "rounds": rounds,
    }


def calibrate(
    regressor: Regressor, records: pd.DataFrame, runs: pd.DataFrame, target: Target
) -> dict[str, Any]:
    """Check the recorded intervals against the runs, fit the factor on every check, and set
    it on the regressor when the records are its own kind's (a `gp` proposer's checks say
    nothing about another model's intervals); returns the report for metrics.json."""
    checks = interval_checks(records, runs, target)
    scale = interval_scale(checks["z"].to_numpy())
    report = calibration_report(checks, scale)
    same = set(checks["model"]) == {regressor.name}
    report["applied"] = bool(scale is not None and same and hasattr(regressor, "interval_scale"))
    if report["applied"]:
        regressor.interval_scale = scale
    return report
