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

import functools
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.fabric.utilities.warnings import disable_possible_user_warnings
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.environments import LightningEnvironment

from regmix.data.loader import (
    MixedBatches,
    any_index,
    domain_index,
    leading_share,
    open_shards,
    vocab_size,
)
from regmix.data.loader import validation_windows as make_validation_windows
from regmix.errors import RegmixError
from regmix.files import read_table, write_json, write_table
from regmix.search.mixtures import WEIGHT, check_weights, mixture_domains
from regmix.search.runs import RUN_LOSS_COLUMNS, RUN_LOSSES, RUN_RECORD, STATUS_DIVERGED, STATUS_OK
from regmix.training.devices import lightning_plugins
from regmix.training.language_modeling import (
    LanguageModeling,
    RunProgress,
    TrackerLogging,
)
from regmix.training.tracking import (
    TrackingConfig,
    build_logger,
    finish_logger,
    hyperparameters,
)
from regmix.training.train_config import TRAINING_MODULES, TrainConfig, digest

CHECKPOINT = "last.ckpt"
MODEL = "hf"
"""A kept model's folder (Hugging Face LlamaForCausalLM format) beside a run's results."""

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


@dataclass
class RunResult:
    """What one run produced: its loss table and its record (run.json)."""

    losses: pd.DataFrame
    record: dict = field(default_factory=dict)
    reused: bool = False
    """True when the run had finished before and its kept results were returned."""
    folder: Path | None = None
    """The work folder holding the kept results (and the exported model, if kept)."""
    is_global_zero: bool = True
    """False in the other processes of a multi-device run: only rank 0 writes outputs."""


def data_fingerprint(
    data_dir: str | os.PathLike, train: Sequence[str], valid: Sequence[str]
) -> str:
    """Hash of the shards' sidecars (token counts, dtype, tokenizer) that a run reads."""
    sidecars = {
        f"{split}/{domain}": _without_paths(domain_index(data_dir, split, domain))
        for split, domains in (("train", train), ("valid", valid))
        for domain in domains
    }
    return digest(sidecars)


def _without_paths(index: dict) -> dict:
    """A domain's index less its shard file names: a run depends on the tokens, not on how the
    data stage grouped its files into jobs."""
    return {k: v for k, v in index.items() if k != "shards"}


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
) -> RunResult:
    """Train one run on one mixture, resuming from its checkpoint in `work_dir` if it has one.

    `work_dir` is the run's own folder; its results are kept there under the run's
    fingerprint (`<work_dir>/<fingerprint>/`), and a finished run returns them without
    training again. With `keep_model` the trained model is kept too, exported for Hugging
    Face (proxies are only measured; final models are used). `tracking` names the experiment
    tracker a trained run reports to (as a `kind` run: proxy or final); it changes nothing
    the run computes.
    """
    started = time.perf_counter()
    valid = open_shards(data_dir, "valid")
    train = open_shards(data_dir, "train", list(weights))
    vocab = vocab_size(data_dir)
    model_config = config.model_config(vocab)
    fingerprint = digest(
        {
            "settings": config.fingerprint(),
            "mixture": {d: round(float(w), 12) for d, w in sorted(weights.items())},
            "data": data_fingerprint(data_dir, list(train), list(valid)),
            "code": code_fingerprint(),
            "keep_model": keep_model,
        }
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
        "weights": {d: float(w) for d, w in weights.items()},
        "settings": asdict(config),
    }
    result = RunResult(losses, record, folder=folder, is_global_zero=trainer.is_global_zero)
    if trainer.is_global_zero:
        if keep_model:
            export_model(module.model, data_dir, folder / MODEL)
        save_result(result, folder)
        checkpoint.unlink(missing_ok=True)  # the results are kept; the heavy state is not
    return result


def checkpoint_step(path: Path) -> int:
    """The optimizer step a checkpoint was taken at (memory-mapped: its tensors stay on disk)."""
    return int(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["global_step"])


@functools.cache
def code_fingerprint() -> str:
    """Hash of TRAINING_MODULES' source, so results of older training code are never reused."""
    package = Path(__file__).parents[1]
    sources = [package / f"{module.replace('.', '/')}.py" for module in TRAINING_MODULES]
    return digest([path.read_text() for path in sources])


def _remove_stale(run_work_dir: Path, keep: Path) -> None:
    """Drop checkpoints and results of this run trained under other settings, mixture or data."""
    if not run_work_dir.is_dir():
        return
    for child in run_work_dir.iterdir():
        if child != keep and child.is_dir():
            shutil.rmtree(child)


