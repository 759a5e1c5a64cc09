"""Cross-validation folds, shared by every CV in the package (`regmix fit`, calibration)."""

from __future__ import annotations

import numpy as np

from regmix.errors import RegmixError


def fold_ids(n_runs: int, folds: int, seed: int) -> np.ndarray:
    """Which fold holds out each run; the same (n_runs, folds, seed) gives the same folds for
    every model, so their CV figures compare like with like."""
    from sklearn.model_selection import KFold

    if folds < 2:
        raise RegmixError(f"--folds: need at least 2 (got {folds})")
    if n_runs < folds:
        raise RegmixError(f"{n_runs} usable run(s) cannot be split into {folds} folds")
    ids = np.empty(n_runs, dtype=int)
    for fold, (_, held_out) in enumerate(
        KFold(folds, shuffle=True, random_state=seed).split(np.zeros(n_runs))
    ):
        ids[held_out] = fold
    return ids
