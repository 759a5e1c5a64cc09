"""How one run is trained: `TrainConfig`, the settings a proxy or final model is trained with.

Kept free of torch and Lightning so that the workflow can check a configuration while
Snakemake parses it, before any job starts, and `regmix plan` can cost it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from regmix.errors import RegmixError
from regmix.training.model_config import ModelConfig

TRAINING_MODULES = (
    "training.train",
    "training.language_modeling",
    "training.validation",
    "training.train_config",
    "training.model",
    "training.model_config",
    "data.loader",
    "training.export",
    "data.tokenize",
)
"""The code a run's results depend on (modules under regmix/): editing it invalidates kept
results and checkpoints."""

SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true")


@dataclass(frozen=True)
class TrainConfig:
    """How one run is trained; the workflow passes its proxy (or final) config section."""

    model: str | dict = "demo_proxy"
    """A preset name from `regmix presets`, or a mapping of `ModelConfig` shape fields."""
    seq_len: int = 256
    """Tokens per training window (the model sees seq_len and predicts the next of each)."""
    batch_size: int = 16
    """Windows per optimizer step, over all devices."""
    micro_batch_size: int | None = None
    """Windows per forward pass and device; gradients accumulate up to batch_size (None: no
    accumulation)."""
    steps: int = 100
    """Optimizer steps; the run trains on steps × batch_size × seq_len tokens."""
    lr: float = 4e-4
    """Peak learning rate (RegMix: 4e-4)."""
    schedule: str = "constant"
    """'constant' after warmup (RegMix's proxies) or 'cosine' decay to min_lr (its 1B runs)."""
    warmup_steps: int = 0
    """Linear warmup from 0 to lr over this many steps."""
    min_lr: float = 1e-5
    """Learning rate at the end of the cosine schedule."""
    weight_decay: float = 0.1
    """AdamW weight decay, applied to every parameter as TinyLlama does."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Clip the gradient's global norm to this (0: no clipping)."""
    eval_every: int = 0
    """Evaluate every validation domain every this many steps (0: only at the end)."""
    eval_windows: int = 16
    """Fixed validation windows per domain (the same for every run)."""
    checkpoint_every: int = 0
    """Checkpoint every this many steps into the work folder (0: never)."""
    seed: int = 0
    """Seeds the initial weights and the data order; RegMix trains every proxy with one seed."""
    accelerator: str = "auto"
    """Lightning accelerator: 'auto' (a GPU when present), 'cpu', 'gpu'."""
    devices: int | str = 1
    """Lightning devices: how many GPUs (or CPU processes) train this run."""
    strategy: str = "auto"
    """Lightning strategy: 'auto' or 'ddp' (FSDP would shard what evaluation and export read)."""
    precision: str = "auto"
    """'auto': bf16-mixed on a GPU that supports it, else 32-true (fp32 on CPU)."""
    compile: bool = False
    """torch.compile the model (faster steps, tens of seconds of compilation per process)."""
    data_fraction: float = 1.0
    """Train only on the first this fraction of each domain's tokens. Repetition-matched
    proxies set it to proxy tokens / final tokens, so that a proxy repeats each domain as
    often, relative to its size, as the final model will."""

    def __post_init__(self) -> None:
        positive = ("seq_len", "batch_size", "steps", "eval_windows")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise RegmixError(
                    f"train.{name}: must be an integer >= 1, got {getattr(self, name)!r}"
                )
        for name in ("warmup_steps", "eval_every", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise RegmixError(
                    f"train.{name}: must be an integer >= 0, got {getattr(self, name)!r}"
                )
        if self.micro_batch_size is not None and (
            self.micro_batch_size < 1 or self.batch_size % self.micro_batch_size
        ):
            raise RegmixError(
                f"train.micro_batch_size: must divide batch_size ({self.batch_size}), "
                f"got {self.micro_batch_size}"
            )
        if self.schedule not in SCHEDULES:
            raise RegmixError(f"train.schedule: expected one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise RegmixError(f"train.precision: expected one of {', '.join(PRECISIONS)}")
        if not 0 < self.data_fraction <= 1:
            raise RegmixError(f"train.data_fraction: must be in (0, 1], got {self.data_fraction}")
        if self.lr <= 0 or not 0 <= self.min_lr <= self.lr:
            raise RegmixError("train: need lr > 0 and 0 <= min_lr <= lr")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise RegmixError("train: beta1 and beta2 must be in [0, 1)")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise RegmixError("train: weight_decay and grad_clip must be >= 0")
        if "fsdp" in self.strategy.lower():
            # Evaluation and the HF export read the unwrapped model's full parameters.
            raise RegmixError(f"train.strategy: {self.strategy!r} is not supported; use ddp")
        if not isinstance(self.model, str | dict):
            raise RegmixError("train.model: expected a preset name or a mapping of shape fields")
        self.model_config(vocab=1)  # a bad preset name or shape fails now, not after loading

    def model_config(self, vocab: int) -> ModelConfig:
        """The model to build for a vocabulary of `vocab` tokens."""
        if isinstance(self.model, str):
            return ModelConfig.from_preset(self.model, vocab, max_seq_len=self.seq_len)
        shape = dict(self.model)
        unknown = sorted(set(shape) - set(ModelConfig.__dataclass_fields__) - {"vocab_size"})
        if unknown:
            raise RegmixError(f"train.model: unknown key {unknown[0]!r}")
        shape.update(vocab_size=vocab, max_seq_len=self.seq_len)
        try:
            return ModelConfig(**shape)
        except TypeError as exc:
            raise RegmixError(f"train.model: {exc}") from exc

    def fingerprint(self) -> str:
        """Hash of every setting: equal fingerprints train identically."""
        return digest(asdict(self))

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


def digest(value) -> str:
    """A short, stable hash of a JSON-able value (settings, mixtures, sidecars)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def training_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """The TrainConfig fields of a workflow config section (`proxy`, `final`): the keys that
    only steer the workflow (resources, proxies_per_job, ...) left out."""
    names = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in section.items() if k in names}
