"""The Hugging Face export: a folder `LlamaForCausalLM` loads with the same logits."""

import json

import pytest
import torch

from regmix.data.tokenize import BYTE_EOS, ByteTokenizer
from regmix.training.export import export_hf
from regmix.training.model import ModelConfig, Transformer


def _model() -> Transformer:
    torch.manual_seed(0)
    config = ModelConfig(
        n_layer=2, n_head=4, n_embd=32, intermediate_size=64, vocab_size=257, max_seq_len=64
    )
    return Transformer(config).eval()


def test_export_writes_config_weights_and_tokenizer(tmp_path):
    folder = export_hf(_model(), tmp_path / "hf", eos_id=BYTE_EOS)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_hidden_layers"] == 2 and config["tie_word_embeddings"] is False
    assert (folder / "model.safetensors").stat().st_size > 0
    assert (folder / "tokenizer.json").is_file()


def test_transformers_loads_the_export_with_matching_logits(tmp_path):
    transformers = pytest.importorskip("transformers", reason="optional extra: pip install .[hf]")
    model = _model()
    folder = export_hf(model, tmp_path / "hf", eos_id=BYTE_EOS)
    hf = transformers.LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    ids = torch.randint(0, 257, (2, 40))
    with torch.no_grad():
        ours = model(ids)
        theirs = hf(ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)


def test_exported_byte_tokenizer_matches_ours(tmp_path):
    transformers = pytest.importorskip("transformers", reason="optional extra: pip install .[hf]")
    folder = export_hf(_model(), tmp_path / "hf", eos_id=BYTE_EOS)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    text = "Vår en dreö — x = 4 * y;\n"
    assert tokenizer(text)["input_ids"] == ByteTokenizer().encode([text]).tolist()[:-1]


def test_export_names_its_special_tokens_and_maximum_length(tmp_path):
    folder = export_hf(_model(), tmp_path / "hf", eos_id=BYTE_EOS)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    special = json.loads((folder / "special_tokens_map.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tokenizer_config["model_max_length"] == 64
    assert special == {name: "<|endoftext|>" for name in ("bos_token", "eos_token", "pad_token")}
    assert generation["eos_token_id"] == BYTE_EOS


def test_export_finds_the_end_of_text_token_of_a_trained_tokenizer(tmp_path):
    from regmix.data.tokenize import HFTokenizer, train_bpe

    path = train_bpe(["the cat sat on the mat"] * 50, 300, tmp_path / "tokenizer.json")
    eos_id = HFTokenizer(path).eos_id
    config = ModelConfig(
        n_layer=1, n_head=2, n_embd=16, intermediate_size=32, vocab_size=300, max_seq_len=32
    )
    folder = export_hf(Transformer(config), tmp_path / "hf", eos_id=eos_id, tokenizer_file=path)
    assert json.loads((folder / "special_tokens_map.json").read_text())["eos_token"] == (
        "<|endoftext|>"
    )


def test_auto_classes_load_the_export_as_is(tmp_path):
    transformers = pytest.importorskip("transformers", reason="optional extra: pip install .[hf]")
    model = _model()
    folder = export_hf(model, tmp_path / "hf", eos_id=BYTE_EOS)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    assert tokenizer.eos_token_id == tokenizer.bos_token_id == BYTE_EOS
    assert tokenizer.model_max_length == 64
    assert hf.generation_config.eos_token_id == BYTE_EOS
    ids = tokenizer(["a line of text", "another"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = hf(**ids).logits
    assert logits.shape[:2] == ids["input_ids"].shape and torch.isfinite(logits).all()
