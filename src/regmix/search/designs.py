"""A proposed round's mixtures are a design: drawn once from what its design depends on (its
settings, the proxy settings, the rounds before it), and kept under a key of those, so that a
round whose design did not change is re-published as drawn, not drawn again.

The workflow re-runs a proposal whenever the runs before it were trained or measured again
(their batch tables are its inputs); with the data changed, their losses move, and a round
drawn again from them would move too and re-train every run of it. Keeping the design makes
the round's mixtures depend on its design alone, as round 1's do.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from regmix.files import atomic_path, read_table, write_table

KEPT = "{key}.parquet"


def kept_design(
    out: str | os.PathLike,
    keep_dir: str | os.PathLike,
    key: str,
    draw: Callable[[], pd.DataFrame],
) -> tuple[pd.DataFrame, bool]:
    """Write the design kept under `key` to `out`, or draw it (and keep it, replacing designs
    of other keys); returns the table and whether it was kept from before."""
    keep_dir = Path(keep_dir)
    kept = keep_dir / KEPT.format(key=key)
    if kept.is_file():
        with atomic_path(out) as tmp:
            shutil.copyfile(kept, tmp)
        return read_table(out), True
    table = draw()
    write_table(table, out)
    keep_dir.mkdir(parents=True, exist_ok=True)
    for other in keep_dir.glob(KEPT.format(key="*")):
        other.unlink()
    write_table(table, kept)
    return table, False
