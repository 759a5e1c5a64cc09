"""Fan-in of the proxy runs: one row per run with its mixture, final losses and status.

Each run's folder (written by `regmix train-proxy`) holds `losses.parquet` and `run.json`.
The runs table takes, per validation domain, the loss at the run's last evaluation, and
refuses to mix runs that do not belong together: a run trained on another mixture than the
table says, or under other training settings than its siblings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from regmix.errors import RegmixError
from regmix.files import read_table, write_table
from regmix.mixtures import WEIGHT, check_weights, mixture_domains
from regmix.runs import LOSS, RUN_LOSS_COLUMNS, RUN_LOSSES, RUN_RECORD

RECORD_COLUMNS = (
    # run.json keys copied into the runs table under the same names
    "status",
    "steps",
    "tokens",
    "params",
    "params_total",
    "tokens_per_s",
    "train_seconds",
    "wall_seconds",
    "seed",
)
WEIGHT_TOLERANCE = 1e-9


def read_record(path: Path) -> dict:
    if not path.is_file():
        raise RegmixError(f"{path}: no such file (run `regmix train-proxy` for this run)")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RegmixError(f"{path}: not valid JSON ({exc})") from exc
    missing = [k for k in (*RECORD_COLUMNS, "weights", "settings_fingerprint") if k not in record]
    if missing:
        raise RegmixError(f"{path}: missing key(s) {', '.join(missing)}")
    return record


def final_losses(losses: pd.DataFrame) -> dict[str, float]:
    """Each domain's loss at the last evaluated step (empty if the run was never evaluated)."""
    if losses.empty:
        return {}
    last = losses[losses["step"] == losses["step"].max()]
    return dict(zip(last["domain"], last["loss"].astype(float), strict=True))


def check_same_mixture(run: str, record: dict, weights: pd.Series, source: Path) -> None:
    """Fail if the run was trained on another mixture than the mixture table gives it."""
    trained = pd.Series(record["weights"], dtype=float).reindex(weights.index, fill_value=0.0)
    extra = set(record["weights"]) - set(weights.index)
    off = float(np.abs(trained.to_numpy() - weights.to_numpy()).max())
    if extra or off > WEIGHT_TOLERANCE:
        raise RegmixError(
            f"{source}: run {run} was trained on another mixture than the mixture table gives "
            "it; re-run train-proxy for it"
        )


def collect_runs(mixtures: pd.DataFrame, proxy_dir: str | os.PathLike) -> pd.DataFrame:
    """The runs table for the runs of `mixtures`, from their folders under `proxy_dir`."""
    domains = mixture_domains(mixtures)
    rows, fingerprints = [], {}
    for _, mixture in mixtures.iterrows():
        run = str(mixture["run"])
        folder = Path(proxy_dir) / run
        record = read_record(folder / RUN_RECORD)
        losses = read_table(folder / RUN_LOSSES, RUN_LOSS_COLUMNS)
        weights = mixture[[WEIGHT + d for d in domains]].astype(float)
        weights.index = domains
        check_same_mixture(run, record, weights, folder / RUN_RECORD)
        fingerprints.setdefault(record["settings_fingerprint"], run)
        if len(fingerprints) > 1:
            first = next(iter(fingerprints.values()))
            raise RegmixError(
                f"{folder / 'run.json'}: run {run} was trained with other settings than run "
                f"{first}; re-run train-proxy so that every proxy shares one configuration"
            )
        row = {"run": run, **{WEIGHT + d: w for d, w in weights.items()}}
        row.update({LOSS + d: loss for d, loss in final_losses(losses).items()})
        row.update({key: record[key] for key in RECORD_COLUMNS})
        rows.append(row)
    table = pd.DataFrame(rows)
    loss_cols = sorted(c for c in table.columns if c.startswith(LOSS))
    ordered = ["run", *(WEIGHT + d for d in domains), *loss_cols, *RECORD_COLUMNS]
    return table[ordered]


def collect_proxies(
    mixtures_path: str | os.PathLike, proxy_dir: str | os.PathLike, out: str | os.PathLike
) -> pd.DataFrame:
    """Read the mixture table and every run's outputs, and write the runs table atomically."""
    mixtures = read_table(mixtures_path, ["run"])
    check_weights(mixtures, str(mixtures_path))
    if mixtures.empty:
        raise RegmixError(f"{mixtures_path}: no runs")
    table = collect_runs(mixtures, proxy_dir)
    write_table(table, out)
    return table
