"""Experiment trackers: one tracker run per proxy or final model, through Lightning's loggers.

`tracking.backend` picks CSV files, TensorBoard, MLflow or Weights & Biases; `none` (the
default) builds no logger at all, so training keeps its logger-free path. Each trained run gets
one tracker run named by its run id, grouped by workflow (`<target>-<config fingerprint>`):

| backend     | where (under `tracking.dir`, default results/tracking)  | group         |
|-------------|---------------------------------------------------------|---------------|
| csv         | csv/<group>/<kind>/<run>/{metrics.csv,hparams.yaml}     | folder        |
| tensorboard | tensorboard/<group>/<kind>/<run>/events.out.tfevents.*  | folder        |
| mlflow      | mlflow/ (a file store; or `tracking.mlflow.tracking_uri`) | experiment  |
| wandb       | wandb/offline-run-* (offline unless `tracking.wandb.mode`) | group      |

`kind` is `proxy` or `final` (the recommended mixture is trained as both, under one name).
The mixture weights and training settings are hyper-parameters; the training loss
(`train/loss`, every `log_every` optimizer steps) and each evaluation's per-domain validation
losses (`val/<domain>`, `val/mean`) are metrics, at the optimizer step.

A killed run that resumes from its checkpoint keeps logging into the same tracker run: CSV
keeps the rows up to the checkpoint's step and drops the ones after it (they are trained
again); TensorBoard purges the events after that step (its writer's `purge_step`); MLflow and
W&B continue the run whose id the attempt left in the run's work folder (`tracking.json`), so
the steps between the checkpoint and the kill hold two points each (the same data and
weights: equal values on CPU). A run that starts afresh replaces what an abandoned attempt
logged (MLflow deletes that run; W&B starts a new run id, the old one stays offline).

Tracking settings are not training settings: they enter neither a run's fingerprint nor the
workflow's re-run decisions. Kept free of torch at import time, for the Snakefile.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regmix.errors import RegmixError
from regmix.training.train_config import digest

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

BACKENDS = ("none", "csv", "tensorboard", "mlflow", "wandb")
KINDS = ("proxy", "final")
WANDB_MODES = ("offline", "online")
STATE = "tracking.json"
"""The tracker run an attempt logs into, kept in the run's work folder for its resumption."""

_MODULES = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "mlflow": ("mlflow",),
    "wandb": ("wandb",),
}
"""The modules a backend needs (any one of them); the extra that installs them has its name."""
_NOT_IN_GROUP = ("tracking", "evaluation")  # evaluation scores the trained models, after
_WORKFLOW_ONLY = ("resources",)
"""Config keys that do not change what the workflow computes, so not its group's identity."""


@dataclass(frozen=True)
class MlflowOptions:
    tracking_uri: str | None = None
    """An MLflow tracking URI (a server, `sqlite:///...`); None: a file store in <dir>/mlflow."""


@dataclass(frozen=True)
class WandbOptions:
    project: str = "regmix"
    """The W&B project the runs go to."""
    entity: str | None = None
    """The W&B user or team (None: the logged-in user's default)."""
    mode: str = "offline"
    """'offline' writes under <dir>/wandb for a later `wandb sync`; 'online' needs a login."""

    def __post_init__(self) -> None:
        if self.mode not in WANDB_MODES:
            raise RegmixError(
                f"tracking.wandb.mode: expected one of {', '.join(WANDB_MODES)}, got {self.mode!r}"
            )


@dataclass(frozen=True)
class TrackingConfig:
    """Where a run's hyper-parameters and losses are tracked (the workflow's `tracking`)."""

    backend: str = "none"
    """none | csv | tensorboard | mlflow | wandb."""
    log_every: int = 10
    """Log the training loss every this many optimizer steps (one device sync each time)."""
    dir: str = "results/tracking"
    """Folder of the trackers' local files."""
    group: str = "regmix"
    """The workflow the runs belong to; the workflow passes `<target>-<config fingerprint>`."""
    mlflow: MlflowOptions = field(default_factory=MlflowOptions)
    wandb: WandbOptions = field(default_factory=WandbOptions)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise RegmixError(
                f"tracking.backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if not isinstance(self.log_every, int) or self.log_every < 1:
            raise RegmixError(
                f"tracking.log_every: must be an integer >= 1, got {self.log_every!r}"
            )
        if not self.group:
            raise RegmixError("tracking.group: must not be empty")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "tracking") -> TrackingConfig:
        """From the workflow's `tracking` section (or `--tracking` JSON), naming unknown keys."""
        values = dict(values)
        _check_keys(cls, values, source)
        for name, options in (("mlflow", MlflowOptions), ("wandb", WandbOptions)):
            section = values.get(name) or {}
            if not isinstance(section, Mapping):
                raise RegmixError(f"{source}.{name}: expected a mapping")
            _check_keys(options, section, f"{source}.{name}")
            values[name] = options(**section)
        if values.get("group") is None:
            values.pop("group", None)
        return cls(**values)

    @property
    def enabled(self) -> bool:
        return self.backend != "none"


