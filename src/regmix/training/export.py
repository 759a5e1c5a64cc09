"""Export a trained model as a Hugging Face `LlamaForCausalLM` folder.

`config.json` + `model.safetensors` (+ the tokenizer as `tokenizer.json`), loadable with
`LlamaForCausalLM.from_pretrained(folder)` and so by the usual evaluation harnesses. The model
already uses Llama's parameter names and math, so the export is a prefix rename; transformers
itself is not needed to write the folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from regmix.data.tokenize import byte_tokenizer_json
from regmix.files import atomic_path, write_json
from regmix.training.model import ModelConfig, Transformer


def hf_config(config: ModelConfig, eos_id: int) -> dict:
    """The `LlamaConfig` fields that reproduce this model's shape and math."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_head,
        "head_dim": config.head_size,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_base,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_base},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
    }


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our parameter names under Llama's: the decoder's live under `model.`, the head stays."""
    renamed = {}
    for name, tensor in model.state_dict().items():
        key = name if name.startswith("lm_head.") else f"model.{name}"
        renamed[key] = tensor.detach().to("cpu", torch.float32).contiguous()
    return renamed


def export_hf(
    model: Transformer,
    folder: str | os.PathLike,
    eos_id: int,
    tokenizer_file: str | os.PathLike | None = None,
) -> Path:
    """Write the model (and its tokenizer: a copy of `tokenizer_file`, or the byte tokenizer)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(hf_config(model.config, eos_id), folder / "config.json")
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(hf_state_dict(model), str(tmp), metadata={"format": "pt"})
    with atomic_path(folder / "tokenizer.json") as tmp:
        if tokenizer_file is None:
            tmp.write_text(byte_tokenizer_json())
        else:
            shutil.copyfile(tokenizer_file, tmp)
    return folder
