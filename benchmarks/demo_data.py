"""The demo corpus, its shards and a set of proxy mixtures, as the benchmarks need them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def regmix(*args: str) -> None:
    """Run a `regmix` command in a fresh process, as the workflow does."""
    subprocess.run([sys.executable, "-m", "regmix.cli", *args], check=True)


def prepare_demo_data(root: Path, final_tokens: int, n: int) -> None:
    """Write root/corpus, root/data and root/mixtures.parquet (n proxy mixtures)."""
    regmix("synth-corpus", "--out", str(root / "corpus"))
    regmix("prepare", "--corpus", str(root / "corpus"), "--out", str(root / "data"))
    stats = str(root / "data" / "stats.parquet")
    out = str(root / "mixtures.parquet")
    regmix(
        "sample-mixtures",
        "--stats",
        stats,
        "--n",
        str(n),
        "--final-tokens",
        str(final_tokens),
        "--out",
        out,
    )
