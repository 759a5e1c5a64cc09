"""The summary's section on runs kept from an earlier corpus: which proxy runs and final models
were trained before the corpus last changed and kept (exact, measured again on new validation
data, or within `reuse.max_change`), and the content fingerprints of what they trained on."""

from __future__ import annotations

import json

import pandas as pd

FINGERPRINT_CHARS = 12
"""Hex digits of a fingerprint shown (the runs table has them whole)."""


def short(fingerprint: str) -> str:
    return fingerprint.split(":", 1)[-1][:FINGERPRINT_CHARS]


def earlier_corpus_lines(tables: dict[str, pd.DataFrame]) -> list[str]:
    """The section's lines for runs tables by kind ("proxy runs", "final models"); empty when
    every run was trained on the corpus as it is now (or the tables predate the columns)."""
    kept = {
        kind: table[table["earlier_corpus"].astype(bool)]
        for kind, table in tables.items()
        if "earlier_corpus" in table
    }
    if not any(len(t) for t in kept.values()):
        return []
    counts = ", ".join(f"{len(kept[k])} of {len(tables[k])} {k}" for k in kept)
    lines = [
        "## Runs from an earlier corpus",
        "",
        f"{counts} were trained before the corpus last changed and kept: their training data is "
        "unchanged (or changed within `reuse.max_change`: *stale* below), and their losses on "
        "new or changed validation sets were measured again from their kept weights "
        "(*re-evaluated*).",
        "",
        "| run | decision | stale domains | train data (domain: fingerprint) |",
        "|---|---|---|---|",
    ]
    for table in kept.values():
        for row in table.itertuples(index=False):
            stale = json.loads(row.stale_domains or "{}")
            shares = ", ".join(f"{d} {c:.1%}" for d, c in stale.items()) or "none"
            data = json.loads(row.train_fingerprints or "{}")
            prints = ", ".join(f"{d}: `{short(f)}`" for d, f in data.items())
            lines.append(f"| `{row.run}` | {row.decision} | {shares} | {prints} |")
    return [*lines, ""]
