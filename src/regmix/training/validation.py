"""A model's validation losses: measured during training (regmix.training.language_modeling
calls `validation_losses` at each evaluation) and afterwards from a run's kept final weights,
when the validation data changed but the training did not (regmix.training.reuse).

Plain torch: re-measuring a kept run costs its model's forward passes, not a Lightning start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from regmix.data.loader import open_shards, validation_windows, vocab_size
from regmix.errors import RegmixError
from regmix.training.model import Transformer, next_token_loss
from regmix.training.train_config import TrainConfig

WEIGHTS = "weights.safetensors"
"""A proxy's final weights, kept beside its results (a final model keeps its `hf/` export)."""
HF_WEIGHTS = "hf/model.safetensors"


@torch.no_grad()
def validation_losses(
    model: torch.nn.Module, windows: Mapping[str, torch.Tensor], batch_size: int
) -> dict[str, float]:
    """Mean next-token loss per domain over its fixed windows."""
    device = next(model.parameters()).device
    losses = {}
    for domain, block in windows.items():
        total = torch.zeros((), device=device)
        for chunk in block.split(batch_size):
            total += next_token_loss(model, chunk.to(device), reduction="sum")
        losses[domain] = float(total) / (block.size(0) * (block.size(1) - 1))
    return losses


def keep_weights(model: torch.nn.Module, folder: str | os.PathLike) -> None:
    """Save a proxy's final weights into its kept folder (fp32, our parameter names)."""
    model = getattr(model, "_orig_mod", model)
    state = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
    }
    save_file(state, str(Path(folder) / WEIGHTS))


def load_kept_model(folder: str | os.PathLike, config: TrainConfig, vocab: int) -> Transformer:
    """The model a kept run ended with: its own weights, or its Hugging Face export (Llama's
    names are ours under `model.`)."""
    folder = Path(folder)
    if (folder / WEIGHTS).is_file():
        state = load_file(str(folder / WEIGHTS))
    elif (folder / HF_WEIGHTS).is_file():
        state = {
            k.removeprefix("model."): v for k, v in load_file(str(folder / HF_WEIGHTS)).items()
        }
    else:
        raise RegmixError(f"{folder}: no kept weights ({WEIGHTS} or {HF_WEIGHTS}) to measure")
    model = Transformer(config.model_config(vocab))
    model.load_state_dict(state)
    return model.eval()


def measure_kept(
    folder: str | os.PathLike,
    data_dir: str | os.PathLike,
    domains: Sequence[str],
    config: TrainConfig,
) -> dict[str, float]:
    """The kept run's losses on `domains` of the current validation data, on the same windows
    (and in the same precision on a GPU) a run measures them at the end of training."""
    model = load_kept_model(folder, config, vocab_size(data_dir))
    windows = validation_windows(
        open_shards(data_dir, "valid", list(domains)), config.seq_len, config.eval_windows
    )
    batch = config.micro_batch_size or config.batch_size
    if torch.cuda.is_available() and config.accelerator != "cpu":
        model = model.cuda()
        if config.precision in ("auto", "bf16-mixed") and torch.cuda.is_bf16_supported():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return validation_losses(model, windows, batch)
    return validation_losses(model, windows, batch)


def replace_last_losses(
    losses: pd.DataFrame, measured: Mapping[str, float], step: int, tokens: int
) -> pd.DataFrame:
    """The loss table with the rows of step `step` (`tokens` trained) for the measured domains
    replaced or added; the earlier steps keep what was measured then."""
    run = losses["run"].iloc[0]
    kept = losses[~((losses["step"] == step) & losses["domain"].isin(list(measured)))]
    rows = pd.DataFrame(
        [(run, step, tokens, domain, loss) for domain, loss in sorted(measured.items())],
        columns=losses.columns,
    ).astype(losses.dtypes.to_dict())
    table = pd.concat([kept, rows], ignore_index=True)
    return table.sort_values(["step", "domain"], kind="stable", ignore_index=True)
