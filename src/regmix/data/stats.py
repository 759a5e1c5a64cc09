"""The token statistics table (`stats.parquet`): tokens and documents per domain and split.

`tokens` are the tokens prepared (all a model can read: they set the repetition caps);
`estimated_tokens` the domain's full size, which differs when `corpus.max_tokens` tokenized a
sample of it (the token prior comes from it, as RegMix's comes from the whole corpus)."""

from __future__ import annotations

import os

import pandas as pd

from regmix.files import read_table

COLUMNS = ["domain", "split", "tokens", "documents"]


def read_stats(path: str | os.PathLike) -> pd.DataFrame:
    return read_table(path, COLUMNS)


def _train_rows(stats: pd.DataFrame) -> pd.DataFrame:
    """The rows of the training domains (those with train tokens), indexed by domain."""
    return stats[(stats["split"] == "train") & (stats["tokens"] > 0)].set_index("domain")


def train_tokens(stats: pd.DataFrame) -> pd.Series:
    """Train tokens per training domain (domains with train data only), indexed by domain."""
    return _train_rows(stats)["tokens"].astype("int64")


def valid_domains(stats: pd.DataFrame) -> list[str]:
    return sorted(stats.loc[stats["split"] == "valid", "domain"])


def full_train_tokens(stats: pd.DataFrame) -> pd.Series:
    """Train tokens per training domain had every document been tokenized (the prior's
    weights); the tokens prepared when the table has no estimate (older tables)."""
    column = "estimated_tokens" if "estimated_tokens" in stats.columns else "tokens"
    return _train_rows(stats)[column].astype("int64")
