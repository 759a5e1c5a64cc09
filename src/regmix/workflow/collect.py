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
from regmix.search.mixtures import ROUND, WEIGHT, check_weights, mixture_domains
from regmix.search.runs import LOSS, RUN_LOSS_COLUMNS, RUN_LOSSES, RUN_RECORD

RECORD_COLUMNS = (
    # run.json keys copied into the runs table under the same names
    "status",
    "settings_fingerprint",
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
REUSE_COLUMNS = ("decision", "earlier_corpus", "stale_domains", "train_fingerprints")
"""What the job that published a run decided about it (regmix.training.reuse), and the content
of the train domains it was trained on: a run kept from an earlier corpus says so."""


def reuse_columns(record: dict) -> dict:
    """A run record's reuse columns (runs published before there were decisions: empty)."""
    train = record.get("data", {}).get("train", {})
    return {
        "decision": record.get("decision", ""),
        "earlier_corpus": bool(record.get("earlier_corpus", False)),
        "stale_domains": json.dumps(record.get("stale_domains", {}), sort_keys=True),
        "train_fingerprints": json.dumps(
            {d: c["fingerprint"] for d, c in sorted(train.items())}, sort_keys=True
        ),
    }


def read_record(path: Path) -> dict:
    if not path.is_file():
        raise RegmixError(f"{path}: no such file (run `regmix train-proxy` for this run)")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RegmixError(f"{path}: not valid JSON ({exc})") from exc
    missing = [k for k in (*RECORD_COLUMNS, "weights") if k not in record]
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
        row = {"run": run, **({ROUND: int(mixture[ROUND])} if ROUND in mixture else {})}
        row.update({WEIGHT + d: w for d, w in weights.items()})
        row.update({LOSS + d: loss for d, loss in final_losses(losses).items()})
        row.update({key: record[key] for key in RECORD_COLUMNS})
        row.update(reuse_columns(record))
        rows.append(row)
    table = pd.DataFrame(rows, columns=None if rows else ["run"])  # none: every run dropped
    loss_cols = sorted(c for c in table.columns if c.startswith(LOSS))
    rounds = [ROUND] if ROUND in mixtures else []
    ordered = [
        "run",
        *rounds,
        *(WEIGHT + d for d in domains),
        *loss_cols,
        *RECORD_COLUMNS,
        *REUSE_COLUMNS,
    ]
    return table.reindex(columns=ordered)


def read_mixture_tables(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """The mixture tables of several files (rounds, or final models) as one."""
    tables = []
    for path in paths:
        table = read_table(path, ["run"])
        check_weights(table, str(path))
        tables.append(table)
    mixtures = pd.concat(tables, ignore_index=True)
    if mixtures.empty:
        raise RegmixError(f"{', '.join(map(str, paths))}: no runs")
    # Tables drawn over other domain sets (before a domain was added or removed) leave gaps:
    # a mixture gives weight 0 to a domain it has no column for.
    weights = sorted(c for c in mixtures.columns if c.startswith(WEIGHT))
    rest = [c for c in mixtures.columns if not c.startswith(WEIGHT)]
    return mixtures[rest].join(mixtures[weights].fillna(0.0))


def collect_proxies(
    mixtures_paths: list[str | os.PathLike], proxy_dir: str | os.PathLike, out: str | os.PathLike
) -> pd.DataFrame:
    """Read the mixture tables and every run's outputs, and write the runs table atomically."""
    table = collect_runs(read_mixture_tables(mixtures_paths), proxy_dir)
    write_table(table, out)
    return table


def write_batch_table(
    mixtures_path: str | os.PathLike,
    runs: list[str],
    proxy_dir: str | os.PathLike,
    out: str | os.PathLike,
) -> pd.DataFrame:
    """The runs-table rows of the runs one job trained (its batch), from their folders."""
    mixtures = read_mixture_tables([mixtures_path])
    table = collect_runs(mixtures[mixtures["run"].astype(str).isin(runs)], proxy_dir)
    write_table(table, out)
    return table


def read_batches(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """The batch tables (each the rows its job trained) as one runs table. Rounds drawn before a
    domain was added have no column for it: their runs gave it weight 0. A run without a loss
    on some domain (one gone from the corpus when it trained) has NaN there."""
    tables = [read_table(p, ["run", "settings_fingerprint"]) for p in paths]
    table = pd.concat(tables, ignore_index=True)
    weights = [c for c in table.columns if c.startswith(WEIGHT)]
    table[weights] = table[weights].fillna(0.0)
    front = [c for c in ("run", ROUND) if c in table.columns]
    losses = sorted(c for c in table.columns if c.startswith(LOSS))
    rest = [c for c in table.columns if c not in {*front, *weights, *losses}]
    return table[[*front, *sorted(weights), *losses, *rest]]


def join_batches(paths: list[str | os.PathLike], out: str | os.PathLike) -> pd.DataFrame:
    """The runs table of every proxy: the batch tables joined, refusing duplicated runs and runs
    trained under other settings than their siblings."""
    table = read_batches(paths)
    duplicated = table.loc[table["run"].duplicated(), "run"]
    if not duplicated.empty:
        raise RegmixError(f"run {duplicated.iloc[0]!r} appears in more than one batch table")
    settings = table["settings_fingerprint"].unique()
    if len(settings) > 1:
        odd = table.loc[table["settings_fingerprint"] != settings[0], "run"].iloc[0]
        raise RegmixError(
            f"run {odd} was trained with other settings than run {table['run'].iloc[0]}; "
            "re-run its batch so that every proxy shares one configuration"
        )
    write_table(table, out)
    return table