def _check_keys(cls: type, values: Mapping, source: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        expected = ", ".join(sorted(known))
        raise RegmixError(f"{source}: unknown key {unknown[0]!r} (expected one of: {expected})")


# --- the workflow's side --------------------------------------------------------------------


def workflow_group(config: Mapping[str, Any]) -> str:
    """`<target>-<fingerprint>` of a validated workflow config: the runs of one workflow.

    The fingerprint covers every setting that changes what the workflow computes; the tracking
    section and the machine resources a job asks for are left out.
    """
    relevant = {
        key: (
            {k: v for k, v in value.items() if k not in _WORKFLOW_ONLY}
            if isinstance(value, Mapping)
            else value
        )
        for key, value in config.items()
        if key not in _NOT_IN_GROUP
    }
    target = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(config.get("target", "target"))).strip("_")
    return f"{target or 'target'}-{digest(relevant)[:8]}"


def tracking_settings(config: Mapping[str, Any]) -> dict:
    """The `--tracking` JSON for the training commands: the section, its group filled in."""
    section = dict(config.get("tracking") or {})
    section["group"] = section.get("group") or workflow_group(config)
    return section


# --- one run's logger -----------------------------------------------------------------------


def check_installed(backend: str) -> None:
    """Fail in one line, naming the extra to install, when a backend's package is missing."""
    modules = _MODULES.get(backend, ())
    if modules and not any(importlib.util.find_spec(m) is not None for m in modules):
        raise RegmixError(
            f"tracking.backend: {backend} needs the {modules[0]} package; "
            f'install it with: pip install "regmix[{backend}]"'
        )


