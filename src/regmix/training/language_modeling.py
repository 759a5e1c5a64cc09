"""The Lightning side of training one run: the module (next-token prediction with RegMix's
optimizer and schedule), its step-indexed batches, and the callbacks that evaluate, checkpoint,
clock and report a run at optimizer-step boundaries. `regmix.training.train` puts them together.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from regmix.errors import RegmixError
from regmix.training.model import Transformer, next_token_loss
from regmix.training.model_config import ModelConfig
from regmix.training.tracking import log_hyperparameters
from regmix.training.train_config import TrainConfig
from regmix.training.validation import validation_losses


def lr_factor(step: int, config: TrainConfig) -> float:
    """Learning rate at optimizer step `step` as a fraction of the peak (RegMix's `get_lr`)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.min_lr / config.lr
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - floor)


class StepBatches(IterableDataset):
    """The batches of steps first..last-1, this process's share, cut into micro-batches.

    Lightning restarts a dataloader from its beginning after a resume; starting at the
    restored step makes the data order a function of (seed, step) across restarts.
    """

    def __init__(
        self,
        batches: Callable[[int], torch.Tensor],
        first: int,
        last: int,
        rank: int = 0,
        world_size: int = 1,
        micro_batch_size: int | None = None,
    ) -> None:
        self.batches, self.first, self.last = batches, first, last
        self.rank, self.world_size = rank, world_size
        self.micro_batch_size = micro_batch_size

    def __iter__(self):
        for step in range(self.first, self.last):
            share = self.batches(step)[self.rank :: self.world_size]
            if self.micro_batch_size is None:
                yield share
            else:
                yield from share.split(self.micro_batch_size)


class LanguageModeling(L.LightningModule):
    """Next-token prediction on mixed-domain batches, AdamW with RegMix's schedule."""

    def __init__(
        self,
        model_config: ModelConfig,
        config: TrainConfig,
        batches: Callable[[int], torch.Tensor],
    ) -> None:
        super().__init__()
        self.model_config = model_config
        self.config = config
        self.batches = batches
        self.model: torch.nn.Module | None = None
        self.diverged_at: int | None = None

    def configure_model(self) -> None:
        if self.model is not None:
            return
        torch.manual_seed(self.config.seed)
        self.model = Transformer(self.model_config)
        if self.config.compile:
            self.model.compile()  # in place: parameter names (and checkpoints) stay the same

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        loss = next_token_loss(self.model, batch)
        finite = bool(torch.isfinite(loss))
        if self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            # Returning None skips the backward pass and the update; stop here.
            self.diverged_at = self.global_step
            self.trainer.should_stop = True
            return None
        return loss

    def configure_optimizers(self):
        config = self.config
        optimizer = torch.optim.AdamW(
            self.parameters(),
            lr=config.lr,
            betas=(config.beta1, config.beta2),
            weight_decay=config.weight_decay,
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, config)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        micro = self.config.micro_batch_size
        if self.config.batch_size % trainer.world_size:
            raise RegmixError(
                f"train.batch_size: {self.config.batch_size} windows do not split evenly over "
                f"{trainer.world_size} devices"
            )
        per_device = self.config.batch_size // trainer.world_size
        dataset = StepBatches(
            self.batches,
            first=trainer.global_step,
            last=self.config.steps,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            micro_batch_size=micro if micro is not None and micro < per_device else None,
        )
        return DataLoader(
            dataset, batch_size=None, pin_memory=trainer.strategy.root_device.type == "cuda"
        )


