"""What a configured run costs before anything runs: vocabulary, tokens, FLOPs, evaluations and
bytes on disk, counted from the config (and the prepared data, where it exists).

Torch-free, so that `regmix plan` answers in a second; timing real training steps lives in
`regmix.observe.step_timing`, the jobs and the schedule in `regmix.observe.plan`, and the
rendering in `regmix.observe.plan_report`.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regmix.errors import RegmixError
from regmix.training.model_config import ModelConfig
from regmix.training.train_config import TrainConfig, training_settings

BYTE_VOCAB = 257
"""The byte tokenizer: 256 bytes + EOS."""
BYTES_PER_SUBWORD_TOKEN = 4.0
"""A subword tokenizer's typical compression on English-like text; only an estimate."""
CHECKPOINT_BYTES_PER_PARAM = 12
"""A checkpoint holds fp32 weights and AdamW's two fp32 moments."""
CHECKPOINT_EXTRA_BYTES = 64 * 1024
"""Lightning's loop and callback state beside the tensors (the evaluations so far, ...)."""
EXPORT_BYTES_PER_PARAM = 4
"""The Hugging Face export is fp32 safetensors."""
KEPT_RESULT_BYTES = 16 * 1024
"""One run's losses.parquet + run.json (and their kept copies): a few kilobytes."""
DATA = Path("results/data")
"""The token shards, relative to the workflow's working directory (rules/common.smk's DATA)."""


# --- vocabulary -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    size: int
    source: str
    """Where the size came from, for the plan's reader."""

    @property
    def token_bytes(self) -> int:
        """Bytes per token in a shard: uint16 up to 65536 ids (as `regmix prepare` writes)."""
        return 2 if self.size <= 2**16 else 4


def vocabulary(tokenizer: str, directory: Path) -> Vocabulary:
    """The vocabulary the models will have (EOS included), for a workflow run in `directory`.

    The byte tokenizer's is fixed; a trained or given tokenizer's is read from the prepared
    shards' sidecars when they exist (what training will really see), else from the config.
    """
    if tokenizer == "byte":
        return Vocabulary(BYTE_VOCAB, "byte tokenizer")
    data_dir = directory / DATA
    prepared = _sidecar_vocab(data_dir)
    if prepared is not None:
        return Vocabulary(prepared, f"prepared shards in {data_dir}")
    if tokenizer.startswith("bpe:"):
        try:
            size = int(tokenizer.removeprefix("bpe:"))
        except ValueError:
            raise RegmixError(
                f"corpus.tokenizer: {tokenizer!r}: expected bpe:<vocab size>, e.g. bpe:8192"
            ) from None
        return Vocabulary(size, f"{tokenizer} (at most; BPE may stop short on a small corpus)")
    return Vocabulary(tokenizer_json_vocab(directory / tokenizer), tokenizer)


