"""What a model reads of each prepared domain, as content: a fingerprint, the token count, and
the per-file parts the token stream is made of.

A run records the content of every domain it trained on and was measured on (run.json
`data`), and the workflow compares it with the current data to decide whether the run is still
exact (regmix.training.reuse). Equal fingerprints mean the same tokens in the same order;
`change_fraction` says how much of a domain moved when they differ.

The data stage writes each domain's `fingerprint` and each file's `token_hash` and the share of
it the loader reads (`use`) into the domain's index (regmix.data.collect, .fingerprint).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from regmix.data.corpus import MODEL_SPLITS
from regmix.errors import RegmixError


@dataclass(frozen=True)
class DomainContent:
    """One prepared (split, domain) as a model reads it."""

    fingerprint: str
    tokens: int
    """Tokens the loader reads of the domain."""
    parts: tuple[tuple[str, int], ...] = ()
    """(token hash, tokens read) of each non-empty shard, in order."""

    def to_record(self) -> dict:
        return {"fingerprint": self.fingerprint, "tokens": self.tokens, "parts": self.parts}

    @classmethod
    def from_record(cls, record: Mapping) -> DomainContent:
        parts = tuple((str(h), int(n)) for h, n in record.get("parts", ()))
        return cls(str(record["fingerprint"]), int(record["tokens"]), parts)


Contents = dict[str, dict[str, DomainContent]]
"""{split: {domain: DomainContent}}: the content of a whole data folder."""


def read_contents(data_dir: str | os.PathLike) -> Contents:
    """Every prepared domain's content, by split, from a data folder's domain indexes."""
    data_dir = Path(data_dir)
    contents: Contents = {}
    for split in MODEL_SPLITS:
        contents[split] = {
            index.stem: index_content(data_dir, json.loads(index.read_text()))
            for index in sorted((data_dir / split).glob("*.json"))
        }
    return contents


def index_content(data_dir: Path, index: Mapping) -> DomainContent:
    """A domain's content from its index (`{split}/{domain}.json`, regmix.data.collect)."""
    if "fingerprint" not in index:
        raise RegmixError(
            f"{data_dir}: prepared by an older regmix (no content fingerprints); run the data "
            "stage again"
        )
    parts = tuple(
        (s["token_hash"], int(s.get("use", s["tokens"])))
        for s in index["shards"]
        if int(s.get("use", s["tokens"])) > 0
    )
    return DomainContent(index["fingerprint"], sum(n for _, n in parts), parts)


def change_fraction(old: DomainContent, new: DomainContent) -> float:
    """How much of a domain a model reads changed, as a share of what it read before: tokens
    no longer read plus tokens read anew, matched per part by its hash (a file added to a domain
    of 100 tokens that holds 3 is 0.03; one replaced is its share twice). 0 when the
    fingerprints are equal; 1 when nothing can be matched (no parts known)."""
    if old.fingerprint == new.fingerprint:
        return 0.0
    if not old.parts or not new.parts or old.tokens == 0:
        return 1.0
    available: dict[str, list[int]] = {}
    for token_hash, tokens in new.parts:
        available.setdefault(token_hash, []).append(tokens)
    common = 0
    for token_hash, tokens in old.parts:
        if available.get(token_hash):
            common += min(tokens, available[token_hash].pop(0))
    return (old.tokens - common + new.tokens - common) / old.tokens
