"""Mixed-domain training batches and fixed validation windows over memory-mapped token shards.

A training batch of B windows of T+1 tokens is split across domains by the mixture weights and
is a pure function of (seed, step): a run resumed from a checkpoint sees exactly the batches it
would have seen, and two runs with the same seed differ only where their mixtures differ.
Validation uses the same windows for every run, so losses are comparable across runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from regmix.data.corpus import MODEL_SPLITS
from regmix.errors import RegmixError


def index_path(data_dir: str | os.PathLike, split: str, domain: str) -> Path:
    """A domain's index (regmix.data.collect): counts, dtype, tokenizer and its shard files."""
    return Path(data_dir) / split / f"{domain}.json"


def read_index(path: Path) -> dict:
    if not path.is_file():
        raise RegmixError(f"{path}: missing domain index (run `regmix prepare` again)")
    return json.loads(path.read_text())


def domain_index(data_dir: str | os.PathLike, split: str, domain: str) -> dict:
    return read_index(index_path(data_dir, split, domain))


def any_index(data_dir: str | os.PathLike) -> dict:
    """The index of some train domain: what every shard shares (tokenizer, dtype, EOS)."""
    found = sorted((Path(data_dir) / "train").glob("*.json"))
    if not found:
        raise RegmixError(f"{Path(data_dir) / 'train'}: no token shards (run `regmix prepare`)")
    return read_index(found[0])


def split_domains(data_dir: str | os.PathLike, split: str) -> list[str]:
    """The domains that have shards in `split`, sorted."""
    folder = Path(data_dir) / split
    return sorted(p.stem for p in folder.glob("*.json"))


class TokenStream:
    """A domain's token shards read as one flat array: its length, slices and fancy indexing
    (windows may cross from one shard file into the next), without copying the shards."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = [p for p in parts if len(p)] or parts[:1]
        self.offsets = np.cumsum([0, *(len(p) for p in self.parts)])
        self.dtype = self.parts[0].dtype

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("TokenStream slices take no step")
            parts = []
            for part, offset in zip(self.parts, self.offsets[:-1], strict=True):
                lo, hi = max(start - offset, 0), min(stop - offset, len(part))
                if lo < hi:
                    parts.append(part[lo:hi])
            return as_array(parts or [self.parts[0][:0]])
        index = np.asarray(key)
        flat = index.ravel()
        which = np.searchsorted(self.offsets, flat, side="right") - 1
        out = np.empty(flat.shape, dtype=self.dtype)
        for part in np.unique(which):
            chosen = which == part
            out[chosen] = self.parts[part][flat[chosen] - self.offsets[part]]
        return out.reshape(index.shape)


def as_array(parts: list[np.ndarray]) -> np.ndarray | TokenStream:
    """One shard file is its memory map itself (no indirection); several are a TokenStream."""
    return parts[0] if len(parts) == 1 else TokenStream(parts)


def open_domain(data_dir: str | os.PathLike, split: str, domain: str) -> np.ndarray | TokenStream:
    path = index_path(data_dir, split, domain)
    if not path.is_file():
        raise RegmixError(f"{path}: no token shard for domain {domain!r} in {split}")
    meta = read_index(path)
    dtype = np.dtype(meta["dtype"])
    parts = []
    for shard in meta["shards"]:
        file = Path(data_dir) / shard["path"]
        if not file.is_file():
            raise RegmixError(f"{file}: token shard missing (run `regmix prepare` again)")
        size = file.stat().st_size // dtype.itemsize
        if size != shard["tokens"]:
            raise RegmixError(f"{file}: {size} tokens, its index says {shard['tokens']}")
        use = shard.get("use", size)  # corpus.max_tokens: the share of the file's sample kept
        parts.append(np.memmap(file, dtype=dtype, mode="r")[:use] if use else np.empty(0, dtype))
    return as_array(parts)


def open_shards(
    data_dir: str | os.PathLike, split: str, domains: list[str] | None = None
) -> dict[str, np.ndarray | TokenStream]:
    """Memory-map the token shards of `split` (all its domains unless `domains` is given)."""
    if split not in MODEL_SPLITS:
        raise RegmixError(f"split {split!r}: expected one of {', '.join(MODEL_SPLITS)}")
    domains = split_domains(data_dir, split) if domains is None else domains
    if not domains:
        raise RegmixError(f"{Path(data_dir) / split}: no token shards")
    return {domain: open_domain(data_dir, split, domain) for domain in domains}


def leading_share(shards: Mapping[str, np.ndarray], fraction: float) -> dict[str, np.ndarray]:
    """The first `fraction` of every shard (views, no copies): a smaller corpus with the same
    proportions between domains."""
    if fraction >= 1:
        return dict(shards)
    return {domain: shard[: int(len(shard) * fraction)] for domain, shard in shards.items()}


def vocab_size(data_dir: str | os.PathLike) -> int:
    """The tokenizer's vocabulary size (EOS included), read from the shards' sidecars."""
    sizes = {
        read_index(index)["vocab_size"]
        for split in MODEL_SPLITS
        for index in (Path(data_dir) / split).glob("*.json")
    }
    if len(sizes) != 1:
        raise RegmixError(f"{data_dir}: shards disagree on vocab size ({sorted(sizes)})")
    return sizes.pop()


def domain_counts(weights: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Split batch_size windows across domains: the expected share of each domain is its weight.

    The integer part of B·w is fixed; the leftover windows go to domains with probability equal
    to their fractional parts (systematic sampling), so a domain weighted 2e-4 still gets its
    exact expected share instead of none (rounding) or a multinomial's extra noise.
    """
    exact = weights * batch_size
    counts = np.floor(exact).astype(np.int64)
    short = batch_size - int(counts.sum())
    if short > 0:
        edges = np.cumsum(exact - counts)
        edges *= short / edges[-1]
        points = rng.random() + np.arange(short)
        picks = np.minimum(np.searchsorted(edges, points, side="right"), len(counts) - 1)
        counts += np.bincount(picks, minlength=len(counts))
    return counts


