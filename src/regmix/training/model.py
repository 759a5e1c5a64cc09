"""The proxy and final language model: a Llama-style decoder as in RegMix's TinyLlama runs.

Architecture (RegMix's `lit_gpt` TinyLlama configs, in Hugging Face `LlamaForCausalLM` math):

- token embedding, then `n_layer` pre-norm blocks, a final RMSNorm and an untied LM head;
- RMSNorm (eps 1e-5) everywhere, no biases anywhere;
- multi-head causal self-attention with rotary position embeddings on the full head dimension,
  in the "rotate half" layout Hugging Face uses, via `F.scaled_dot_product_attention`;
- a SwiGLU MLP: `down(silu(gate(x)) * up(x))`.

Parameter names follow `LlamaForCausalLM` (`embed_tokens`, `layers.{i}.self_attn.q_proj`, ...,
`norm`, `lm_head`) so that exporting a trained model is a prefix rename. Sizes come from a
named registry of presets; the vocabulary size is not part of a preset but comes from the data.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from regmix.errors import RegmixError
from regmix.training.model_config import ModelConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale and no shift (Llama)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 and cast back before the scale, exactly as LlamaRMSNorm does.
        normed = F.rms_norm(x.float(), (x.size(-1),), eps=self.eps).type_as(x)
        return self.weight * normed


class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotary embeddings, in Hugging Face's rotate-half layout."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hs = config.head_size
        inv_freq = 1.0 / config.rope_base ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs)
        angles = torch.outer(torch.arange(config.max_seq_len, dtype=torch.float32), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)  # (max_seq_len, hs)
        # Derived from the config, so they stay out of checkpoints.
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        if seq_len > self.cos.size(0):
            raise RegmixError(
                f"sequence of {seq_len} tokens exceeds the model's max_seq_len {self.cos.size(0)}"
            )
        return self.cos[:seq_len], self.sin[:seq_len]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, nh, T, hs); cos/sin: (T, hs), computed in fp32 for stability under bf16 autocast.
    x32 = x.float()
    return (x32 * cos + rotate_half(x32) * sin).type_as(x)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.n_embd
        self.n_head = config.n_head
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        # (B, T, C) -> (B, nh, T, hs)
        q = self.q_proj(x).view(B, T, self.n_head, -1).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_head, -1).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_head, -1).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class SwiGLU(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, f = config.n_embd, config.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.n_embd, config.norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, vocab_size)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.vocab_size < 1:
            raise RegmixError("model.vocab_size: must be set from the data (>= 1)")
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.rotary = RotaryEmbedding(config)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """TinyLlama's initialisation, as RegMix trains it.

        Every matrix is drawn from N(0, 2/(5·fan_in)) (GPT-NeoX's "small init"); the MLP's
        output projection is scaled down by the depth, 1/(sqrt(fan_in)·n_layer), so that the
        residual stream does not grow with the number of blocks.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                std = math.sqrt(2.0 / 5.0 / module.weight.size(1))
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        for layer in self.layers:
            down = layer.mlp.down_proj.weight
            nn.init.normal_(down, std=1.0 / math.sqrt(down.size(1)) / self.config.n_layer)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        cos, sin = self.rotary(T)
        x = self.embed_tokens(idx)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))  # (B, T, vocab_size)


def next_token_loss(
    model: nn.Module, tokens: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of predicting tokens[:, 1:] from tokens[:, :-1]; tokens: (B, T + 1)."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = model(inputs)  # (B, T, V)
    flat = logits.reshape(-1, logits.size(-1)).float()
    return F.cross_entropy(flat, targets.reshape(-1), reduction=reduction)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