def save_result(result: RunResult, folder: str | os.PathLike) -> None:
    folder = Path(folder)
    write_table(result.losses, folder / RUN_LOSSES)
    write_json(result.record, folder / RUN_RECORD)  # written last: its presence marks "finished"


def load_result(folder: str | os.PathLike, is_global_zero: bool = True) -> RunResult | None:
    """A finished run's results, or None if the run has not finished."""
    folder = Path(folder)
    if not (folder / RUN_RECORD).is_file() or not (folder / RUN_LOSSES).is_file():
        return None
    record = json.loads((folder / RUN_RECORD).read_text())
    return RunResult(
        read_table(folder / RUN_LOSSES),
        record,
        reused=True,
        folder=folder,
        is_global_zero=is_global_zero,
    )


def export_model(model: torch.nn.Module, data_dir: str | os.PathLike, folder: Path) -> None:
    """Export for Hugging Face with the data's tokenizer (its tokenizer.json, or bytes)."""
    from regmix.training.export import export_hf

    eos_id = any_index(data_dir)["eos_id"]
    tokenizer = Path(data_dir) / "tokenizer.json"
    model = getattr(model, "_orig_mod", model)  # an in-place compiled model keeps its names
    export_hf(model, folder, eos_id, tokenizer if tokenizer.is_file() else None)


def publish(result: RunResult, out_dir: str | os.PathLike) -> None:
    """Write a run's declared outputs (`<out_dir>/losses.parquet`, `run.json`, and the kept
    model in `<out_dir>/hf/`) atomically: the model folder is copied aside and renamed."""
    out_dir = Path(out_dir)
    kept = result.folder / MODEL if result.folder is not None else None
    if kept is not None and kept.is_dir():
        staging = out_dir / f".{MODEL}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(kept, staging)
        shutil.rmtree(out_dir / MODEL, ignore_errors=True)
        os.replace(staging, out_dir / MODEL)
    save_result(result, out_dir)


# --- a job of several proxies ---------------------------------------------------------------


def read_mixture_weights(mixtures_path: str | os.PathLike, runs: Sequence[str]) -> dict[str, dict]:
    """Each requested run's mixture, {run: {domain: weight}}, from a mixture table."""
    table = read_table(mixtures_path, ["run"])
    check_weights(table, str(mixtures_path))
    table = table.set_index(table["run"].astype(str))
    missing = [r for r in runs if r not in table.index]
    if missing:
        raise RegmixError(f"{mixtures_path}: no run named {missing[0]!r}")
    domains = mixture_domains(table)
    return {run: {d: float(table.at[run, WEIGHT + d]) for d in domains} for run in runs}


def train_proxies(
    data_dir: str | os.PathLike,
    mixtures_path: str | os.PathLike,
    runs: Sequence[str],
    config: TrainConfig,
    out_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    callbacks: Sequence[L.Callback] = (),
    keep_model: bool = False,
    tracking: TrackingConfig | None = None,
    kind: str = "proxy",
) -> list[RunResult]:
    """Train several runs back to back in this process (RegMix's proxies, `proxies_per_job`).

    One process pays the imports and first-step costs once for all of them. A diverged run is
    recorded and the job goes on with the next. `keep_model` also publishes each trained model;
    each trained run reports to `tracking`'s tracker as a `kind` run.
    """
    if len(set(runs)) != len(runs):
        raise RegmixError("--runs: a run is listed twice")
    mixtures = read_mixture_weights(mixtures_path, runs)
    results = []
    for run in runs:
        result = train_mixture(
            data_dir,
            run,
            mixtures[run],
            config,
            Path(work_dir) / run,
            callbacks,
            keep_model,
            tracking,
            kind,
        )
        if result.is_global_zero:
            publish(result, Path(out_dir) / run)
            print(summary_line(result), file=sys.stderr, flush=True)
        results.append(result)
    return results


def train_final(
    data_dir: str | os.PathLike,
    mixtures_path: str | os.PathLike,
    run: str,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    tracking: TrackingConfig | None = None,
) -> RunResult:
    """Train one final model on its mixture and publish its losses, record and HF export."""
    return train_proxies(
        data_dir,
        mixtures_path,
        [run],
        config,
        out_dir,
        work_dir,
        keep_model=True,
        tracking=tracking,
        kind="final",
    )[0]


def summary_line(result: RunResult) -> str:
    r = result.record
    if result.reused:
        return f"{r['run']}: {r['status']}, finished earlier; results re-published"
    speed = f"{r['tokens_per_s']:,.0f} tokens/s" if r.get("tokens_per_s") else "no steps"
    return (
        f"{r['run']}: {r['status']}, {r['steps']} steps, {r['tokens']:,} tokens, {speed}, "
        f"{r['wall_seconds']:.1f} s"
    )