def hyperparameters(
    run: str,
    kind: str,
    group: str,
    fingerprint: str,
    weights: Mapping[str, float],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """What a tracker records once per run: who it is, its mixture and how it was trained.

    Weights are flat `weight.<domain>` keys (the runs table's columns); the training settings
    nest under `train` (loggers flatten them to `train/<field>`).
    """
    return {
        "run": run,
        "kind": kind,
        "group": group,
        "fingerprint": fingerprint,
        **{f"weight.{domain}": float(w) for domain, w in weights.items()},
        "train": dict(settings),
    }


def log_hyperparameters(logger: Logger, params: Mapping[str, Any]) -> None:
    """Record a run's hyper-parameters with its tracker (on rank 0).

    Lightning's loggers write them as MLflow params, W&B config, or an hparams.yaml beside the
    CSV and TensorBoard files; TensorBoard's HParams dashboard also needs them in its event
    file, with the metrics to show beside them (their values come from the scalars logged).
    """
    logger.log_hyperparams(params)
    from lightning.pytorch.loggers import TensorBoardLogger

    if isinstance(logger, TensorBoardLogger) and _is_global_zero():
        try:
            from torch.utils.tensorboard.summary import hparams
        except ImportError:  # tensorboardX alone, as Lightning allows
            from tensorboardX.summary import hparams
        summaries = hparams(flat_hyperparameters(params), dict.fromkeys(TENSORBOARD_METRICS, 0.0))
        for summary in summaries:
            logger.experiment.file_writer.add_summary(summary)


TENSORBOARD_METRICS = ("val/mean", "train/loss")
"""The metrics TensorBoard's HParams dashboard shows per run."""


def flat_hyperparameters(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as `train/<field>` keys; values other than numbers and text as text."""
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_hyperparameters(value, f"{name}/"))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def build_logger(
    config: TrackingConfig,
    run: str,
    kind: str,
    state_dir: str | os.PathLike,
    resume_step: int | None = None,
) -> Logger | None:
    """The Lightning logger of one tracker run, or None for `backend: none`.

    `state_dir` is the run's work folder (it holds the checkpoint); `resume_step` is the step
    of the checkpoint the run resumes from, None when it starts afresh. Every process of a
    multi-device run builds it; only rank 0 touches files (Lightning's loggers log on rank 0).
    """
    if not config.enabled:
        return None
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    check_installed(config.backend)
    builders = {
        "csv": _csv_logger,
        "tensorboard": _tensorboard_logger,
        "mlflow": _mlflow_logger,
        "wandb": _wandb_logger,
    }
    return builders[config.backend](config, run, kind, Path(state_dir), resume_step)


def _is_global_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _run_folder(config: TrackingConfig, kind: str, run: str) -> Path:
    """<dir>/<backend>/<group>/<kind>/<run>: Lightning's <root>/<name>/<version>."""
    return Path(config.dir) / config.backend / config.group / kind / run


def _csv_logger(config, run, kind, state_dir, resume_step):
    from lightning.pytorch.loggers import CSVLogger

    folder = _run_folder(config, kind, run)
    kept = []
    if _is_global_zero():
        if resume_step is not None:
            kept = _csv_rows_up_to(folder / "metrics.csv", resume_step)
        shutil.rmtree(folder, ignore_errors=True)  # rewritten below; an earlier attempt's rest
    logger = CSVLogger(
        Path(config.dir) / config.backend,
        name=f"{config.group}/{kind}",
        version=run,
        # Write on every call: rows come every log_every steps, and a killed run keeps them.
        flush_logs_every_n_steps=1,
    )
    for step, row in kept:
        logger.log_metrics(row, step)
    return logger


def _csv_rows_up_to(path: Path, step: int) -> list[tuple[int, dict[str, float]]]:
    """An earlier attempt's CSV rows at steps <= `step` (those after it are trained again)."""
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    kept = []
    for row in rows:
        at = int(row.pop("step"))
        if at <= step:
            kept.append((at, {k: float(v) for k, v in row.items() if v not in ("", None)}))
    return kept


def _tensorboard_logger(config, run, kind, state_dir, resume_step):
    from lightning.pytorch.loggers import TensorBoardLogger

    folder = _run_folder(config, kind, run)
    if resume_step is None and _is_global_zero():
        shutil.rmtree(folder, ignore_errors=True)  # an abandoned attempt's events
    # purge_step: TensorBoard hides the events an interrupted attempt wrote past the checkpoint
    # (those at its step were logged before it was taken).
    return TensorBoardLogger(
        Path(config.dir) / config.backend,
        name=f"{config.group}/{kind}",
        version=run,
        default_hp_metric=False,
        purge_step=resume_step + 1 if resume_step is not None else None,
    )


def mlflow_tracking_uri(config: TrackingConfig) -> str:
    """The configured MLflow URI, or a file store under <dir>/mlflow (an absolute file: URI)."""
    return config.mlflow.tracking_uri or f"file:{(Path(config.dir) / 'mlflow').resolve()}"


def _mlflow_logger(config, run, kind, state_dir, resume_step):
    uri = mlflow_tracking_uri(config)
    if uri.startswith("file:"):
        # MLflow 3 keeps its file store in maintenance mode behind this switch. Here it is the
        # right store: parallel jobs (on a cluster's shared disk too) each write their own files,
        # where SQLite would lock; `mlflow migrate-filestore` converts it to a database later.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    where = {"backend": "mlflow", "uri": uri, "group": config.group}
    state = _read_state(state_dir, where)
    client = MlflowClient(uri)
    run_id = None
    if state is not None and _is_global_zero():
        try:
            if (
                resume_step is not None
                and client.get_run(state["id"]).info.lifecycle_stage == "active"
            ):
                run_id = state["id"]
            else:
                client.delete_run(state["id"])  # an abandoned attempt without a checkpoint
        except MlflowException:
            run_id = None  # deleted by hand, or another store: start a new tracker run
    if _is_global_zero():
        _ensure_mlflow_experiment(client, config.group)
    logger = MLFlowLogger(
        experiment_name=config.group,
        run_name=run,
        tracking_uri=uri,
        tags={"regmix.run": run, "regmix.kind": kind, "regmix.group": config.group},
        run_id=run_id,
    )
    if _is_global_zero():
        _write_state(state_dir, {**where, "id": logger.run_id})
    return logger


def _ensure_mlflow_experiment(client, name: str) -> None:
    """Create the group's experiment; parallel jobs may race to it, and one of them wins."""
    from mlflow.exceptions import MlflowException

    if client.get_experiment_by_name(name) is not None:
        return
    try:
        client.create_experiment(name)
    except MlflowException:
        if client.get_experiment_by_name(name) is None:
            raise


def _wandb_logger(config, run, kind, state_dir, resume_step):
    from lightning.pytorch.loggers import WandbLogger

    options = config.wandb
    where = {
        "backend": "wandb",
        "project": options.project,
        "entity": options.entity,
        "group": config.group,
    }
    state = _read_state(state_dir, where)
    # A resumed attempt continues its run; a fresh start is a new run (W&B keeps its steps).
    run_id = state["id"] if state is not None and resume_step is not None else uuid.uuid4().hex[:16]
    Path(config.dir).mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(
        name=run,
        id=run_id,
        project=options.project,
        entity=options.entity,
        group=config.group,
        job_type=kind,
        save_dir=config.dir,
        offline=options.mode == "offline",
        resume="allow",
    )
    if _is_global_zero():
        _write_state(state_dir, {**where, "id": run_id})
    return logger


def finish_logger(logger: Logger | None, failed: bool = False) -> None:
    """End a run's tracker run before the job trains its next run.

    Lightning finalizes CSV, TensorBoard and MLflow itself; a W&B run stays open in the process
    (and the next WandbLogger would log into it) until `wandb.finish`.
    """
    if logger is None:
        return
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(logger, WandbLogger) and _is_global_zero():
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)


def _read_state(state_dir: Path, where: Mapping[str, Any]) -> dict | None:
    """The tracker run an earlier attempt logged into, if it was on this same tracker."""
    path = state_dir / STATE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or "id" not in state:
        return None
    return state if all(state.get(k) == v for k, v in where.items()) else None


def _write_state(state_dir: Path, state: Mapping[str, Any]) -> None:
    from regmix.files import write_json

    write_json(dict(state), state_dir / STATE)