def _sidecar_vocab(data_dir: Path) -> int | None:
    for sidecar in sorted(data_dir.glob("*/*.json")):
        try:
            return int(json.loads(sidecar.read_text())["vocab_size"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def tokenizer_json_vocab(path: Path) -> int:
    """A Hugging Face tokenizer.json's vocabulary size with its added tokens, read from the
    JSON (loading the tokenizer library is not needed to count)."""
    try:
        data = json.loads(path.read_text())
        vocab = data["model"]["vocab"]
    except FileNotFoundError:
        raise RegmixError(f"corpus.tokenizer: {path}: no such tokenizer file") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise RegmixError(
            f"corpus.tokenizer: {path}: not a tokenizer.json with model.vocab"
        ) from None
    ids = set(vocab.values()) if isinstance(vocab, dict) else set(range(len(vocab)))
    ids |= {token["id"] for token in data.get("added_tokens") or []}
    return len(ids)


# --- corpus size ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusTokens:
    """Tokens per domain in each split: counted by `prepare`, or estimated from text sizes."""

    train: dict[str, int]
    valid: dict[str, int]
    exact: bool
    source: str
    generated_bytes: int = 0
    """Bytes of text the workflow itself writes (the synthetic corpus), else 0."""

    @property
    def total(self) -> int:
        return sum(self.train.values()) + sum(self.valid.values())


def corpus_tokens(config: Mapping[str, Any], directory: Path, vocab: Vocabulary) -> CorpusTokens:
    """The corpus's tokens per split and domain.

    Exact from `results/data/stats.parquet` when the data is prepared; otherwise the synthetic
    corpus's sizes are known from `regmix.data.synth`, and a user corpus's from its files' text
    bytes (gzip's recorded size, parquet's uncompressed column size), both at about one token
    per byte for the byte tokenizer and `BYTES_PER_SUBWORD_TOKEN` for a subword one.
    """
    corpus = config["corpus"]
    domains = corpus["domains"]
    stats = directory / DATA / "stats.parquet"
    synthetic = not corpus["path"]
    generated = _synthetic_text(corpus) if synthetic else None
    generated_bytes = (
        sum(generated["train"].values()) + sum(generated["valid"].values()) if generated else 0
    )
    if stats.is_file():
        train, valid = _stats_tokens(stats)
        return CorpusTokens(train, valid, True, str(stats), generated_bytes)
    if synthetic:
        text, source = generated, "the synthetic corpus's sizes (regmix.data.synth)"
    else:
        text = _corpus_text_bytes(directory / corpus["path"], domains, corpus)
        source = corpus["path"]
    per_token = 1.0 if vocab.size == BYTE_VOCAB else BYTES_PER_SUBWORD_TOKEN
    split = {
        name: {d: round(n / per_token) for d, n in sizes.items() if not domains or d in domains}
        for name, sizes in text.items()
    }
    how = "one token per byte" if per_token == 1 else f"~{per_token:g} bytes per token"
    return CorpusTokens(
        split["train"], split["valid"], False, f"estimated from {source}, {how}", generated_bytes
    )


def _stats_tokens(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["domain", "split", "tokens"]).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise RegmixError(f"{path}: not a token stats table ({exc})") from None
    out: dict[str, dict[str, int]] = {"train": {}, "valid": {}}
    for row in table:
        out.setdefault(row["split"], {})[row["domain"]] = int(row["tokens"])
    return out["train"], out["valid"]


def _synthetic_text(corpus: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Characters per split and domain that `regmix synth-corpus` generates (UTF-8 adds a few
    bytes in some domains and every document an EOS: the count is a few % low)."""
    from regmix.data.synth import DOMAINS, TARGET, SynthConfig

    synth = SynthConfig(seed=corpus["synthetic"]["seed"], scale=corpus["synthetic"]["scale"])
    train = {spec.name: int(spec.train_chars * synth.scale) for spec in DOMAINS}
    valid = {spec.name: synth.valid_chars for spec in DOMAINS}
    valid[TARGET] = synth.target_valid_chars
    return {"train": train, "valid": valid}


ALL_DOMAINS = "(all domains)"
"""Where records name their domains, the sizes per domain are unknown before reading them."""


def _corpus_text_bytes(
    path: Path, domains: list[str] | None, corpus: Mapping[str, Any]
) -> dict[str, dict[str, int]]:
    from regmix.data.corpus import discover

    field = corpus.get("domain_field")
    held_out = corpus.get("valid_fraction", 0)
    sizes: dict[str, dict[str, int]] = {"train": {}, "valid": {}}
    files = discover(path, None if field else domains, field)
    if any(f.split == "valid" for f in files):
        held_out = 0  # valid_fraction applies only where the corpus has no validation file
    for file in files:
        if file.split == "test":
            continue  # never trained or validated on
        domain = file.domain or ALL_DOMAINS
        size = text_bytes(file.path)
        split = file.split
        parts = {split: size}
        if split == "train" and held_out:
            parts = {"train": round(size * (1 - held_out)), "valid": round(size * held_out)}
        for name, part in parts.items():
            sizes[name][domain] = sizes[name].get(domain, 0) + part
    return sizes


def text_bytes(path: Path) -> int:
    """About how many bytes of text a corpus file holds, without reading its documents."""
    if path.name.endswith(".gz"):
        with open(path, "rb") as f:  # gzip's trailer records the size (mod 4 GiB) of its data
            f.seek(-4, os.SEEK_END)
            recorded = struct.unpack("<I", f.read(4))[0]
        compressed = path.stat().st_size
        return recorded if recorded >= compressed else _read_gzip_size(path)
    if path.name.endswith(".zst"):
        import zstandard

        with open(path, "rb") as f:  # the frame header records the size when the writer knew it
            try:
                recorded = zstandard.frame_content_size(f.read(18))
            except zstandard.ZstdError:
                recorded = -1  # the prepare job names the damage
        return recorded if recorded > 0 else path.stat().st_size * ZSTD_TEXT_RATIO
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        metadata = pq.ParquetFile(path).metadata
        return sum(
            group.column(c).total_uncompressed_size
            for group in (metadata.row_group(i) for i in range(metadata.num_row_groups))
            for c in range(group.num_columns)
            if group.column(c).path_in_schema == "text"
        )
    return path.stat().st_size


ZSTD_TEXT_RATIO = 4
"""Text per byte of a zstd stream that does not record its size (streamed writers): about
4 for JSON lines of English text and code at zstd's default level."""


def _read_gzip_size(path: Path) -> int:
    """A gzip file over 4 GiB wraps its recorded size; count by reading it."""
    total = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            total += len(chunk)
    return total


# --- one training run -------------------------------------------------------------------------


@dataclass(frozen=True)
class RunCost:
    """One training run of a section (a proxy or a final model): what it computes and stores."""

    section: str
    model: ModelConfig
    train: TrainConfig
    valid_windows: int
    """Validation windows scored at each evaluation, over every validation domain."""
    threads: int
    gpus: int

    @property
    def tokens(self) -> int:
        return self.train.steps * self.train.tokens_per_step

    @property
    def flops_per_token(self) -> float:
        return self.model.flops_per_token(self.train.seq_len)

    @property
    def flops(self) -> float:
        """Training FLOPs (forward and backward)."""
        return self.tokens * self.flops_per_token

    @property
    def evaluations(self) -> int:
        """Every `eval_every` steps and at the end (once if the end is one of them)."""
        steps, every = self.train.steps, self.train.eval_every
        if not every:
            return 1
        return steps // every + (1 if steps % every else 0)

    @property
    def eval_tokens(self) -> int:
        return self.evaluations * self.valid_windows * self.train.seq_len

    @property
    def eval_flops(self) -> float:
        """Evaluation is forward only: a third of a training step's FLOPs per token."""
        return self.eval_tokens * self.flops_per_token / 3

    @property
    def checkpoint_saves(self) -> int:
        """Checkpoints written while running (none at the end: the results are kept instead)."""
        every = self.train.checkpoint_every
        return (self.train.steps - 1) // every if every else 0

    @property
    def checkpoint_bytes(self) -> int:
        """The one checkpoint a run in flight keeps (it is deleted when the run finishes)."""
        if not self.checkpoint_saves:
            return 0
        return CHECKPOINT_BYTES_PER_PARAM * self.model.total_params + CHECKPOINT_EXTRA_BYTES

    @property
    def export_bytes(self) -> int:
        return EXPORT_BYTES_PER_PARAM * self.model.total_params

    @property
    def eval_batch_size(self) -> int:
        return self.train.micro_batch_size or self.train.batch_size


def run_cost(
    section_name: str, section: Mapping[str, Any], vocab: int, valid: Mapping[str, int]
) -> RunCost:
    """The cost of one run of `section_name` ('proxy' or 'final') of a validated config."""
    train = TrainConfig(**training_settings(section))
    window = train.seq_len + 1
    windows = sum(min(train.eval_windows, tokens // window) for tokens in valid.values())
    resources = section["resources"]
    return RunCost(
        section=section_name,
        model=train.model_config(vocab),
        train=train,
        valid_windows=windows,
        threads=resources["threads"],
        gpus=resources["gpu"],
    )
