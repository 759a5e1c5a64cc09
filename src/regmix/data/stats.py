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


def train_tokens(stats: pd.DataFrame) -> pd.Series:
    """Train tokens per training domain (domains with train data only), indexed by domain."""
    train = stats[(stats["split"] == "train") & (stats["tokens"] > 0)]
    return train.set_index("domain")["tokens"].astype("int64")


def valid_domains(stats: pd.DataFrame) -> list[str]:
    return sorted(stats.loc[stats["split"] == "valid", "domain"])


def full_train_tokens(stats: pd.DataFrame) -> pd.Series:
    """Train tokens per training domain had every document been tokenized (the prior's
    weights); the tokens prepared when the table has no estimate (older tables)."""
    tokens = train_tokens(stats)
    if "estimated_tokens" not in stats.columns:
        return tokens
    train = stats[(stats["split"] == "train") & (stats["tokens"] > 0)]
    return train.set_index("domain")["estimated_tokens"].astype("int64").reindex(tokens.index)
