"""The runs table: one row per trained mixture, `run`, `weight.<domain>`..., `loss.<domain>`...,
`status`. Proxy training fans in to it; regression reads it; RegMix's CSVs import into it.

A regression target is a loss domain, the mean of all loss columns, or a weighted sum of
losses (`a:0.5,b:0.5`); `Target` holds the parsed form and computes it from a runs table.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from regmix.errors import RegmixError
from regmix.files import read_table, write_table
from regmix.search.mixtures import WEIGHT, check_weights, mixture_domains, weight_columns

LOSS = "loss."

# What one trained run leaves in its folder (`regmix train-proxy`/`train-final` write it,
# `collect-proxies` reads it): the long-format loss table and the run's record.
RUN_LOSSES = "losses.parquet"
RUN_RECORD = "run.json"
RUN_LOSS_COLUMNS = ["run", "step", "tokens", "domain", "loss"]

STATUS_OK = "ok"
"""The run trained to the end and every validation loss is finite."""
STATUS_DIVERGED = "diverged"
"""Training hit a NaN/inf loss; its losses are not used for regression."""
STATUS_MISSING = "missing"
"""The mixture was planned but no losses were recorded for it (imported tables only)."""

REGMIX_INDEX = "index"
REGMIX_MIXTURE = "train_"
REGMIX_LOSS = re.compile(r"^metric/(?P<domain>.+)_val_loss$")


def loss_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(LOSS)]


def loss_domains(table: pd.DataFrame) -> list[str]:
    return [c[len(LOSS) :] for c in loss_columns(table)]


# --- RegMix's CSV layout --------------------------------------------------------------------


def _regmix_index(table: pd.DataFrame, path: Path) -> pd.Series:
    if REGMIX_INDEX not in table:
        raise RegmixError(f"{path}: missing column {REGMIX_INDEX!r} (RegMix's run index)")
    index = table[REGMIX_INDEX].astype(str)
    duplicated = index[index.duplicated()]
    if not duplicated.empty:
        raise RegmixError(f"{path}: index {duplicated.iloc[0]} appears more than once")
    return index


def regmix_mixture_table(
    raw: pd.DataFrame, path: str | os.PathLike
) -> tuple[pd.DataFrame, np.ndarray]:
    """A loaded RegMix mixture CSV (`index`, `train_<domain>`...) as a mixture table, and each
    row's sum as published.

    RegMix publishes weights rounded to 3 decimals, so rows sum to 1 only within a few 1e-3;
    they are renormalised here (the rounding is the only thing undone) so that downstream
    checks can insist on sums of exactly 1.
    """
    path = Path(path)
    index = _regmix_index(raw, path)
    columns = [c for c in raw.columns if c.startswith(REGMIX_MIXTURE)]
    if not columns:
        raise RegmixError(f"{path}: no {REGMIX_MIXTURE}<domain> columns (RegMix mixture CSV)")
    weights = raw[columns].to_numpy(dtype=float)
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise RegmixError(f"{path}: mixture weights must be non-negative numbers")
    sums = weights.sum(axis=1)
    if (sums <= 0).any():
        raise RegmixError(f"{path}: index {index.iloc[int(np.argmin(sums))]} has no weight")
    table = pd.DataFrame(
        weights / sums[:, None],
        columns=[WEIGHT + c[len(REGMIX_MIXTURE) :] for c in columns],
    )
    table.insert(0, "run", index.to_numpy())
    return table, sums


def read_regmix_losses(path: str | os.PathLike) -> pd.DataFrame:
    """A RegMix loss CSV (`index`, `metric/<domain>_val_loss`...) as `run` + `loss.<domain>`."""
    path = Path(path)
    raw = read_table(path)
    index = _regmix_index(raw, path)
    renamed = {}
    for column in raw.columns:
        match = REGMIX_LOSS.match(column)
        if match:
            renamed[column] = LOSS + match["domain"]
    if not renamed:
        raise RegmixError(f"{path}: no metric/<domain>_val_loss columns (RegMix loss CSV)")
    try:
        losses = raw[list(renamed)].astype(float).rename(columns=renamed)
    except (TypeError, ValueError) as exc:
        raise RegmixError(f"{path}: losses must be numbers ({exc})") from exc
    losses.insert(0, "run", index.to_numpy())
    return losses


def run_status(losses: pd.DataFrame) -> pd.Series:
    """`ok` where every loss is finite, `diverged` where any is NaN/inf."""
    finite = np.isfinite(losses[loss_columns(losses)].to_numpy(dtype=float)).all(axis=1)
    return pd.Series(np.where(finite, STATUS_OK, STATUS_DIVERGED), index=losses.index)


def import_regmix_runs(
    mixtures_csv: str | os.PathLike, losses_csv: str | os.PathLike
) -> pd.DataFrame:
    """Join RegMix's mixture and loss CSVs on `index` into a runs table.

    Mixtures without a losses row are kept with status `missing` (they count as excluded
    runs later); a losses row without a mixture cannot be used and is an error.
    """
    return _join_regmix_csvs(mixtures_csv, losses_csv)[0]


def _join_regmix_csvs(
    mixtures_csv: str | os.PathLike, losses_csv: str | os.PathLike
) -> tuple[pd.DataFrame, np.ndarray]:
    """`import_regmix_runs`, and the mixtures' row sums as published (before renormalising)."""
    mixtures, sums = regmix_mixture_table(read_table(mixtures_csv), mixtures_csv)
    losses = read_regmix_losses(losses_csv)
    orphans = sorted(set(losses["run"]) - set(mixtures["run"]))
    if orphans:
        raise RegmixError(
            f"{losses_csv}: {len(orphans)} index value(s) have no mixture in {mixtures_csv} "
            f"(first: {orphans[0]})"
        )
    runs = mixtures.merge(losses, on="run", how="left", validate="one_to_one")
    status = run_status(runs)
    recorded = runs["run"].isin(losses["run"])
    runs["status"] = status.where(recorded, STATUS_MISSING)
    return runs, sums


