"""The region of the simplex that the proxy runs cover, and whether an optimum lies in it.

A regressor is only trusted where proxy runs were trained: a mixture is inside the support when
no domain exceeds the largest weight any run gave it and its Hellinger distance to the nearest
run is at most the support radius.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from regmix.errors import RegmixError
from regmix.parallel import KERNEL_BLOCK, squared_distances


def nearest_distance(
    weights: np.ndarray, runs: np.ndarray, exclude_self: bool = False, block: int | None = None
) -> np.ndarray:
    """Hellinger distance from each mixture to its nearest run (0 = same mixture, 1 = disjoint).

    With `exclude_self`, `weights` must be `runs` and each run's own row is skipped.
    """
    a, b = np.sqrt(weights), np.sqrt(runs)
    block = block or max(256, KERNEL_BLOCK // len(b))
    out = np.empty(len(a))
    for start in range(0, len(a), block):
        d2 = squared_distances(a[start : start + block], b)
        if exclude_self:
            rows = np.arange(len(d2))
            d2[rows, start + rows] = np.inf
        out[start : start + block] = np.sqrt(d2.min(axis=1) / 2.0)
    return out


@dataclass
class Support:
    """The region of the simplex that the proxy runs cover."""

    runs: np.ndarray
    """Weights of the runs the model was fitted on (runs × domains)."""
    max_weight: np.ndarray
    """The largest weight any run gave each domain."""
    radius: float
    """Largest Hellinger distance to the nearest run that still counts as covered."""

    @classmethod
    def of_runs(cls, runs: np.ndarray, quantile: float) -> Support:
        if len(runs) < 2:
            raise RegmixError("simulate: the support guard needs at least 2 runs")
        spacing = nearest_distance(runs, runs, exclude_self=True)
        return cls(runs, runs.max(axis=0), float(np.quantile(spacing, quantile)))

    def beyond_runs(self, weights: np.ndarray) -> np.ndarray:
        """Rows × domains mask: weight above anything a run used (1e-9 absorbs rounding)."""
        return weights > self.max_weight + 1e-9

    def contains(self, weights: np.ndarray, nearest: np.ndarray | None = None) -> np.ndarray:
        """Mask of the rows inside the support. `nearest`: the rows' `nearest_distance` to the
        runs, where the caller has computed it already."""
        inside = ~self.beyond_runs(weights).any(axis=1)
        if nearest is not None:
            return inside & (nearest <= self.radius)
        if inside.any():
            inside[inside] = nearest_distance(weights[inside], self.runs) <= self.radius
        return inside


def outside_support(report: dict[str, Any]) -> bool:
    """Whether the reported optimum lies beyond what the proxy runs cover."""
    where = report["support"]["optimum"]
    return bool(where["beyond_runs"]) or (where["radius_ratio"] or 0) > 1


def warn_if_outside(report: dict[str, Any]) -> None:
    if outside_support(report):
        where = report["support"]["optimum"]
        print(
            "regmix simulate: warning: the optimum lies outside the proxy runs' support "
            f"(distance {where['radius_ratio']}× the radius; domains beyond any run: "
            f"{', '.join(where['beyond_runs']) or 'none'}); its predicted loss is an "
            "extrapolation",
            file=sys.stderr,
        )
