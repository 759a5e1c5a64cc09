"""Are the regressor's 95% intervals honest? Each later round checks them.

Round r's mixtures are proposed by a regressor fitted on the runs of rounds < r, so its
predictions for them are made before they are trained: the proposing job records, per
proposed run, its predictive distribution and 95% interval (`interval_record`). Once the
round has trained, each run's measured target loss checks the interval given for it
(`interval_checks`): none of those runs was in the regressor's training set.

The intervals' width is rescaled by one factor on the predictive standard deviation
(`interval_scale`): the 95th percentile of held-out standardised errors |z| over the
interval's half-width. Held out means either the checks of earlier rounds, where there are
at least `MIN_CHECKS`, or else the regressor's own cross-validation (`cross_validated_z`:
each run predicted by a refit on the other folds). The second matters: fitted on the 32 runs
of a first round, the GP's marginal likelihood is confident where it should not be; replayed
on RegMix's published runs its uncalibrated intervals held 45% (Pile-CC) and 60% (mean) of
the later rounds' runs (README). The percentile rather than split-conformal's rank: with
fewer than 39 errors that rank is the largest of them, and refits on four fifths of the runs
err more than the full fit already.

A proposer calibrates its record on what came before it, and `regmix fit` calibrates the
fitted regressor on every check (or, with too few, on its cross-validation: the same refits
that give its CV metrics, `regmix.search.cross_validation.held_out`), so every
interval a person reads (the optimum's, the final models') carries the correction, and every
coverage reported was measured on runs that the correction had not seen.

The checks lie where later rounds sample, near the optimum: that is where the recommended
mixture's interval is used. Mixtures far from every run (marked extrapolated) are not what
they calibrate.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from regmix.files import read_table
from regmix.search.cross_validation import fold_ids, held_out, predictive
from regmix.search.regressors import Regressor
from regmix.search.runs import STATUS_OK, Target

LEVEL = 0.95
Z_95 = 1.959964
"""The central 95% interval is ± this many standard deviations."""
MIN_CHECKS = 5
"""Fewer held-out errors than this leave the intervals as fitted: one or two runs say little."""
CV_FOLDS = 5
MIN_CV_RUNS = 2 * CV_FOLDS
"""Fewer runs than this are not split to calibrate on: refits on a handful of runs err wildly
(on the tiny test sweep's 6 runs, by a factor of ~27,000)."""
BASES = ("checks", "cross-validation", "as fitted")
"""What an interval's factor rests on: earlier rounds' checks, the regressor's own
cross-validation (before `MIN_CHECKS` checks exist), or nothing (too few runs for either)."""
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
`interval_scale`, fitted on `checks` earlier checks or, where its `basis` says
`cross-validation`, on the proposer's own cross-validation) and the predictive distribution
it came from, uncalibrated: normal with `mean` and `std` on the log-loss scale when
`log_scale`, else on the loss scale. `basis` (`BASES`) came later: an older record's follows
from `checks`."""


def interval_record(
    regressor: Regressor,
    runs: list[str],
    weights: np.ndarray,
    round_number: int | None,
    scale: float,
    checks: int,
    basis: str = "checks",
) -> pd.DataFrame:
    """What a proposer promises for the runs it proposes (`RECORD_COLUMNS` and `basis`)."""
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
            "basis": basis,
        },
        columns=[*RECORD_COLUMNS, "basis"],
    )


def read_records(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """Interval records of several rounds as one table."""
    tables = [read_table(p, RECORD_COLUMNS) for p in paths]
    if not tables:
        return pd.DataFrame(columns=[*RECORD_COLUMNS, "basis"])
    records = pd.concat(tables, ignore_index=True)
    if "basis" not in records:
        records["basis"] = None
    unknown = records["basis"].isna()
    as_fitted = records["checks"] < MIN_CHECKS
    records.loc[unknown, "basis"] = np.where(as_fitted[unknown], "as fitted", "checks")
    return records


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
    """The factor on the predictive standard deviation that puts the 95th percentile of
    held-out standardised errors on the interval's edge; None (leave the intervals as fitted)
    with fewer than `MIN_CHECKS` of them."""
    scores = np.abs(np.asarray(z, dtype=float))
    scores = scores[np.isfinite(scores)]
    if len(scores) < MIN_CHECKS:
        return None
    return max(float(np.quantile(scores, LEVEL)) / Z_95, 1e-3)


def cross_validated_z(
    regressor: Regressor, weights: np.ndarray, target: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Standardised errors of each run under a refit on the other folds' runs (uncalibrated);
    empty with too few runs to split."""
    if len(target) < MIN_CV_RUNS:
        return np.empty(0)
    return held_out(regressor, weights, target, fold_ids(len(target), CV_FOLDS, seed)).z


def held_out_scale(
    checks: pd.DataFrame, cross_validation: Callable[[], np.ndarray]
) -> tuple[float | None, str]:
    """The factor (`interval_scale`) and its basis (`BASES`): on the checks when there are
    `MIN_CHECKS` of them, else on the errors `cross_validation` gives; None, "as fitted" when
    neither has enough."""
    scale = interval_scale(checks["z"].to_numpy())
    if scale is not None:
        return scale, "checks"
    z = np.asarray(cross_validation(), dtype=float)
    scale = interval_scale(z) if len(z) >= MIN_CV_RUNS else None
    return (scale, "cross-validation") if scale is not None else (None, "as fitted")


def scale_from_records(
    records: pd.DataFrame,
    runs: pd.DataFrame,
    target: Target,
    cross_validation: Callable[[], np.ndarray] = lambda: np.empty(0),
) -> tuple[float, int, str]:
    """The factor for new intervals (1 when nothing held out says more), how many of the
    earlier records' runs checked it, and its basis (`held_out_scale`)."""
    checks = interval_checks(records, runs, target)
    scale, basis = held_out_scale(checks, cross_validation)
    return (scale if scale is not None else 1.0), len(checks), basis


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
            "basis": str(group["basis"].iloc[0]),
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
    regressor: Regressor,
    records: pd.DataFrame,
    runs: pd.DataFrame,
    target: Target,
    cross_validation: Callable[[], np.ndarray],
) -> dict[str, Any]:
    """Check the recorded intervals against the runs and fit the factor on every check, or,
    with fewer than `MIN_CHECKS`, on the standardised errors of the regressor's
    cross-validation over the runs it was fitted on (`cross_validation`, called only then);
    set it on the regressor when it has intervals to rescale and the checks are its own
    kind's (a `gp` proposer's checks say nothing about another model's intervals). Returns the
    report for metrics.json."""
    checks = interval_checks(records, runs, target)
    rescalable = hasattr(regressor, "interval_scale")
    scale, basis = held_out_scale(checks, cross_validation if rescalable else lambda: [])
    report = calibration_report(checks, scale)
    same = basis == "cross-validation" or set(checks["model"]) == {regressor.name}
    report["applied"] = bool(scale is not None and same and rescalable)
    report["basis"] = basis if report["applied"] else "as fitted"
    if report["applied"]:
        regressor.interval_scale = scale
    return report
