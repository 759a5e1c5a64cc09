"""Tokenizers: byte-level (the demo), a user's Hugging Face `tokenizer.json`, or a BPE trained
on the corpus's train split. Each one turns a batch of documents into one flat array of token
ids with an end-of-text token after every document."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from regmix.errors import RegmixError

EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|eot_id|>", "[SEP]")
BYTE_EOS = 256


class ByteTokenizer:
    """UTF-8 bytes 0–255 plus EOS = 256: no training, no unknown tokens, very fast."""

    vocab_size = 257
    eos_id = BYTE_EOS
    fingerprint = "byte-v1"
    dtype = np.uint16

    def encode(self, documents: list[str]) -> np.ndarray:
        if not documents:
            return np.empty(0, dtype=np.uint16)
        # 0xFF never occurs in UTF-8, so it can mark document ends in one joined buffer.
        joined = b"\xff".join(text.encode("utf-8") for text in documents) + b"\xff"
        ids = np.frombuffer(joined, dtype=np.uint8).astype(np.uint16)
        ids[ids == 0xFF] = BYTE_EOS
        return ids

    def decode(self, ids: np.ndarray) -> str:
        """The text of one document's ids (no EOS)."""
        return np.asarray(ids, dtype=np.uint8).tobytes().decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face `tokenizers` model loaded from a tokenizer.json."""

    def __init__(self, path: str | os.PathLike) -> None:
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise RegmixError(f"{path}: tokenizer file does not exist")
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a bare Exception
            raise RegmixError(f"{path}: not a loadable tokenizer.json ({exc})") from exc
        self.eos_id = next(
            (i for name in EOS_NAMES if (i := self.tokenizer.token_to_id(name)) is not None), None
        )
        if self.eos_id is None:
            raise RegmixError(f"{path}: no end-of-text token (looked for {', '.join(EOS_NAMES)})")
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.fingerprint = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        self.dtype = np.uint16 if self.vocab_size <= 2**16 else np.uint32

    def encode(self, documents: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch_fast(documents, add_special_tokens=False)
        lengths = [len(e.ids) + 1 for e in encodings]
        out = np.empty(sum(lengths), dtype=self.dtype)
        position = 0
        for encoding, length in zip(encodings, lengths, strict=True):
            out[position : position + length - 1] = encoding.ids
            out[position + length - 1] = self.eos_id
            position += length
        return out

    def decode(self, ids: np.ndarray) -> str:
        """The text of one document's ids (no EOS), as the tokenizer's decoder gives it."""
        return self.tokenizer.decode(np.asarray(ids).tolist(), skip_special_tokens=False)


def train_bpe(texts: Iterable[str], vocab_size: int, out: str | os.PathLike) -> Path:
    """Train a byte-level BPE on `texts` and save it as a tokenizer.json at `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from regmix.files import atomic_path

    if vocab_size < 257 + 1:
        raise RegmixError(f"tokenizer bpe:{vocab_size}: vocab size must be at least 258")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_NAMES[0]],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    with atomic_path(out) as tmp:
        tokenizer.save(str(tmp))
    return Path(out)


def parse_bpe_spec(spec: str) -> int | None:
    """`bpe:8192` → 8192; anything else → None."""
    if not spec.startswith("bpe:"):
        return None
    size = spec.removeprefix("bpe:")
    if not size.isdigit():
        raise RegmixError(f"tokenizer {spec!r}: expected bpe:<vocab size>, e.g. bpe:8192")
    return int(size)


def load_tokenizer(spec: str) -> ByteTokenizer | HFTokenizer:
    """`byte` or the path of a tokenizer.json (a trained BPE is saved to one first)."""
    return ByteTokenizer() if spec == "byte" else HFTokenizer(spec)


def byte_tokenizer_json() -> str:
    """The byte tokenizer as a Hugging Face tokenizer.json: byte b is id b, EOS is 256.

    A BPE without merges over the byte-level alphabet reproduces `ByteTokenizer` exactly, so an
    exported model can be evaluated with standard tooling.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    byte_to_char = _bytes_to_unicode()
    vocab = {byte_to_char[b]: b for b in range(256)}
    vocab[EOS_NAMES[0]] = BYTE_EOS
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([EOS_NAMES[0]])
    return tokenizer.to_str()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (what ByteLevel uses)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars
