"""How big is each domain? A sample of every file, scaled up, for `corpus.max_tokens`.

Reads the same share of text from the start of every file, notes how far into the file (on
disk, or in rows for parquet) that got, and scales each domain's sampled text by the file's
size over the part read. Encoding a slice of each domain's sample gives its tokens per byte.
The keep fraction of a domain is then `max_tokens / estimated tokens` (capped at 1), with a
10% margin so that the hash sample (regmix.data.corpus) rarely falls short of max_tokens.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from regmix.data.corpus import ReadOptions, discover, documents
from regmix.data.readers import Progress
from regmix.data.tokenize import load_tokenizer
from regmix.files import write_json

MARGIN = 1.1
ENCODE_BYTES = 2_000_000
"""Text per domain encoded to measure its tokens per byte."""


def _read_share(path: Path, consumed: int, rows: int, finished: bool) -> float:
    """The share of a file that the sample read (`consumed` bytes on disk, `rows` records):
    1 when it read all of it."""
    if finished:
        return 1.0
    if path.name.endswith(".parquet"):
        total = pq.ParquetFile(path).metadata.num_rows
        return min(rows / total, 1.0) if total else 1.0
    return min(max(consumed, 1) / max(path.stat().st_size, 1), 1.0)


def survey_corpus(
    corpus: str | os.PathLike,
    options: ReadOptions,
    tokenizer: str,
    sample_bytes: int,
    max_tokens: int,
    out: str | os.PathLike,
) -> dict:
    """Estimate every train domain's full size in text bytes and tokens, and the share of its
    documents that `max_tokens` needs; write it as JSON to `out` and return it."""
    started = time.perf_counter()
    encoder = load_tokenizer(tokenizer)
    files = [f for f in discover(corpus, None, options.domain_field) if f.split != "valid"]
    quota = sample_bytes // max(len(files), 1)
    sampled: dict[str, float] = {}
    estimated: dict[str, float] = {}
    texts: dict[str, list[str]] = {}
    text_bytes: dict[str, int] = {}
    """Characters kept per domain in `texts` (to stop at ENCODE_BYTES without re-summing)."""
    for file in files:
        progress = Progress()
        taken = rows = 0
        per_domain: dict[str, int] = {}
        finished = True
        consumed = 0
        for document in documents(file, options, None, progress):
            rows += 1
            if document.split != "train":
                continue
            size = len(document.text.encode("utf-8", "surrogatepass"))
            per_domain[document.domain] = per_domain.get(document.domain, 0) + size
            if text_bytes.get(document.domain, 0) < ENCODE_BYTES:
                texts.setdefault(document.domain, []).append(document.text)
                text_bytes[document.domain] = text_bytes.get(document.domain, 0) + len(
                    document.text
                )
            taken += size
            if taken >= quota:
                # Before the reader closes its file: how far into it the sample got.
                consumed = progress.bytes_read
                finished = False
                break
        share = _read_share(file.path, consumed if not finished else 0, rows, finished)
        for domain, size in per_domain.items():
            sampled[domain] = sampled.get(domain, 0) + size
            estimated[domain] = estimated.get(domain, 0) + size / share
    domains = {}
    for domain in sorted(estimated):
        sample = texts[domain]
        per_byte = len(encoder.encode(sample)) / max(sum(len(t.encode()) for t in sample), 1)
        tokens = estimated[domain] * per_byte
        domains[domain] = {
            "sampled_text_bytes": int(sampled[domain]),
            "estimated_text_bytes": int(estimated[domain]),
            "tokens_per_byte": round(per_byte, 6),
            "estimated_tokens": int(tokens),
            "keep": min(1.0, MARGIN * max_tokens / tokens) if tokens else 1.0,
        }
    survey = {"max_tokens": max_tokens, "sample_bytes": sample_bytes, "domains": domains}
    write_json(survey, out)
    print(
        f"survey: {len(files)} file(s), {sum(sampled.values()) / 1e6:,.1f} MB sampled in "
        f"{time.perf_counter() - started:.1f} s; "
        + ", ".join(
            f"{d} ~{v['estimated_tokens']:,} tokens (keep {v['keep']:.3f})"
            for d, v in domains.items()
        ),
        file=sys.stderr,
    )
    return survey


def keep_fractions(path: str | os.PathLike) -> dict[str, float]:
    """The per-domain keep fractions of a survey.json."""
    from regmix.errors import RegmixError

    try:
        survey = json.loads(Path(path).read_text())
        return {d: float(v["keep"]) for d, v in survey["domains"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RegmixError(f"{path}: not a corpus survey ({exc})") from None
