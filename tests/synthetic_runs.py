"""Small runs tables whose losses are a known function of the weights, for regression and
simulation tests that must not depend on the RegMix fixture."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from regmix.search.mixtures import mixture_table
from regmix.search.runs import LOSS, STATUS_OK

FIXTURES = Path(
    os.environ.get("REGMIX_FIXTURES", Path(__file__).parents[1].parent / "shared" / "fixtures")
)
PILE = FIXTURES / "regmix_pile_1m"
PILE_MIXTURES = PILE / "train_mixture_1m.csv"
PILE_LOSSES = PILE / "train_pile_loss_1m.csv"
PILE_MISSING = f"RegMix fixture not found at {PILE} (set REGMIX_FIXTURES)"

LossFunction = Callable[[np.ndarray], np.ndarray]


def runs_table(
    weights: np.ndarray,
    domains: list[str],
    losses: dict[str, LossFunction],
    noise: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """A runs table (all status ok) with loss.<name> = function(weights) + Gaussian noise."""
    rng = np.random.default_rng(seed)
    table = mixture_table([f"run{i:04d}" for i in range(len(weights))], domains, weights)
    for name, function in losses.items():
        table[LOSS + name] = function(weights) + noise * rng.standard_normal(len(weights))
    table["status"] = STATUS_OK
    return table


def dirichlet_weights(n: int, domains: int, seed: int = 0, concentration: float = 1.0):
    return np.random.default_rng(seed).dirichlet(np.full(domains, concentration), size=n)


def stats_table(train_tokens: dict[str, int], valid: list[str] | None = None) -> pd.DataFrame:
    """A stats.parquet table with the given train tokens (and 1000 valid tokens per domain)."""
    rows = [(d, "train", t, max(1, t // 100)) for d, t in train_tokens.items()]
    rows += [(d, "valid", 1000, 10) for d in (valid if valid is not None else train_tokens)]
    return pd.DataFrame(rows, columns=["domain", "split", "tokens", "documents"])