class RunProgress(L.Callback):
    """Evaluates, checkpoints and clocks a run at optimizer-step boundaries.

    Its state (the evaluations so far and the training seconds) rides in the checkpoint, so a
    resumed run ends with the same loss table as one that was never interrupted. Evaluation
    and checkpoint time are kept out of the training seconds.
    """

    def __init__(
        self,
        config: TrainConfig,
        windows: Mapping[str, torch.Tensor],
        checkpoint: Path | None,
        run: str = "",
    ) -> None:
        self.config = config
        self.windows = windows
        self.checkpoint = checkpoint
        self.run = run
        self.evaluations: list[dict] = []
        self.train_seconds = 0.0
        self.resumed_from_step: int | None = None
        self._mark = 0.0

    def state_dict(self) -> dict:
        return {"evaluations": self.evaluations, "train_seconds": self.train_seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.evaluations = list(state_dict["evaluations"])
        self.train_seconds = float(state_dict["train_seconds"])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > 0:
            self.resumed_from_step = trainer.global_step
        self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return
        self.train_seconds += time.perf_counter() - self._mark
        step = trainer.global_step
        if pl_module.diverged_at is None:
            if step == self.config.steps or (
                self.config.eval_every and step % self.config.eval_every == 0
            ):
                self.evaluate(trainer, pl_module, step)
            every = self.config.checkpoint_every
            if (
                self.checkpoint is not None
                and every
                and step % every == 0
                and step < self.config.steps
            ):
                self.save(trainer)
        self._mark = time.perf_counter()

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        pl_module.eval()
        with trainer.precision_plugin.forward_context():
            losses = validation_losses(pl_module.model, self.windows, self.eval_batch_size)
        pl_module.train()
        self.evaluations.append({"step": step, "losses": losses})
        if trainer.logger is not None:
            metrics = {f"val/{domain}": loss for domain, loss in losses.items()}
            metrics["val/mean"] = sum(losses.values()) / len(losses)
            trainer.logger.log_metrics(metrics, step=step)  # Lightning's loggers: rank 0 only
        if trainer.is_global_zero:
            self.report(step, losses)

    def report(self, step: int, losses: Mapping[str, float]) -> None:
        """One progress line per evaluation, for whoever follows a long run's log."""
        tokens = step * self.config.tokens_per_step
        speed = tokens / self.train_seconds if self.train_seconds else 0.0
        mean = sum(losses.values()) / len(losses)
        print(
            f"{self.run}: step {step}/{self.config.steps}, {tokens:,} tokens, "
            f"{speed:,.0f} tokens/s, mean validation loss {mean:.4f}",
            file=sys.stderr,
            flush=True,
        )

    @property
    def eval_batch_size(self) -> int:
        return self.config.micro_batch_size or self.config.batch_size

    def save(self, trainer: L.Trainer) -> None:
        """Write the checkpoint beside its final name and rename it: a kill never truncates it."""
        partial = self.checkpoint.with_name(self.checkpoint.name + ".partial")
        trainer.save_checkpoint(partial)  # collective; rank 0 writes
        if trainer.is_global_zero:
            os.replace(partial, self.checkpoint)
        trainer.strategy.barrier("regmix checkpoint rename")


class TrackerLogging(L.Callback):
    """Reports a run to its experiment tracker (the Trainer's logger): the hyper-parameters
    when training starts, the training loss every `every` optimizer steps and at the last.

    Other steps cost a modulo; a logged step costs one `.item()` (the only device sync that
    logging adds). With gradient accumulation the step's loss is the mean of its micro-batches'
    (Lightning hands each one over already divided by their number). In a multi-device run it
    is rank 0's share of the batch, not averaged over devices, to avoid a collective.
    Validation losses are logged by RunProgress as it evaluates.
    """

    def __init__(self, hyperparameters: Mapping, every: int, last: int) -> None:
        self.hyperparameters = hyperparameters
        self.every, self.last = every, last
        self._sum: torch.Tensor | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.logger is not None:
            log_hyperparameters(trainer.logger, self.hyperparameters)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not outputs or trainer.logger is None:  # a diverged step returns no loss
            self._sum = None
            return
        boundary = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        step = trainer.global_step if boundary else trainer.global_step + 1
        if step % self.every and step != self.last:
            return
        loss = outputs["loss"].detach()
        self._sum = loss if self._sum is None else self._sum + loss
        if boundary:
            trainer.logger.log_metrics({"train/loss": float(self._sum)}, step=step)
            self._sum = None