class MixedBatches:
    """Training batches drawn from several domains in proportion to a mixture."""

    def __init__(
        self,
        shards: Mapping[str, np.ndarray],
        weights: Mapping[str, float],
        batch_size: int,
        seq_len: int,
        seed: int,
    ) -> None:
        active = {d: float(w) for d, w in weights.items() if w > 0}
        if not active:
            raise RegmixError("mixture: every weight is zero")
        missing = sorted(set(active) - set(shards))
        if missing:
            raise RegmixError(f"mixture: no training shard for domain(s) {', '.join(missing)}")
        short = [d for d in active if len(shards[d]) < seq_len + 1]
        if short:
            raise RegmixError(
                f"domain(s) {', '.join(short)}: fewer train tokens than one window ({seq_len + 1})"
            )
        self.domains = sorted(active)
        total = sum(active.values())
        self.weights = np.array([active[d] / total for d in self.domains])
        self.shards = [shards[d] for d in self.domains]
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed

    def __call__(self, step: int) -> torch.Tensor:
        """The batch of training step `step`: (batch_size, seq_len + 1) int64 token ids."""
        rng = np.random.default_rng([self.seed, step])
        counts = domain_counts(self.weights, self.batch_size, rng)
        window = self.seq_len + 1
        rows = []
        for shard, count in zip(self.shards, counts, strict=True):
            if count:
                starts = rng.integers(0, len(shard) - window + 1, size=count)
                rows.append(shard[starts[:, None] + np.arange(window)])
        batch = np.concatenate(rows).astype(np.int64)
        # Domains arrive in blocks; shuffle so nothing can depend on position within the batch.
        return torch.from_numpy(batch[rng.permutation(self.batch_size)])


def validation_windows(
    shards: Mapping[str, np.ndarray], seq_len: int, windows: int
) -> dict[str, torch.Tensor]:
    """Up to `windows` non-overlapping windows per domain, spread evenly over its shard.

    Deterministic and independent of any run's seed, so every run is scored on the same text.
    """
    window = seq_len + 1
    out = {}
    for domain, shard in shards.items():
        available = len(shard) // window
        if available == 0:
            raise RegmixError(
                f"valid domain {domain!r}: {len(shard)} tokens, fewer than one window ({window})"
            )
        n = min(windows, available)
        starts = np.linspace(0, (available - 1), n).astype(np.int64) * window
        block = shard[starts[:, None] + np.arange(window)].astype(np.int64)
        out[domain] = torch.from_numpy(block)
    return out
