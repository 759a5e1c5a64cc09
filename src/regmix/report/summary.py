"""Did it work? The final models side by side, and whether the proxies' ranking transferred.

Reads the final runs table (the optimum, the baselines and the held-out mixtures trained at
the final scale), the regressor's predictions for those mixtures and, for the synthetic
corpus, the planted blend. Writes `summary.parquet` (one row per final model) and
`summary.md`, the page a person reads first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from regmix.errors import RegmixError
from regmix.files import read_table, read_yaml, write_table, write_text
from regmix.search.mixtures import WEIGHT, mixture_domains, read_planted
from regmix.search.regression import ranking_metrics
from regmix.search.runs import LOSS, RUN_LOSSES, STATUS_OK, loss_domains, parse_target, read_runs

BASELINES = ("prior", "uniform", "planted")
BOUNDS = {
    "lower": "predicted_lower",
    "upper": "predicted_upper",
    "inside_support": "predicted_inside_support",
}
"""`regmix predict`'s columns on how sure a prediction is → their summary.parquet names."""


def kind_of(run: str) -> str:
    if run == "regmix":
        return "regmix"
    return "baseline" if run in BASELINES else "heldout"


@dataclass(frozen=True)
class Verdict:
    """The checks a person wants answered, each with the figures behind it."""

    beats: dict[str, bool]
    """Baseline name → whether RegMix's final target loss is lower."""
    closer_to_planted_than_prior: bool | None
    """None when the corpus has no planted blend."""
    transfer_spearman: float | None
    """Rank correlation of predicted and actual final-scale target loss over all final runs."""
    heldout_spearman: float | None
    """The same over the held-out random mixtures only (the paper's transfer check)."""
    ranking: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """`all` final models and `heldout` ones → Spearman, best-quarter Spearman and regret of
    the predicted best (`regmix.search.regression.ranking_metrics`)."""


def summary_table(
    runs: pd.DataFrame, predictions: pd.DataFrame, target_text: str, planted: pd.Series | None
) -> pd.DataFrame:
    """One row per final model: kind, status, target loss, prediction, distance to planted."""
    target = parse_target(target_text, loss_domains(runs), "final runs")
    table = runs.copy()
    ok = table["status"] == STATUS_OK
    table["target_loss"] = np.nan
    table.loc[ok, "target_loss"] = target.values(table[ok], "final runs")
    by_run = predictions.set_index(predictions["run"].astype(str))
    table["predicted_loss"] = table["run"].map(by_run["prediction"])
    for column, name in BOUNDS.items():  # predictions of older versions lack them
        if column in by_run:
            table[name] = table["run"].map(by_run[column])
    table.insert(1, "kind", table["run"].map(kind_of))
    if planted is not None:
        weights = table[[WEIGHT + d for d in planted.index]].to_numpy()
        table["l1_to_planted"] = np.abs(weights - planted.to_numpy()).sum(axis=1)
    front = ["run", "kind", "status", "target_loss", "predicted_loss"]
    front += [name for name in BOUNDS.values() if name in table]
    front += ["l1_to_planted"] if planted is not None else []
    rest = [c for c in table.columns if c not in front]
    return table[front + rest].sort_values("target_loss", na_position="last")


def _spearman(frame: pd.DataFrame) -> float | None:
    frame = frame.dropna(subset=["target_loss", "predicted_loss"])
    if len(frame) < 3:
        return None
    return float(spearmanr(frame["predicted_loss"], frame["target_loss"]).statistic)


def _ranking(frame: pd.DataFrame) -> dict[str, float | None]:
    frame = frame.dropna(subset=["target_loss", "predicted_loss"])
    if frame.empty:
        return dict.fromkeys(("spearman", "spearman_top_quarter", "regret"))
    return ranking_metrics(frame["target_loss"].to_numpy(), frame["predicted_loss"].to_numpy())


