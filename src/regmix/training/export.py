"""Export a trained model as a Hugging Face `LlamaForCausalLM` folder that tools load as is.

`config.json`, `generation_config.json`, `model.safetensors` and the tokenizer (`tokenizer.json`
plus `tokenizer_config.json` and `special_tokens_map.json`, which name its end-of-text token and
maximum length): `AutoTokenizer` / `AutoModelForCausalLM.from_pretrained(folder)` and
lm-eval's `hf` model load it with no file added by hand. The model already uses Llama's
parameter names and math, so the export is a prefix rename; transformers itself is not needed to
write the folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from regmix.data.tokenize import byte_tokenizer_json
from regmix.errors import RegmixError
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
    tokenizer = (
        byte_tokenizer_json() if tokenizer_file is None else Path(tokenizer_file).read_text()
    )
    eos_token = token_name(tokenizer, eos_id)
    write_json(generation_config(eos_id), folder / "generation_config.json")
    write_json(
        tokenizer_config(eos_token, model.config.max_seq_len), folder / "tokenizer_config.json"
    )
    write_json(special_tokens(eos_token), folder / "special_tokens_map.json")
    with atomic_path(folder / "tokenizer.json") as tmp:
        tmp.write_text(tokenizer)
    return folder


def token_name(tokenizer_json: str, token_id: int) -> str:
    """The text of token `token_id` in a tokenizer.json (its added tokens, then its vocabulary)."""
    spec = json.loads(tokenizer_json)
    for token in spec.get("added_tokens", []):
        if token["id"] == token_id:
            return token["content"]
    vocab = spec.get("model", {}).get("vocab", {})
    names = {i: name for name, i in vocab.items()} if isinstance(vocab, dict) else {}
    if token_id not in names:
        raise RegmixError(f"tokenizer.json: no token with id {token_id} (the data's eos_id)")
    return names[token_id]


def special_tokens(eos_token: str) -> dict:
    """The model's special tokens. Documents were packed with only an end-of-text token between
    them, so it also begins a text (as in GPT-2) and pads a batch: no other token was trained."""
    return {"bos_token": eos_token, "eos_token": eos_token, "pad_token": eos_token}


def tokenizer_config(eos_token: str, max_length: int) -> dict:
    """`tokenizer_config.json`: the class that reads tokenizer.json, its special tokens and the
    longest input the model was trained on (transformers otherwise assumes no limit)."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_tokens(eos_token),
        "model_max_length": max_length,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }


def generation_config(eos_id: int) -> dict:
    """`generation_config.json`: generation stops at end of text (and pads with it)."""
    return {"bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": eos_id}
