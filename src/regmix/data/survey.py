"""How big is each domain? A sample spread over every file, scaled up, for `corpus.max_tokens`.

Each train file gives the same share of `sample_bytes`, about one record in k spread over the
whole file (k from the file's size; regmix.data.readers.chosen), so that a domain's place in
the file (corpora sorted by source are common) does not bias its estimate. A domain's text in
the file is estimated as its sampled text × the file's records / the records sampled (all
records: those of other domains or left out count in the denominator too). Encoding a slice of
each domain's sample gives its tokens per byte. The keep share of a domain is then
`max_tokens / estimated tokens` (capped at 1) with a margin: each data job tokenizes that hash
sample, and the fan-in (regmix.data.collect) cuts it to exactly max_tokens from every
document's counted size.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from regmix.data.corpus import CorpusFile, Document, ReadOptions, documents, open_corpus
from regmix.data.groups import TEXT_PER_DISK_BYTE
from regmix.data.readers import Progress
from regmix.data.tokenize import load_tokenizer
from regmix.errors import RegmixError
from regmix.files import write_json

MARGIN = 1.1
ENCODE_BYTES = 2_000_000
"""Text per domain encoded to measure its tokens per byte."""


def stride(file: CorpusFile, quota: int) -> int:
    """Take every k-th record of `file` for about `quota` bytes of text: k from its size on
    disk (times how much text a byte of it holds)."""
    ratio = next((r for ext, r in TEXT_PER_DISK_BYTE.items() if file.path.name.endswith(ext)), 1)
    return max(1, int(file.path.stat().st_size * ratio // max(quota, 1)))


def sampled_documents(file: CorpusFile, options: ReadOptions, quota: int) -> tuple[list, float]:
    """The train documents of a spread sample of `file`, and what scales them to the whole
    file (its records over the records sampled)."""
    every = stride(file, quota)
    while True:
        progress = Progress()
        sample = documents(file, options, None, progress, every=every)
        sample = [d for d in sample if d.split == "train"]
        if progress.sampled or every == 1:
            return sample, progress.records / max(progress.sampled, 1)
        every = 1  # no record chosen (a file of a few long records): read them all


def spread_sample(
    files: list[CorpusFile], options: ReadOptions, sample_bytes: int
) -> Iterator[Document]:
    """Train documents, about the same share of `sample_bytes` from every train file, each
    spread over its file (for the tokenizer's training text)."""
    train = [f for f in files if f.split == "train"]
    quota = sample_bytes // max(len(train), 1)
    for file in train:
        taken = 0
        for document in documents(file, options, every=stride(file, quota)):
            if document.split != "train":
                continue
            yield document
            taken += document.size
            if taken >= quota:
                break


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
    files, options = open_corpus(corpus, options)
    files = [f for f in files if f.split == "train"]
    quota = sample_bytes // max(len(files), 1)
    sampled: dict[str, float] = {}
    estimated: dict[str, float] = {}
    texts: dict[str, list[str]] = {}
    encode_bytes: dict[str, int] = {}
    for file in files:
        sample, scale = sampled_documents(file, options, quota)
        for document in sample:
            domain = document.domain
            sampled[domain] = sampled.get(domain, 0) + document.size
            estimated[domain] = estimated.get(domain, 0) + document.size * scale
            if encode_bytes.get(domain, 0) < ENCODE_BYTES:
                texts.setdefault(domain, []).append(document.text)
                encode_bytes[domain] = encode_bytes.get(domain, 0) + document.size
    domains = {}
    for domain in sorted(estimated):
        per_byte = len(encoder.encode(texts[domain])) / max(encode_bytes[domain], 1)
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
    try:
        survey = json.loads(Path(path).read_text())
        return {d: float(v["keep"]) for d, v in survey["domains"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RegmixError(f"{path}: not a corpus survey ({exc})") from None
