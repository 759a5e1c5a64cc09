"""Training a language model on one data mixture with PyTorch Lightning.

One function, `train_mixture`, trains one run: the proxies of a RegMix sweep and the final
models differ only in their `TrainConfig` (preset, tokens, devices, precision). A run

- draws its batches as a pure function of (seed, step), so a resumed run sees the same data;
- evaluates every validation domain on fixed windows every `eval_every` steps and at the end;
- checkpoints atomically into its work folder, keyed by a fingerprint of settings, mixture and
  data, so a killed run resumes where it stopped and a stale checkpoint is never resumed;
- stops at the first non-finite training loss and reports itself "diverged" instead of failing
  the job or writing a row of garbage;
- leaves a copy of its small results in the work folder, so a finished run is re-published,
  not retrained, if a workflow manager deletes the outputs of a failed multi-run job;
- reports to an experiment tracker when one is configured (regmix.training.tracking): its
  mixture and settings as hyper-parameters, the training loss every few steps, each
  evaluation's losses.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.fabric.utilities.warnings import disable_possible_user_warnings
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.environments import LightningEnvironment

from regmix.data.content import Contents, read_contents
from regmix.data.loader import (
    MixedBatches,
    any_index,
    leading_share,
    open_shards,
    vocab_size,
)
from regmix.data.loader import validation_windows as make_validation_windows
from regmix.errors import RegmixError
from regmix.search.runs import RUN_LOSS_COLUMNS, STATUS_DIVERGED, STATUS_OK
from regmix.training import reuse
from regmix.training.devices import lightning_plugins
from regmix.training.language_modeling import (
    LanguageModeling,
    RunProgress,
    TrackerLogging,
)
from regmix.training.results import MODEL, RunResult, load_result, save_result
from regmix.training.reuse import (
    corpus_fingerprint,
    data_record,
    training_key,
    weighted,
)
from regmix.training.tracking import (
    TrackingConfig,
    build_logger,
    finish_logger,
    hyperparameters,
)
from regmix.training.train_config import TrainConfig, digest
from regmix.training.validation import keep_weights

CHECKPOINT = "last.ckpt"
__all__ = ["RunResult", "TrainConfig"]

# Lightning's notes that do not apply here: the data order is resumed by step (not by a
# stateful loader), batches are generated in-process (no workers needed), a diverged step
# returns None on purpose, and Lightning 2.6 uses a torch pytree API that torch 2.13 deprecates.
disable_possible_user_warnings()
for _message in (
    ".*resuming from a checkpoint that ended before the epoch ended.*",
    ".*`training_step` returned `None`.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    # A local run on a machine that has SLURM's tools installed is not a mistake.
    ".*The `srun` command is available on your system but is not used.*",
):
    warnings.filterwarnings("ignore", message=_message)


# --- one run, end to end --------------------------------------------------------------------


def precision_for(config: TrainConfig) -> str:
    if config.precision != "auto":
        return config.precision
    on_gpu = config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def build_trainer(
    config: TrainConfig, callbacks: Sequence[L.Callback], logger: Logger | None = None
) -> L.Trainer:
    """A Trainer with the per-step costs we do not use (progress bar, summary) off, and no
    logger unless an experiment tracker's is given."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    single = config.devices in (1, "1") and config.strategy == "auto"
    precision = precision_for(config)
    if precision != "32-true":
        torch.set_float32_matmul_precision("high")
    trainer = L.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        precision=precision,
        max_steps=config.steps,
        gradient_clip_val=config.grad_clip or None,
        callbacks=list(callbacks),
        # A single-process run ignores SLURM's variables instead of misreading its job layout.
        plugins=[LightningEnvironment()] if single else (lightning_plugins() or None),
        logger=logger if logger is not None else False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    # Accumulate over exactly the micro-batches train_dataloader cuts each device's share into,
    # which needs the world size Lightning settled on (devices="auto", -1, ...).
    per_device = config.batch_size // trainer.world_size
    trainer.accumulate_grad_batches = max(1, per_device // (config.micro_batch_size or per_device))
    return trainer


def describe_device(trainer: L.Trainer) -> str:
    device = trainer.strategy.root_device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{trainer.world_size} × {name} ({trainer.precision})"
    return f"cpu, {torch.get_num_threads()} thread(s) × {trainer.world_size} ({trainer.precision})"


def loss_table(run: str, evaluations: list[dict], tokens_per_step: int) -> pd.DataFrame:
    """Long-format losses: one row per (evaluation step, validation domain)."""
    rows = [
        (run, e["step"], e["step"] * tokens_per_step, domain, loss)
        for e in evaluations
        for domain, loss in e["losses"].items()
    ]
    table = pd.DataFrame(rows, columns=RUN_LOSS_COLUMNS)
    return table.astype({"step": "int64", "tokens": "int64", "loss": "float64"})


def train_mixture(
    data_dir: str | os.PathLike,
    run: str,
    weights: Mapping[str, float],
    config: TrainConfig,
    work_dir: str | os.PathLike,
    callbacks: Sequence[L.Callback] = (),
    keep_model: bool = False,
    tracking: TrackingConfig | None = None,
    kind: str = "proxy",
    contents: Contents | None = None,
) -> RunResult:
    """Train one run on one mixture, resuming from its checkpoint in `work_dir` if it has one.

    `work_dir` is the run's own folder; its results are kept there under the run's
    fingerprint (`<work_dir>/<fingerprint>/`: its training and the content of the train
    domains it weights), and a finished run returns them without training again. A proxy keeps
    its final weights (so that it can be measured again on changed validation data); with
    `keep_model` the trained model is kept exported for Hugging Face instead (final models are
    used). `contents` is the data's (regmix.data.content), read if not given. `tracking` names
    the experiment tracker a trained run reports to (as a `kind` run: proxy or final); it
    changes nothing the run computes.
    """
    started = time.perf_counter()
    contents = contents if contents is not None else read_contents(data_dir)
    valid = open_shards(data_dir, "valid")
    train = open_shards(data_dir, "train", list(weighted(weights)))
    vocab = vocab_size(data_dir)
    model_config = config.model_config(vocab)
    key = training_key(asdict(config), weights, keep_model)
    data = data_record(weights, contents)
    fingerprint = digest(
        {"key": key, "train": {d: c["fingerprint"] for d, c in data["train"].items()}}
    )
    folder = Path(work_dir) / fingerprint
    # Every rank of a multi-device run gets here; only rank 0 touches shared files.
    is_global_zero = rank_zero_only.rank == 0
    finished = load_result(folder, is_global_zero)
    if finished is not None:
        return finished
    if is_global_zero:
        _remove_stale(Path(work_dir), keep=folder)
    folder.mkdir(parents=True, exist_ok=True)

    train = leading_share(train, config.data_fraction)
    batches = MixedBatches(train, weights, config.batch_size, config.seq_len, config.seed)
    windows = make_validation_windows(valid, config.seq_len, config.eval_windows)
    checkpoint = folder / CHECKPOINT
    progress = RunProgress(config, windows, checkpoint if config.checkpoint_every else None, run)
    module = LanguageModeling(model_config, config, batches)
    resume = checkpoint if checkpoint.is_file() else None
    callbacks = [progress, *callbacks]
    logger = None
    if tracking is not None and tracking.enabled:
        resume_step = checkpoint_step(resume) if resume is not None else None
        logger = build_logger(tracking, run, kind, folder, resume_step)
        hparams = hyperparameters(run, kind, tracking.group, fingerprint, weights, asdict(config))
        # First: a step's training loss is logged before RunProgress checkpoints that step.
        callbacks.insert(0, TrackerLogging(hparams, tracking.log_every, config.steps))
    trainer = build_trainer(config, callbacks, logger)
    try:
        trainer.fit(module, ckpt_path=resume)
    except BaseException:
        finish_logger(logger, failed=True)
        raise
    finish_logger(logger)

    losses = loss_table(run, progress.evaluations, config.tokens_per_step)
    finite = bool(np.isfinite(losses["loss"]).all())
    diverged = module.diverged_at is not None or not finite
    if not diverged and trainer.global_step != config.steps:
        raise RegmixError(
            f"run {run}: training stopped at step {trainer.global_step} of {config.steps}"
        )
    steps = module.diverged_at if module.diverged_at is not None else trainer.global_step
    record = {
        "run": run,
        "status": STATUS_DIVERGED if diverged else STATUS_OK,
        "steps": int(steps),
        "tokens": int(steps) * config.tokens_per_step,
        "params": model_config.non_embedding_params,
        "params_total": model_config.total_params,
        "tokens_per_s": round(steps * config.tokens_per_step / progress.train_seconds, 1)
        if progress.train_seconds > 0
        else None,
        "train_seconds": round(progress.train_seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "resumed_from_step": progress.resumed_from_step,
        "device": describe_device(trainer),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "seed": config.seed,
        "settings_fingerprint": config.fingerprint(),
        "fingerprint": fingerprint,
        "training_key": key,
        "code": reuse.code_fingerprint(),
        "keep_model": keep_model,
        "corpus": corpus_fingerprint(contents),
        "data": data,
        "weights": {d: float(w) for d, w in weights.items()},
        "settings": asdict(config),
    }
    result = RunResult(losses, record, folder=folder, is_global_zero=trainer.is_global_zero)
    if trainer.is_global_zero:
        if keep_model:
            export_model(module.model, data_dir, folder / MODEL)
        else:
            keep_weights(module.model, folder)
        save_result(result, folder)
        checkpoint.unlink(missing_ok=True)  # the results are kept; the heavy state is not
    return result


def checkpoint_step(path: Path) -> int:
    """The optimizer step a checkpoint was taken at (memory-mapped: its tensors stay on disk)."""
    return int(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["global_step"])


def _remove_stale(run_work_dir: Path, keep: Path) -> None:
    """Drop checkpoints and results of this run trained under other settings, mixture or data."""
    if not run_work_dir.is_dir():
        return
    for child in run_work_dir.iterdir():
        if child != keep and child.is_dir():
            shutil.rmtree(child)


def export_model(model: torch.nn.Module, data_dir: str | os.PathLike, folder: Path) -> None:
    """Export for Hugging Face with the data's tokenizer (its tokenizer.json, or bytes)."""
    from regmix.training.export import export_hf

    eos_id = any_index(data_dir)["eos_id"]
    tokenizer = Path(data_dir) / "tokenizer.json"
    model = getattr(model, "_orig_mod", model)  # an in-place compiled model keeps its names
    export_hf(model, folder, eos_id, tokenizer if tokenizer.is_file() else None)
