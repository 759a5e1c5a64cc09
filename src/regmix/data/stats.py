"""The token statistics table (`stats.parquet`): tokens and documents per domain and split."""

from __future__ import annotations

import os

import pandas as pd

from regmix.files import read_table

COLUMNS = ["domain", "split", "tokens", "documents"]


def read_stats(path: str | os.PathLike) -> pd.DataFrame:
    return read_table(path, COLUMNS)


def train_tokens(stats: pd.DataFrame) -> pd.Series:
    """Train tokens per training domain (domains with train data only), indexed by domain."""
    train = stats[(stats["split"] == "train") & (stats["tokens"] > 0)]
    return train.set_index("domain")["tokens"].astype("int64")


def valid_domains(stats: pd.DataFrame) -> list[str]:
    return sorted(stats.loc[stats["split"] == "valid", "domain"])