def verdict(table: pd.DataFrame) -> Verdict:
    rows = table.set_index("run")
    if "regmix" not in rows.index:
        raise RegmixError("final runs: no run named 'regmix' (the optimum)")
    ours = rows.at["regmix", "target_loss"]
    beats = {
        name: bool(ours < rows.at[name, "target_loss"])
        for name in ("prior", "uniform")
        if name in rows.index
    }
    closer = None
    if "l1_to_planted" in rows:
        closer = bool(rows.at["regmix", "l1_to_planted"] < rows.at["prior", "l1_to_planted"])
    return Verdict(
        beats,
        closer,
        _spearman(table),
        _spearman(table[table["kind"] == "heldout"]),
        {"all": _ranking(table), "heldout": _ranking(table[table["kind"] == "heldout"])},
    )


@dataclass(frozen=True)
class OptimumCheck:
    """What the simulation promised for the recommended mixture, and what a proxy measured."""

    predicted: float
    lower: float | None
    upper: float | None
    interval_method: str | None
    best_run: float
    """The lowest target loss any proxy run of the regression reached."""
    outside_support: bool
    support_note: str
    actual: float | None
    """The target loss of a proxy trained on the recommended mixture (None: not trained)."""

    @property
    def within_interval(self) -> bool | None:
        if self.actual is None or self.lower is None or self.upper is None:
            return None
        return self.lower <= self.actual <= self.upper


def optimum_check(optimum: dict, target: str, proxy_dir: str | os.PathLike | None) -> OptimumCheck:
    """The optimum's prediction (from simulate's mixture.yaml) beside its proxy's actual loss."""
    from regmix.search.support import outside_support

    interval = optimum.get("predicted_interval") or {}
    where = optimum["support"]["optimum"]
    beyond = ", ".join(where["beyond_runs"])
    if outside_support(optimum):
        note = (
            f"outside what the proxy runs cover ({where['radius_ratio']}x the support radius"
            + (f"; more {beyond} than any run" if beyond else "")
            + "): its predicted loss is an extrapolation"
        )
    else:
        note = (
            f"inside what the proxy runs cover (nearest run at {where['radius_ratio']}x the "
            "support radius)"
        )
    actual = None
    if proxy_dir is not None:
        losses = read_table(Path(proxy_dir) / RUN_LOSSES)
        last = losses[losses["step"] == losses["step"].max()]
        wide = pd.DataFrame([dict(zip(LOSS + last["domain"], last["loss"], strict=True))])
        wide.insert(0, "run", "optimum")
        parsed = parse_target(target, loss_domains(wide), str(proxy_dir))
        actual = float(parsed.values(wide, str(proxy_dir))[0])
    return OptimumCheck(
        predicted=float(optimum["predicted_loss"]),
        lower=interval.get("lower"),
        upper=interval.get("upper"),
        interval_method=interval.get("method"),
        best_run=float(optimum["best_run_loss"]),
        outside_support=outside_support(optimum),
        support_note=note,
        actual=actual,
    )


def optimum_lines(check: OptimumCheck) -> list[str]:
    """The summary's words about the recommended mixture: how sure, and where it stands."""
    sure = ""
    if check.lower is not None:
        sure = f" (95% interval {check.lower:.4f} … {check.upper:.4f}, {check.interval_method})"
    lines = [
        "## How sure is the recommendation?",
        "",
        f"- predicted proxy-scale target loss: {check.predicted:.4f}{sure}",
        f"- best proxy run: {check.best_run:.4f}"
        + (
            "; the prediction is below every run, i.e. better than anything measured"
            if check.predicted < check.best_run
            else ""
        ),
        f"- the recommended mixture lies {check.support_note}",
    ]
    if check.actual is not None:
        inside = {True: "inside", False: "**outside**", None: "n/a"}[check.within_interval]
        lines.append(
            f"- trained as a proxy it measured {check.actual:.4f} "
            f"({check.actual - check.predicted:+.4f} from the prediction; {inside} the interval)"
        )
    return [*lines, ""]


