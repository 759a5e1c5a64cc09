"""Checks of a training section (`proxy`, `final`) while the workflow parses: the model preset
or shape, every TrainConfig rule, and how a job's batch splits over the devices it is granted.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import fields

from regmix.errors import RegmixError, suggestion
from regmix.training.model_config import PRESET_ALIASES, PRESETS, ModelConfig
from regmix.training.train_config import TrainConfig, training_settings

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "intermediate_size")
"""The fields a model shape must give; the rest of ModelConfig has defaults."""


def train_config(section: Mapping) -> TrainConfig:
    """The section's TrainConfig (its workflow-only keys, such as resources, left out)."""
    return TrainConfig(**training_settings(section))


def check_training_settings(section: Mapping, name: str) -> None:
    """The model preset or shape, and every TrainConfig rule (micro-batches, lr, ...)."""
    check_model(section["model"], f"{name}.model")
    try:
        train_config(section)
    except RegmixError as error:
        raise RegmixError(rekey(str(error), name)) from None


def check_model(model: str | Mapping, key: str) -> None:
    if isinstance(model, str):
        if PRESET_ALIASES.get(model, model) not in PRESETS:
            presets = list(PRESETS)
            raise RegmixError(
                f"config key {key}: unknown preset {model!r} (expected one of: "
                f"{', '.join(presets)}; or a mapping of {', '.join(SHAPE_FIELDS)})"
                f"{suggestion(model, presets)}"
            )
        return
    allowed = [f.name for f in fields(ModelConfig)]
    for field in model:
        if field not in allowed:
            raise RegmixError(
                f"config key {key}: unknown shape field {field!r} (expected: "
                f"{', '.join(allowed)}){suggestion(field, allowed)}"
            )
    for field in SHAPE_FIELDS:
        if field not in model:
            raise RegmixError(
                f"config key {key}: a shape needs {field} (and {', '.join(SHAPE_FIELDS)})"
            )
    for field, value in model.items():
        number = (int, float) if field in ("rope_base", "norm_eps") else (int,)
        if isinstance(value, bool) or not isinstance(value, number):
            expected = "a number" if float in number else "an integer"
            raise RegmixError(f"config key {key}.{field}: expected {expected}, got {value!r}")


def check_compiler(section: Mapping, name: str) -> None:
    """`compile: true` on the CPU needs a C++ compiler: inductor builds its kernels with one, and
    without it every training job would fail at its first step."""
    if not section["compile"] or section["resources"]["gpu"] >= 1:
        return
    candidates = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    if not any(shutil.which(c) for c in candidates if c):
        raise RegmixError(
            f"config key {name}.compile: torch.compile on the CPU needs a C++ compiler "
            "(none of $CXX, g++, c++, clang++ found on PATH); install one or set "
            f"{name}.compile: false"
        )


def rekey(message: str, section: str) -> str:
    """`train.micro_batch_size: ...` (TrainConfig) → `config key proxy.micro_batch_size: ...`."""
    match = re.match(r"(train|model)(?:\.(\w+))?: (.*)", message, re.DOTALL)
    if match is None:
        return f"config key {section}: {message}"
    kind, field, rest = match.groups()
    key = section + (".model" if kind == "model" else "") + (f".{field}" if field else "")
    return f"config key {key}: {rest}"


def device_count(section: Mapping) -> int | None:
    """How many processes a job of this section trains with: the GPUs it asks for, else the
    CPU `devices`; None when Lightning decides (devices 'auto' or -1)."""
    gpus = section["resources"]["gpu"]
    if gpus >= 1:
        return gpus
    devices = section["devices"]
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    return devices if isinstance(devices, int) and devices >= 1 else None


def check_device_split(section: Mapping, name: str) -> None:
    """The batch splits evenly over the job's devices and the micro-batch divides each share.

    A job trains on exactly the GPUs it asks for (`resources.gpu`), so `devices` and
    `accelerator` must agree with that count or be left at their defaults.
    """
    gpus = section["resources"]["gpu"]
    accelerator, devices = section["accelerator"], section["devices"]
    if accelerator not in ACCELERATORS:
        raise RegmixError(
            f"config key {name}.accelerator: {accelerator!r} (expected one of: "
            f"{', '.join(ACCELERATORS)})"
        )
    if gpus == 0 and accelerator in ("gpu", "cuda", "mps"):
        raise RegmixError(
            f"config key {name}.accelerator: {accelerator!r} needs {name}.resources.gpu >= 1 "
            "(a job that asks for no GPU trains on the CPU)"
        )
    if gpus >= 1 and accelerator == "cpu":
        raise RegmixError(
            f"config key {name}.accelerator: 'cpu', but {name}.resources.gpu asks for {gpus} "
            "GPU(s); set resources.gpu to 0 to train on the CPU"
        )
    if devices not in (1, "1", "auto") and not re.fullmatch(r"-1|[1-9]\d*", str(devices)):
        raise RegmixError(
            f"config key {name}.devices: {devices!r} (expected a count >= 1, -1 or auto)"
        )
    if gpus >= 1 and devices not in (1, "1", "auto", -1, "-1") and int(devices) != gpus:
        raise RegmixError(
            f"config key {name}.devices: {devices}, but {name}.resources.gpu asks for {gpus} "
            f"GPU(s) and a job trains on the GPUs it is granted; set devices to {gpus} or 1"
        )
    world = device_count(section)
    if world is None or world == 1:
        return
    batch, micro = section["batch_size"], section["micro_batch_size"]
    source = f"{name}.resources.gpu" if gpus >= 1 else f"{name}.devices"
    if batch % world:
        raise RegmixError(
            f"config key {name}.batch_size: {batch} windows do not split over {world} devices "
            f"({source}); expected a multiple of {world}"
        )
    share = batch // world
    if micro is not None and (micro > share or share % micro):
        raise RegmixError(
            f"config key {name}.micro_batch_size: {micro} does not divide the per-device batch "
            f"({batch} windows over {world} devices = {share})"
        )
