"""Whether a run trained before still stands after the corpus changed: keep it, measure it again
from its kept final weights, or train it again.

Each run records what it was trained with (settings, mixture, training code) and the content of
every domain it read (regmix.data.content: train domains it weights, valid domains it was
measured on). `decide` compares that record with the current data under a `ReusePolicy`:

- keep: same settings, mixture and code, and every domain it weights has the same content, or
  changed by at most `max_change` of its tokens (kept and flagged `stale`); a domain that is no
  longer in the corpus changes nothing (its evidence stays);
- re-evaluate: kept, but a validation domain is new or its content changed: only those domains
  are measured again, from the run's kept weights (seconds, not a training);
- re-train: anything else; a run that must re-train but weights a domain that is gone is
  dropped (its data cannot be read).

`decide` is a pure function of (record, settings, mixture, current contents, policy), and its
`state` is the record the run will have once its job has run. The workflow's rules carry that
state in their params while Snakemake reads the workflow, and the training job takes the same
decision, so Snakemake runs exactly the jobs whose runs change, and after they ran finds
nothing to do. Free of torch: the rules import it.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from regmix.data.content import Contents, DomainContent, change_fraction
from regmix.errors import RegmixError
from regmix.training.train_config import TRAINING_MODULES, digest

KEEP = "keep"
REEVALUATE = "re-evaluate"
RETRAIN = "re-train"
NEW = "new"
DROPPED = "dropped"
ACTIONS = (KEEP, REEVALUATE, RETRAIN, NEW, DROPPED)
TRAINS = (RETRAIN, NEW)
"""The actions that train."""

PLACEMENT = ("accelerator", "devices")
"""Settings a job sets from the devices it was granted: where a run trains, not what."""
RECORD = "run.json"


@dataclass(frozen=True)
class ReusePolicy:
    """How far a run may be reused after its data changed (the config's `reuse` section)."""

    max_change: float = 0.0
    """A domain whose content changed by at most this share of its tokens keeps the runs
    trained on it (flagged in the runs table and the summary); 0: any change re-trains."""
    runs_per_new_domain: int = 4
    """Proxy runs of the extra round that explores each domain new to the sweep."""

    def __post_init__(self) -> None:
        if not 0 <= self.max_change < 1:
            raise RegmixError(f"reuse.max_change: must be in [0, 1), got {self.max_change}")
        if self.runs_per_new_domain < 0:
            raise RegmixError("reuse.runs_per_new_domain: must be >= 0")

    @classmethod
    def from_config(cls, section: Mapping | None) -> ReusePolicy:
        return cls(**dict(section or {}))


@dataclass(frozen=True)
class Decision:
    """What a run's job does with it, and why."""

    action: str
    reasons: tuple[str, ...] = ()
    """Why, in words: `train data of web changed`, `new domain extra`, ..."""
    measure: tuple[str, ...] = ()
    """The validation domains measured again (re-evaluate)."""
    stale: tuple[tuple[str, float], ...] = ()
    """Domains the run weights whose content changed within `max_change`, and by how much."""
    state: str = ""
    """A digest of the record the run has once its job ran: what the rules' params carry."""

    @property
    def trains(self) -> bool:
        return self.action in TRAINS

    @property
    def category(self) -> str:
        """The row of the table by reason that this decision counts in."""
        if self.action == KEEP:
            return "kept within reuse.max_change" if self.stale else "kept (data unchanged)"
        labels = {REEVALUATE: "re-evaluated", RETRAIN: "re-trained", DROPPED: "dropped"}
        return labels.get(self.action, "new")


@functools.cache
def code_fingerprint() -> str:
    """Hash of TRAINING_MODULES' source, so results of older training code are never reused."""
    package = Path(__file__).parents[1]
    sources = [package / f"{module.replace('.', '/')}.py" for module in TRAINING_MODULES]
    return digest([path.read_text() for path in sources])


def settings_key(settings: Mapping) -> str:
    """What a run's settings decide about its training: everything but its placement."""
    return digest({k: v for k, v in settings.items() if k not in PLACEMENT})


def weighted(weights: Mapping[str, float]) -> dict[str, float]:
    """The domains a mixture trains on, rounded: adding a domain at weight 0 changes no run."""
    return {d: round(float(w), 12) for d, w in sorted(weights.items()) if float(w) > 0}


def training_key(settings: Mapping, weights: Mapping[str, float], keep_model: bool) -> str:
    """The identity of a run's training apart from its data: settings, mixture, code, export."""
    return digest(
        {
            "settings": settings_key(settings),
            "mixture": weighted(weights),
            "code": code_fingerprint(),
            "keep_model": keep_model,
        }
    )


def corpus_fingerprint(contents: Contents) -> str:
    """One digest of every prepared domain's content: which corpus a run was trained in."""
    return digest(
        {
            split: {d: c.fingerprint for d, c in sorted(found.items())}
            for split, found in sorted(contents.items())
        }
    )


def data_record(weights: Mapping[str, float], contents: Contents) -> dict:
    """The `data` block of a freshly trained run: the content of the train domains it weights
    and of every valid domain it is measured on."""
    return {
        "train": {d: contents["train"][d].to_record() for d in weighted(weights)},
        "valid": {d: c.to_record() for d, c in sorted(contents["valid"].items())},
    }


def decide(
    record: Mapping | None,
    settings: Mapping,
    weights: Mapping[str, float],
    contents: Contents,
    policy: ReusePolicy,
    keep_model: bool = False,
) -> Decision:
    """What to do with one run (see the module docstring). `record` is the run's kept
    run.json (None: never trained), `settings` its TrainConfig fields as configured now,
    `contents` the current data's (regmix.data.content.read_contents)."""
    key = training_key(settings, weights, keep_model)
    if record is None or "data" not in record or "training_key" not in record:
        reason = "not trained yet" if record is None else "trained before content was recorded"
        return _trained(NEW if record is None else RETRAIN, (reason,), key, weights, contents)
    reasons = _training_changes(record, settings, weights, keep_model)
    train_data = record["data"]["train"]
    stale = []
    for domain in weighted(weights):
        current = contents["train"].get(domain)
        if current is None:
            continue  # removed from the corpus: nothing to compare, the evidence stays
        recorded = train_data.get(domain)
        change = 1.0 if recorded is None else change_fraction(_content(recorded), current)
        if change == 0:
            continue
        if change <= policy.max_change:
            stale.append((domain, round(change, 6)))
        else:
            reasons.append(f"train data of {domain} changed ({_share(change)} of its tokens)")
    if reasons:
        return _trained(RETRAIN, tuple(reasons), key, weights, contents)
    valid = record["data"]["valid"]
    measure, why = [], []
    for domain, current in sorted(contents["valid"].items()):
        if domain not in valid:
            measure.append(domain)
            why.append(f"new domain {domain}")
        elif valid[domain]["fingerprint"] != current.fingerprint:
            measure.append(domain)
            why.append(f"valid set of {domain} changed")
    after = {**valid, **{d: contents["valid"][d].to_record() for d in measure}}
    action = REEVALUATE if measure else KEEP
    return Decision(
        action,
        tuple(why),
        tuple(measure),
        tuple(stale),
        _state(key, train_data, after, stale, contents),
    )


def _training_changes(
    record: Mapping, settings: Mapping, weights: Mapping[str, float], keep_model: bool
) -> list[str]:
    """Why the run's training differs from what is asked now (empty: it does not)."""
    reasons = []
    if settings_key(record.get("settings", {})) != settings_key(settings) or bool(
        record.get("keep_model")
    ) != bool(keep_model):
        reasons.append("settings changed")
    if weighted(record.get("weights", {})) != weighted(weights):
        reasons.append("mixture changed")
    if record.get("code") != code_fingerprint():
        reasons.append("training code changed")
    return reasons


def _trained(
    action: str, reasons: tuple[str, ...], key: str, weights: Mapping, contents: Contents
) -> Decision:
    missing = sorted(d for d in weighted(weights) if d not in contents["train"])
    if missing:
        gone = f"weights {', '.join(missing)}, gone from the corpus"
        return Decision(DROPPED, (*reasons, gone))
    data = data_record(weights, contents)
    return Decision(action, reasons, state=_state(key, data["train"], data["valid"], (), contents))


def _state(key: str, train: Mapping, valid: Mapping, stale, contents: Contents) -> str:
    """The published record's digest: its training and data, and what the job says about it
    (which domains changed within max_change, which corpus it is published in), so that a
    run kept from an earlier corpus is re-published saying so."""
    return digest(
        {
            "key": key,
            "train": {d: c["fingerprint"] for d, c in sorted(train.items())},
            "valid": {d: c["fingerprint"] for d, c in sorted(valid.items())},
            "stale": sorted(stale),
            "corpus": corpus_fingerprint(contents),
        }
    )


def _content(record: Mapping) -> DomainContent:
    return DomainContent.from_record(record)


def _share(fraction: float) -> str:
    return f"{fraction:.1%}"


# --- kept runs ------------------------------------------------------------------------------


@dataclass
class Kept:
    """A run's kept results: its folder under the work folder and its record."""

    folder: Path
    record: dict = field(default_factory=dict)


def kept_run(run_work_dir: str | os.PathLike) -> Kept | None:
    """The finished run kept in `<work>/<run>/<fingerprint>/` (None: none finished). Each run
    keeps one: training a new one removes the others."""
    folder = Path(run_work_dir)
    if not folder.is_dir():
        return None
    found = [
        p for p in sorted(folder.glob(f"*/{RECORD}")) if p.with_name("losses.parquet").is_file()
    ]
    if not found:
        return None
    latest = max(found, key=lambda p: p.stat().st_mtime_ns)
    return Kept(latest.parent, json.loads(latest.read_text()))


def kept_runs(checkpoints: str | os.PathLike) -> dict[str, Kept]:
    """Every finished run kept under `<checkpoints>/<stage>/<run>/`, keyed `stage/run`
    (`proxy/run0001`, `final/prior`, `optimum/regmix`)."""
    found = {}
    for run_dir in sorted(Path(checkpoints).glob("*/*")):
        if run_dir.parent.name in ("proxy", "optimum", "final"):
            kept = kept_run(run_dir)
            if kept is not None:
                found[f"{run_dir.parent.name}/{run_dir.name}"] = kept
    return found