def transfer_lines(ranking: dict[str, dict[str, float | None]]) -> list[str]:
    """How the regressor's predictions rank the final models: overall, within the best
    quarter (by final loss; n/a below 3 models), and what trusting it would cost (regret)."""
    names = {"heldout": "held-out mixtures", "all": "all final models"}
    lines = []
    for key, figures in ranking.items():
        regret = figures["regret"]
        lines.append(
            f"  - {names[key]}: Spearman {_figure(figures['spearman'], 3)}, in the best quarter "
            f"{_figure(figures['spearman_top_quarter'], 3)}; the one predicted best is "
            + ("the best" if regret == 0 else f"{_figure(regret)} worse than the best")
        )
    return lines


def calibration_lines(report: dict[str, Any]) -> list[str]:
    """Did the 95% intervals hold? Each later round's runs against the intervals the
    regressor of the rounds before them gave (`regmix.search.calibration`)."""
    lines = ["## Do the 95% intervals hold?", ""]
    scale = report["interval_scale"]
    if report.get("applied"):
        on = {
            "checks": "every check",
            "cross-validation": "the regressor's cross-validation, before any check",
        }[report.get("basis", "checks")]
        done = (
            f"the intervals in this summary are the fitted ones x{scale:.2f} (the 95th "
            f"percentile of held-out standardised errors: {on})"
        )
    elif scale is None:
        done = "too few checks to rescale: the intervals in this summary are as fitted"
    else:
        done = f"the checks are of `{report['model']}`: this regressor's intervals are as fitted"
    if not report["checks"]:
        return [
            *lines,
            "- no later round has trained yet: nothing has checked them",
            f"- {done}",
            "",
        ]
    lines += [
        "Each later round's runs, measured, against the 95% interval that the regressor of the "
        "rounds before them gave (it had not seen them), rescaled on the checks of the rounds "
        "before it or, before any, on that regressor's cross-validation:",
        "",
        "| round | runs | inside as fitted | inside, calibrated | factor | on |",
        "|---|---|---|---|---|---|",
    ]
    for number, row in sorted(report["rounds"].items(), key=lambda item: int(item[0])):
        lines.append(
            f"| {number} | {row['checks']} | {_share(row['coverage_fitted'])} | "
            f"{_share(row['coverage'])} | x{row['interval_scale']:.2f} | "
            f"{row.get('basis', 'checks')} |"
        )
    lines.append(
        f"| all | {report['checks']} | {_share(report['coverage_fitted'])} | "
        f"{_share(report['coverage'])} | | |"
    )
    return [*lines, "", f"- {done}", ""]


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _yes(value: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[value]


def _figure(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def markdown(
    table: pd.DataFrame,
    result: Verdict,
    target: str,
    cv: dict | None,
    check: OptimumCheck | None = None,
    downstream: list[str] | None = None,
) -> str:
    """The human-readable summary (`downstream`: the downstream section's lines, if any)."""
    has_planted = "l1_to_planted" in table
    lines = [
        f"# RegMix summary — target `{target}`",
        "",
        "## Does the RegMix mixture win at the final scale?",
        "",
    ]
    for name, won in result.beats.items():
        lines.append(f"- beats the `{name}` mixture on target loss: {_yes(won)}")
    if has_planted:
        lines.append(
            f"- closer to the planted blend than the token prior (L1): "
            f"{_yes(result.closer_to_planted_than_prior)}"
        )
    lines += [
        f"- proxy → final transfer, Spearman(predicted, actual) over all final models: "
        f"{_figure(result.transfer_spearman, 3)}; over the held-out mixtures only: "
        f"{_figure(result.heldout_spearman, 3)}",
        *transfer_lines(result.ranking),
    ]
    if cv is not None:
        lines.append(
            f"- regressor `{cv['model']}`: {cv['folds']}-fold CV Spearman on "
            f"{cv['n_runs']} proxies {_figure(cv.get('spearman'), 3)}"
        )
    lines += [""]
    if check is not None:
        lines += optimum_lines(check)
    if cv is not None and cv.get("calibration"):
        lines += calibration_lines(cv["calibration"])
    lines += downstream or []
    lines += ["## Final models", ""]
    bounded = BOUNDS["lower"] in table
    if bounded:
        lines += [
            "Predictions are the regressor's, at proxy scale, with their 95% interval; "
            "*extrapolated* marks a mixture outside what the proxy runs cover.",
            "",
        ]
    header = ["model", "kind", "target loss", "predicted (proxy scale)"]
    header += ["L1 to planted"] if has_planted else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.itertuples(index=False):
        cells = [f"`{row.run}`", row.kind, _figure(row.target_loss), _predicted_cell(row, bounded)]
        cells += [_figure(row.l1_to_planted, 3)] if has_planted else []
        if row.status != STATUS_OK:
            cells[0] += f" ({row.status})"
        lines.append("| " + " | ".join(cells) + " |")
    domains = mixture_domains(table)
    shown = table.set_index("run").loc[
        [r for r in ("regmix", "prior", "planted") if r in set(table["run"])],
        [WEIGHT + d for d in domains],
    ]
    lines += ["", "## Mixtures", "", "| domain | " + " | ".join(shown.index) + " |"]
    lines.append("|" + "---|" * (len(shown.index) + 1))
    for domain in domains:
        cells = [f"{shown.at[run, WEIGHT + domain]:.3f}" for run in shown.index]
        lines.append(f"| {domain} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _predicted_cell(row: Any, bounded: bool) -> str:
    cell = _figure(row.predicted_loss)
    if not bounded or pd.isna(row.predicted_loss):
        return cell
    if not pd.isna(row.predicted_lower):
        cell += f" [{row.predicted_lower:.2f} … {row.predicted_upper:.2f}]"
    inside = row.predicted_inside_support
    if not pd.isna(inside) and not inside:
        cell += " *extrapolated*"
    return cell


def summarize_final(
    runs_path: str | os.PathLike,
    predictions_path: str | os.PathLike,
    target: str,
    out_table: str | os.PathLike,
    out_markdown: str | os.PathLike,
    planted_path: str | os.PathLike | None = None,
    metrics_path: str | os.PathLike | None = None,
    optimum_path: str | os.PathLike | None = None,
    optimum_proxy: str | os.PathLike | None = None,
    downstream_path: str | os.PathLike | None = None,
    samples: list[str | os.PathLike] = (),
    proxy_runs_path: str | os.PathLike | None = None,
) -> Verdict:
    """Write summary.parquet and summary.md for the final runs; return the verdict. With the
    downstream table (and each model's samples.jsonl) both gain the downstream scores; with
    the proxy runs table, the runs kept from an earlier corpus are listed."""
    runs = read_runs(runs_path)
    predictions = read_table(predictions_path, ["run", "prediction"])
    planted = None
    if planted_path is not None:
        planted = read_planted(planted_path, mixture_domains(runs))
    cv = read_yaml(metrics_path) if metrics_path is not None else None
    check = None
    if optimum_path is not None:
        check = optimum_check(read_yaml(optimum_path), target, optimum_proxy)
    table = summary_table(runs, predictions, target, planted)
    result = verdict(table)
    section = None
    if downstream_path is not None:
        from regmix.report.downstream import downstream_lines, read_downstream

        report = read_downstream(downstream_path, list(samples), table)
        averages = report.scores[report.scores.task == "average"].set_index("model")
        table["downstream_average"] = table["run"].map(averages["value"])
        table["downstream_stderr"] = table["run"].map(averages["stderr"])
        section = downstream_lines(report)
    from regmix.report.earlier_corpus import earlier_corpus_lines

    kinds = {"final models": runs}
    if proxy_runs_path is not None:
        kinds = {"proxy runs": read_table(proxy_runs_path), **kinds}
    page = markdown(table, result, target, cv, check, section) + "\n".join(
        ["", *earlier_corpus_lines(kinds)]
    )
    write_table(table, out_table)
    write_text(page.rstrip("\n") + "\n", out_markdown)
    return result
