"""The runs table: one row per trained mixture, `run`, `weight.<domain>`..., `loss.<domain>`...,
`status`. Proxy training fans in to it; regression reads it; RegMix's CSVs import into it."""

from __future__ import annotations

import pandas as pd

LOSS = "loss."

STATUS_OK = "ok"
"""The run trained to the end and every validation loss is finite."""
STATUS_DIVERGED = "diverged"
"""Training hit a NaN/inf loss; its losses are not used for regression."""


def loss_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(LOSS)]


def loss_domains(table: pd.DataFrame) -> list[str]:
    return [c[len(LOSS) :] for c in loss_columns(table)]