def write_imported_runs(
    mixtures_csv: str | os.PathLike, losses_csv: str | os.PathLike, out: str | os.PathLike
) -> pd.DataFrame:
    """`regmix import-runs`: write the joined runs table and say what was renormalised."""
    runs, sums = _join_regmix_csvs(mixtures_csv, losses_csv)
    print(
        f"regmix import-runs: {len(runs)} runs, {len(weight_columns(runs))} domains, "
        f"{len(loss_columns(runs))} losses; weights renormalised to sum to 1 "
        f"(row sums were {sums.min():.4f}..{sums.max():.4f}); "
        f"status: {status_counts(runs['status'].value_counts(), count_first=False)}",
        file=sys.stderr,
    )
    write_table(runs, out)
    return runs


def status_counts(counts: Mapping[str, int] | pd.Series, count_first: bool = True) -> str:
    """A count of runs per status as text: '3 ok, 1 diverged', or 'ok 3, diverged 1' without
    `count_first`; 'none' when there are no runs."""
    text = ", ".join(
        f"{n} {status}" if count_first else f"{status} {n}" for status, n in dict(counts).items()
    )
    return text or "none"


# --- reading a runs table -------------------------------------------------------------------


def read_runs(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a runs table: unique runs, a status, weight and loss columns, weights
    that sum to 1 (a planned mixture is valid whether or not its run trained)."""
    path = Path(path)
    runs = read_table(path, ["run", "status"])
    runs["run"] = runs["run"].astype(str)
    duplicated = runs.loc[runs["run"].duplicated(), "run"]
    if not duplicated.empty:
        raise RegmixError(f"{path}: run {duplicated.iloc[0]!r} appears more than once")
    if not loss_columns(runs):
        raise RegmixError(f"{path}: no {LOSS}<domain> columns")
    check_weights(runs, str(path))
    return runs


def usable_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Split a runs table into the runs with status `ok` and a count of the others by status."""
    ok = runs["status"] == STATUS_OK
    return runs[ok].reset_index(drop=True), runs.loc[~ok, "status"].value_counts()


# --- regression targets ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What the regression predicts: a weighted sum of per-domain validation losses."""

    text: str
    """The target as the user wrote it (`pile_cc`, `mean`, `a:0.5,b:0.5`)."""
    weights: dict[str, float]
    """Loss domain → its weight in the target."""

    def __post_init__(self) -> None:
        if not self.weights:
            raise RegmixError(f"target {self.text!r}: no loss domain")
        bad = [d for d, w in self.weights.items() if not (np.isfinite(w) and w > 0)]
        if bad:
            raise RegmixError(f"target {self.text!r}: weight of {bad[0]} must be a number > 0")

    def values(self, runs: pd.DataFrame, source: str = "runs") -> np.ndarray:
        """The target for each run; a non-finite loss in a run used for fitting is an error."""
        columns = [LOSS + d for d in self.weights]
        losses = runs[columns].to_numpy(dtype=float)
        bad_rows, bad_cols = np.nonzero(~np.isfinite(losses))
        if bad_rows.size:
            run = runs["run"].iloc[bad_rows[0]]
            raise RegmixError(
                f"{source}: run {run} has status {STATUS_OK!r} but {columns[bad_cols[0]]} is "
                f"{losses[bad_rows[0], bad_cols[0]]}; set its status to {STATUS_DIVERGED!r} "
                "or fix the loss"
            )
        return losses @ np.array(list(self.weights.values()))


def parse_target(text: str, domains: list[str], source: str = "runs") -> Target:
    """Parse `--target`: a loss domain, `mean` (all loss domains equally) or `a:0.5,b:0.5`."""
    text = text.strip()
    if text == "mean":
        return Target(text, {d: 1.0 / len(domains) for d in domains})
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition(":")
        name = _known_domain(name.strip(), domains, text, source)
        if name in weights:
            raise RegmixError(f"target {text!r}: {name} appears more than once")
        try:
            weights[name] = float(value) if sep else 1.0
        except ValueError:
            raise RegmixError(
                f"target {text!r}: weight {value!r} of {name} is not a number"
            ) from None
    return Target(text, weights)


def _known_domain(name: str, domains: list[str], text: str, source: str) -> str:
    name = name.removeprefix(LOSS)
    if name in domains:
        return name
    close = difflib.get_close_matches(name, domains, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise RegmixError(
        f"target {text!r}: {source} has no loss column {LOSS}{name} "
        f"(loss domains: {', '.join(domains)}){hint}"
    )


# --- mixture files as the regressors read them ------------------------------------------


def read_mixtures(path: str | os.PathLike) -> pd.DataFrame:
    """A mixture table (`run`, `weight.<domain>`; parquet or CSV, also a runs table) or a
    RegMix mixture CSV (`index`, `train_<domain>`), as a mixture table."""
    table = read_table(path)
    if weight_columns(table):
        if "run" not in table:
            raise RegmixError(f"{path}: missing column run")
        table = table.assign(run=table["run"].astype(str))
        check_weights(table, str(path))
        return table
    if REGMIX_INDEX in table and any(c.startswith(REGMIX_MIXTURE) for c in table.columns):
        return regmix_mixture_table(table, path)[0]
    raise RegmixError(
        f"{path}: expected a mixture table (run, {WEIGHT}<domain>...) or a RegMix mixture CSV "
        f"({REGMIX_INDEX}, {REGMIX_MIXTURE}<domain>...)"
    )


def domain_mismatch(have: list[str], expected: list[str]) -> str:
    """'missing a, b; extra c' for two domain lists, or '' when they hold the same domains."""
    missing = [d for d in expected if d not in have]
    extra = [d for d in have if d not in expected]
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (("missing", missing), ("extra", extra))
        if names
    ]
    return "; ".join(parts)


def aligned_weights(table: pd.DataFrame, domains: list[str], source: str) -> np.ndarray:
    """The table's weights in the model's domain order; the domain sets must be equal."""
    mismatch = domain_mismatch(mixture_domains(table), domains)
    if mismatch:
        raise RegmixError(f"{source}: domains differ from the model's ({mismatch})")
    return table[[WEIGHT + d for d in domains]].to_numpy(dtype=float)
