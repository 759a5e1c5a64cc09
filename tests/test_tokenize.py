import numpy as np
import pytest

from regmix.data.tokenize import BYTE_EOS, ByteTokenizer, HFTokenizer, load_tokenizer, train_bpe
from regmix.errors import RegmixError


def test_byte_tokenizer_ends_every_document_with_eos_and_keeps_utf8_bytes():
    ids = ByteTokenizer().encode(["ab", "é"])
    assert ids.tolist() == [97, 98, BYTE_EOS, 0xC3, 0xA9, BYTE_EOS]
    assert ids.dtype == np.uint16


def test_trained_bpe_round_trips_text_and_appends_eos(tmp_path):
    texts = ["the cat sat on the mat", "the dog sat on the log"] * 50
    path = train_bpe(texts, 300, tmp_path / "tokenizer.json")
    tokenizer = load_tokenizer(str(path))
    ids = tokenizer.encode(["the cat sat"])
    assert ids[-1] == tokenizer.eos_id
    assert tokenizer.tokenizer.decode(ids[:-1].tolist()) == "the cat sat"
    assert len(ids) < len("the cat sat")  # merges learned
    assert tokenizer.vocab_size <= 300


def test_a_tokenizer_file_that_does_not_load_is_a_one_line_error(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(RegmixError, match="not a loadable tokenizer.json"):
        HFTokenizer(bad)


def test_missing_tokenizer_file_is_named(tmp_path):
    with pytest.raises(RegmixError, match="does not exist"):
        load_tokenizer(str(tmp_path / "missing.json"))
