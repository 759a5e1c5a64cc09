"""Model shapes: the decoder's dimensions and the named presets, without importing torch.

The workflow checks a configured preset or shape while Snakemake parses it, and `regmix plan`
counts parameters and FLOPs; neither should pay for importing torch. `regmix.training.model`
builds the network from these shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from regmix.errors import RegmixError


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a decoder; everything needed to build it."""

    n_layer: int
    """Number of transformer blocks."""
    n_head: int
    """Attention heads per block; the head size is n_embd / n_head."""
    n_embd: int
    """Width of the residual stream."""
    intermediate_size: int
    """Width of the SwiGLU MLP's hidden layer."""
    vocab_size: int = 0
    """Rows of the embedding and the LM head (the tokenizer's vocabulary, EOS included)."""
    rope_base: float = 10000.0
    """Base of the rotary embedding frequencies (Llama 2 / TinyLlama: 10000)."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon (Llama 2 / TinyLlama: 1e-5)."""
    max_seq_len: int = 2048
    """Longest sequence the rotary table covers (RegMix's block size)."""

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "intermediate_size", "max_seq_len"):
            if getattr(self, name) < 1:
                raise RegmixError(f"model.{name}: must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise RegmixError(
                f"model: n_embd ({self.n_embd}) must split into n_head ({self.n_head}) heads "
                "of even size (rotary embeddings rotate pairs)"
            )
        if self.vocab_size < 0:
            raise RegmixError(f"model.vocab_size: must be >= 0, got {self.vocab_size}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def non_embedding_params(self) -> int:
        """Parameters outside the embedding and LM head: what the paper's "1M" counts."""
        d, f = self.n_embd, self.intermediate_size
        per_block = 4 * d * d + 3 * d * f + 2 * d  # attention, SwiGLU MLP, two norms
        return self.n_layer * per_block + d  # + final norm

    @property
    def total_params(self) -> int:
        """All parameters: the embedding and the LM head are separate matrices (untied)."""
        return self.non_embedding_params + 2 * self.vocab_size * self.n_embd

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 × matmul parameters + causal attention.

        The matmul parameters are the non-embedding ones plus the LM head (the embedding is a
        lookup). Attention scores and the weighted sum cost 4·T·d per token and layer forward
        (PaLM's 12·L·T·d with backward); counted causally, i.e. halved, because causal
        `scaled_dot_product_attention` skips the masked half.
        """
        matmul_params = self.non_embedding_params + self.vocab_size * self.n_embd
        return 6.0 * matmul_params + 6.0 * self.n_layer * self.n_embd * seq_len

    @classmethod
    def from_preset(cls, name: str, vocab_size: int, **overrides) -> ModelConfig:
        """The preset's shape with the data's vocabulary size."""
        name = PRESET_ALIASES.get(name, name)
        if name not in PRESETS:
            raise RegmixError(f"model preset {name!r}: unknown (expected one of: {preset_names()})")
        return replace(PRESETS[name], vocab_size=vocab_size, **overrides)


PRESETS: dict[str, ModelConfig] = {
    # RegMix's proxies (sail-sg/regmix model_training/lit_gpt/config.py).
    "tinyllama_1M": ModelConfig(n_layer=2, n_head=8, n_embd=256, intermediate_size=512),
    "tinyllama_60M": ModelConfig(n_layer=10, n_head=8, n_embd=768, intermediate_size=1536),
    "tinyllama_1B": ModelConfig(n_layer=22, n_head=16, n_embd=2048, intermediate_size=5632),
    # CPU demo: a proxy that trains 64 mixtures in minutes on 2 cores, and a final model.
    "demo_proxy": ModelConfig(n_layer=2, n_head=4, n_embd=128, intermediate_size=256),
    "demo_final": ModelConfig(n_layer=4, n_head=6, n_embd=192, intermediate_size=512),
}
PRESET_ALIASES = {"tinyllama_1_1b": "tinyllama_1B"}


def preset_names() -> str:
    return ", ".join(PRESETS)
