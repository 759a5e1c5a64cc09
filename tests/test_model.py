import math

import pytest
import torch
import torch.nn.functional as F

from regmix.errors import RegmixError
from regmix.training.model import (
    RMSNorm,
    RotaryEmbedding,
    Transformer,
    apply_rotary,
    count_parameters,
    next_token_loss,
)
from regmix.training.model_config import PRESETS, ModelConfig

TINY = ModelConfig(n_layer=2, n_head=2, n_embd=16, intermediate_size=24, vocab_size=50)


def test_tinyllama_1M_has_the_papers_non_embedding_size():
    config = ModelConfig.from_preset("tinyllama_1M", vocab_size=50432)
    # RegMix's "1M" proxy: 2 blocks of d=256 with an MLP of 512, embeddings excluded.
    assert config.non_embedding_params == 1_312_000
    assert config.total_params == 1_312_000 + 2 * 50432 * 256


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_counts_the_parameters_it_builds(name):
    config = ModelConfig.from_preset(name, vocab_size=257)
    with torch.device("meta"):  # shapes only: the 1B preset is not allocated
        model = Transformer(config)
    assert count_parameters(model) == config.total_params
    embeddings = model.embed_tokens.weight.numel() + model.lm_head.weight.numel()
    assert count_parameters(model) - embeddings == config.non_embedding_params


def test_embedding_and_lm_head_are_untied():
    model = Transformer(TINY)
    assert model.embed_tokens.weight.data_ptr() != model.lm_head.weight.data_ptr()


def test_vocab_size_comes_from_the_caller_not_the_preset():
    assert ModelConfig.from_preset("demo_proxy", 257).vocab_size == 257
    assert ModelConfig.from_preset("demo_proxy", 50277).vocab_size == 50277


def test_regmix_preset_name_is_an_alias():
    assert ModelConfig.from_preset("tinyllama_1_1b", 10) == ModelConfig.from_preset(
        "tinyllama_1B", 10
    )


def test_unknown_preset_names_the_choices():
    with pytest.raises(RegmixError, match="tinyllama_1M"):
        ModelConfig.from_preset("tinyllama_2M", 257)


def test_heads_must_split_the_width_evenly():
    with pytest.raises(RegmixError, match="n_head"):
        ModelConfig(n_layer=1, n_head=3, n_embd=16, intermediate_size=8, vocab_size=10)


def test_logits_have_one_row_per_position_and_token():
    model = Transformer(TINY)
    idx = torch.randint(0, TINY.vocab_size, (3, 7))
    assert model(idx).shape == (3, 7, TINY.vocab_size)


def test_a_position_never_sees_later_tokens():
    torch.manual_seed(0)
    model = Transformer(TINY)
    idx = torch.randint(0, TINY.vocab_size, (1, 12))
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % TINY.vocab_size
    with torch.no_grad():
        before, after = model(idx), model(changed)
    torch.testing.assert_close(before[0, :8], after[0, :8])
    assert not torch.allclose(before[0, 8:], after[0, 8:])


def test_rotary_attention_scores_depend_only_on_relative_position():
    config = ModelConfig(n_layer=1, n_head=1, n_embd=8, intermediate_size=8, vocab_size=4)
    cos, sin = RotaryEmbedding(config)(20)
    q, k = torch.randn(8), torch.randn(8)

    def score(m: int, n: int) -> torch.Tensor:
        qs = apply_rotary(q.expand(1, 1, 20, 8), cos, sin)[0, 0, m]
        ks = apply_rotary(k.expand(1, 1, 20, 8), cos, sin)[0, 0, n]
        return qs @ ks

    torch.testing.assert_close(score(5, 2), score(15, 12))
    torch.testing.assert_close(score(0, 0), q @ k)  # position 0 is not rotated


def test_rms_norm_scales_each_vector_to_unit_root_mean_square():
    norm = RMSNorm(6, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(4, 6)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_initial_loss_is_close_to_uniform_guessing():
    torch.manual_seed(0)
    config = ModelConfig.from_preset("demo_proxy", vocab_size=257)
    tokens = torch.randint(0, 257, (4, 65))
    loss = next_token_loss(Transformer(config), tokens).item()
    # Small-init logits have a std of ~0.6, which costs ~0.2 nats over uniform guessing.
    assert math.log(257) < loss < math.log(257) + 0.3


def test_a_few_steps_on_one_batch_reduce_its_loss():
    torch.manual_seed(0)
    model = Transformer(TINY)
    tokens = torch.randint(0, TINY.vocab_size, (4, 17))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = next_token_loss(model, tokens).item()
    for _ in range(20):
        loss = next_token_loss(model, tokens)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert next_token_loss(model, tokens).item() < first - 1.0


def test_loss_is_the_mean_cross_entropy_of_the_next_token():
    torch.manual_seed(0)
    model = Transformer(TINY)
    tokens = torch.randint(0, TINY.vocab_size, (2, 9))
    logits = model(tokens[:, :-1])
    by_hand = F.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None]).mean().neg()
    torch.testing.assert_close(next_token_loss(model, tokens), by_hand)


def test_attention_flops_grow_linearly_with_sequence_length():
    config = ModelConfig.from_preset("tinyllama_1M", 257)
    per_256 = config.flops_per_token(512) - config.flops_per_token(256)
    assert per_256 == 6 * config.n_layer * config.n_embd * 256
    assert config.flops_per_token(0) == 6 * (config.non_embedding_params + 257 * 256)


def test_matches_hugging_face_llama_with_renamed_weights():
    transformers = pytest.importorskip(
        "transformers", reason="optional extra: pip install -e '.[hf]'"
    )
    torch.manual_seed(0)
    model = Transformer(TINY)
    hf_config = transformers.LlamaConfig(
        vocab_size=TINY.vocab_size,
        hidden_size=TINY.n_embd,
        intermediate_size=TINY.intermediate_size,
        num_hidden_layers=TINY.n_layer,
        num_attention_heads=TINY.n_head,
        num_key_value_heads=TINY.n_head,
        rms_norm_eps=TINY.norm_eps,
        rope_theta=TINY.rope_base,
        max_position_embeddings=TINY.max_seq_len,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    )
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    state = {
        (k if k.startswith("lm_head") else f"model.{k}"): v for k, v in model.state_dict().items()
    }
    hf.load_state_dict(state, strict=True)
    idx = torch.randint(0, TINY.vocab_size, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx), rtol=1e-4, atol=1e-5)
