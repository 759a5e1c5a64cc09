"""Content hashes of the data stage: a corpus file's bytes, the tokens written for one (file,
split, domain), and a domain's fingerprint.

A domain's fingerprint says which token stream a model reads of it: equal fingerprints mean
exactly the same tokens in the same order. It is a blake2b over the tokenizer's fingerprint,
the token dtype, and, for each non-empty per-file shard in the order of the files' paths, the
hash of its tokens, its length and the prefix of it the loader reads (`use`: all of it, or the
share `corpus.max_tokens` keeps). It does not depend on how files are grouped into jobs, on
file names or on mtimes, and it changes when any token the loader would read changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

ALGORITHM = "blake2b"
DIGEST_SIZE = 32


def new_hash():
    """The hashlib object every content hash here uses."""
    return hashlib.blake2b(digest_size=DIGEST_SIZE)


def hex_name(digest) -> str:
    """`blake2b:<hex>`: a hash with the algorithm that made it."""
    return f"{ALGORITHM}:{digest.hexdigest()}"


def file_hash(path: str | os.PathLike) -> str:
    """The content hash of a file on disk (what a file record's `content_hash` holds)."""
    digest = new_hash()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return hex_name(digest)


def domain_fingerprint(tokenizer: str, dtype: str, shards: Iterable[Mapping[str, object]]) -> str:
    """The fingerprint of a domain's token stream. `shards`: the domain index's entries in
    order, each with `token_hash`, `tokens` and `use` (the prefix the loader reads)."""
    parts = [
        [shard["token_hash"], int(shard["tokens"]), int(shard.get("use", shard["tokens"]))]
        for shard in shards
        if int(shard["tokens"]) > 0
    ]
    payload = json.dumps({"tokenizer": tokenizer, "dtype": dtype, "shards": parts})
    digest = new_hash()
    digest.update(payload.encode())
    return hex_name(digest)


def read_fingerprints(data_dir: str | os.PathLike) -> dict[tuple[str, str], str]:
    """Every prepared domain's fingerprint, {(split, domain): fingerprint}, from the domain
    indexes of a data folder (`results/data`)."""
    found = {}
    for index in sorted(Path(data_dir).glob("*/*.json")):
        if index.parent.name in ("train", "valid"):
            found[(index.parent.name, index.stem)] = json.loads(index.read_text())["fingerprint"]
    return found
