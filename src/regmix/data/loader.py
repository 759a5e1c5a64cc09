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

from regmix.data.corpus import SPLITS
from regmix.errors import RegmixError


def shard_path(data_dir: str | os.PathLike, split: str, domain: str) -> Path:
    return Path(data_dir) / split / f"{domain}.bin"


def sidecar_path(shard: Path) -> Path:
    return shard.with_suffix(".json")


def read_sidecar(shard: Path) -> dict:
    sidecar = sidecar_path(shard)
    if not sidecar.is_file():
        raise RegmixError(f"{sidecar}: missing shard sidecar (run `regmix prepare` again)")
    return json.loads(sidecar.read_text())


def split_domains(data_dir: str | os.PathLike, split: str) -> list[str]:
    """The domains that have a shard in `split`, sorted."""
    folder = Path(data_dir) / split
    return sorted(p.stem for p in folder.glob("*.bin"))


def open_shards(
    data_dir: str | os.PathLike, split: str, domains: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Memory-map the flat token arrays of `split` (all its domains unless `domains` is given)."""
    if split not in SPLITS:
        raise RegmixError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    domains = split_domains(data_dir, split) if domains is None else domains
    if not domains:
        raise RegmixError(f"{Path(data_dir) / split}: no token shards (*.bin)")
    shards = {}
    for domain in domains:
        path = shard_path(data_dir, split, domain)
        if not path.is_file():
            raise RegmixError(f"{path}: no token shard for domain {domain!r} in {split}")
        meta = read_sidecar(path)
        shards[domain] = np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")
    return shards


def leading_share(shards: Mapping[str, np.ndarray], fraction: float) -> dict[str, np.ndarray]:
    """The first `fraction` of every shard (views, no copies): a smaller corpus with the same
    proportions between domains."""
    if fraction >= 1:
        return dict(shards)
    return {domain: shard[: int(len(shard) * fraction)] for domain, shard in shards.items()}


def vocab_size(data_dir: str | os.PathLike) -> int:
    """The tokenizer's vocabulary size (EOS included), read from the shards' sidecars."""
    sizes = {
        read_sidecar(shard)["vocab_size"]
        for split in SPLITS
        for shard in (Path(data_dir) / split).glob("*.bin")
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
