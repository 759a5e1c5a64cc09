"""A 4-way continuation task on the target domains, made from documents no model trains on.

Each example is a stretch of a document (the context), its true continuation and continuations
cut at the same length from other documents of the same domains. A model that learned the
domains picks the true one; chance is 1 / choices. It needs no download, so every sweep, the
demo included, can end with a downstream score.

Its documents are the target domains' `test` documents where the corpus has a test split
holding them, read with the data stage's reader and reading options (one decision of split and
domain for every stage), so that the task is not the text the target loss is measured on. Else
they are the validation documents exactly as the data stage chose them, decoded from its token
shards (`results/data/valid/<domain>.json`): a hold-out by hash (`corpus.valid_fraction`) costs
no second pass over the corpus, and any layout the data stage reads works. The task's YAML
records which split, domains and how many documents and examples (`metadata`), and the summary
says it (`describe`).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from regmix.data.corpus import ReadOptions, documents, open_corpus
from regmix.errors import RegmixError
from regmix.files import atomic_path, write_text

TASK_NAME = "continuation_{domain}"
DATA_FILE = "data.jsonl"
TASK_FILE = "task.yaml"
DOCUMENTS_PER_EXAMPLE = 10
"""Documents read per example asked for (at most): examples are drawn from all their cuts."""
SCAN_TOKENS = 1 << 20
"""Tokens of a shard searched for document ends at a time."""
SPLIT_NAMES = {"test": "test", "valid": "validation"}


def example_bytes(max_tokens: int) -> tuple[int, int]:
    """UTF-8 bytes of a context and of a continuation for a model of `max_tokens` positions.

    A byte-level tokenizer never makes more tokens than bytes, so context + continuation fit
    in 3/4 of the model's length whatever the tokenizer (lm-eval refuses a continuation longer
    than the model's length, and cuts a context that is).
    """
    return min(max_tokens // 2, 192), min(max_tokens // 4, 48)


def cut_examples(
    documents: list[str], context_bytes: int, continuation_bytes: int
) -> list[tuple[int, str, str]]:
    """(document, context, continuation) triples cut at word boundaries, one after another; a
    word too long for its part (a URL, a long identifier) is stepped over, not the document's
    end."""
    examples = []
    for doc, text in enumerate(documents):
        words = text.split()
        start = 0
        while start < len(words):
            context, end = _take(words, start, context_bytes)
            continuation, stop = _take(words, end, continuation_bytes)
            if context and len(continuation.encode()) >= continuation_bytes // 2:
                examples.append((doc, context, continuation))
                start = stop
            else:
                start = end + 1  # past the word that did not fit
    return examples


def _take(words: list[str], start: int, size: int) -> tuple[str, int]:
    """Whole words from `start`, at most `size` UTF-8 bytes with the spaces between them."""
    end, length = start, -1
    while end < len(words) and length + 1 + len(words[end].encode()) <= size:
        length += 1 + len(words[end].encode())
        end += 1
    return " ".join(words[start:end]), end


def make_examples(
    documents: list[str],
    n: int,
    choices: int = 4,
    max_tokens: int = 128,
    seed: int = 0,
) -> list[dict]:
    """Up to `n` examples: `context`, `choices` (the true continuation among distractors from
    other documents) and `label` (the index of the true one), sized for `max_tokens`."""
    cut = cut_examples(documents, *example_bytes(max_tokens))
    if len({doc for doc, _, _ in cut}) < choices:
        context, continuation = example_bytes(max_tokens)
        raise RegmixError(
            f"continuation task: {len(documents)} documents give too few examples from "
            f"{choices} different documents (each example takes whole words: a context of up "
            f"to {context} bytes and a continuation of {continuation // 2} to {continuation} "
            f"bytes at a model length of {max_tokens}; need longer or more documents)"
        )
    rng = random.Random(seed)
    picked = rng.sample(range(len(cut)), min(n, len(cut)))
    examples = []
    for i in picked:
        doc, context, truth = cut[i]
        others = [c for d, _, c in cut if d != doc and c != truth]
        options = [truth, *rng.sample(others, choices - 1)]
        rng.shuffle(options)
        examples.append({"context": context, "choices": options, "label": options.index(truth)})
    return examples


def task_yaml(name: str, data_file: Path, metadata: dict | None = None) -> str:
    """lm-eval's task config: a multiple-choice task over the JSON lines in `data_file`;
    `metadata` (beside lm-eval's `version`) says what the task measures."""
    return "\n".join(
        [
            f"task: {name}",
            "dataset_path: json",
            "dataset_kwargs:",
            "  data_files:",
            f"    test: {json.dumps(str(data_file.resolve()))}",
            "test_split: test",
            "output_type: multiple_choice",
            'doc_to_text: "{{context}}"',
            'doc_to_choice: "{{choices}}"',
            "doc_to_target: label",
            "metric_list:",
            "  - {metric: acc, aggregation: mean, higher_is_better: true}",
            "  - {metric: acc_norm, aggregation: mean, higher_is_better: true}",
            f"metadata: {json.dumps({'version': 1.0, **(metadata or {})})}",
            "",
        ]
    )


def target_domains(target: str, available: list[str]) -> list[str]:
    """The domains of the target loss: one domain, every domain (`mean`) or a weighted list's."""
    if target == "mean":
        return sorted(available)
    names = [part.split(":")[0].strip() for part in target.split(",") if part.strip()]
    missing = [name for name in names if name not in available]
    if missing:
        raise RegmixError(f"target {target!r}: no validation documents for {missing[0]}")
    return names


def test_documents(
    corpus: str | os.PathLike, options: ReadOptions, domains: list[str], limit: int
) -> dict[str, list[str]]:
    """Up to `limit` test documents per domain, in file order, read as the data stage reads
    (`open_corpus`: the same files, split and domain decisions)."""
    wanted = set(domains)
    files, options = open_corpus(corpus, options)
    files = [f for f in files if f.split == "test" and (f.domain is None or f.domain in wanted)]
    found: dict[str, list[str]] = {domain: [] for domain in domains}
    for file in files:
        for document in documents(file, options):
            texts = found.get(document.domain)
            if document.split != "test" or texts is None or len(texts) >= limit:
                continue
            texts.append(document.text)
            if all(len(texts) >= limit for texts in found.values()):
                return found
    return found


def valid_documents(
    data_dir: str | os.PathLike, tokenizer: str, domains: list[str], limit: int
) -> dict[str, list[str]]:
    """Up to `limit` validation documents per domain, in the order the data stage prepared
    them, decoded from its token shards (each document ends with the EOS id)."""
    from regmix.data.loader import domain_index, open_domain
    from regmix.data.tokenize import load_tokenizer

    decoder = load_tokenizer(tokenizer)
    found = {}
    for domain in domains:
        eos = domain_index(data_dir, "valid", domain)["eos_id"]
        stream = open_domain(data_dir, "valid", domain)
        parts = getattr(stream, "parts", [stream])  # a document never spans two shard files
        texts: list[str] = []
        for part in parts:
            for ids in _documents_in(part, eos):
                texts.append(decoder.decode(ids))
                if len(texts) == limit:
                    break
            if len(texts) == limit:
                break
        found[domain] = texts
    return found


def _documents_in(shard: np.ndarray, eos: int) -> Iterator[np.ndarray]:
    """The token ids of each document of a shard, read a slice at a time."""
    start = 0
    for offset in range(0, len(shard), SCAN_TOKENS):
        ends = np.flatnonzero(np.asarray(shard[offset : offset + SCAN_TOKENS]) == eos) + offset
        for end in ends:
            yield np.asarray(shard[start:end])
            start = end + 1


def task_documents(
    corpus: str | os.PathLike | None,
    options: ReadOptions,
    data_dir: str | os.PathLike,
    tokenizer: str,
    domains: list[str],
    limit: int,
    choices: int,
) -> tuple[str, dict[str, list[str]]]:
    """The split the task is cut from and its documents per domain: `test` where the corpus's
    test split holds every target domain and at least `choices` documents, else `valid`."""
    per_domain = -(-limit // len(domains))
    if corpus is not None:
        test = test_documents(corpus, options, domains, per_domain)
        if all(test.values()) and sum(map(len, test.values())) >= choices:
            return "test", test
    return "valid", valid_documents(data_dir, tokenizer, domains, per_domain)


def write_continuation_task(
    corpus: str | os.PathLike | None,
    options: ReadOptions,
    data_dir: str | os.PathLike,
    tokenizer: str,
    target: str,
    out_dir: str | os.PathLike,
    n: int = 200,
    choices: int = 4,
    max_tokens: int = 128,
    seed: int = 0,
) -> Path:
    """Write `<out_dir>/task.yaml` and `data.jsonl` from the target domains' test documents,
    or their validation documents as the data stage prepared them in `data_dir`."""
    from regmix.data.loader import split_domains

    domains = target_domains(target, split_domains(data_dir, "valid"))
    split, found = task_documents(
        corpus, options, data_dir, tokenizer, domains, DOCUMENTS_PER_EXAMPLE * n, choices
    )
    texts = [text for domain in domains for text in found[domain]]
    try:
        examples = make_examples(texts, n, choices=choices, max_tokens=max_tokens, seed=seed)
    except RegmixError as error:
        raise RegmixError(f"{SPLIT_NAMES[split]} split of {', '.join(domains)}: {error}") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / DATA_FILE) as tmp:
        tmp.write_text("".join(json.dumps(e) + "\n" for e in examples))
    name = TASK_NAME.format(domain="_".join(domains))
    about = {"split": split, "domains": domains, "documents": len(texts)}
    about |= {"examples": len(examples), "choices": choices}
    write_text(task_yaml(name, out_dir / DATA_FILE, about), out_dir / TASK_FILE)
    return out_dir / TASK_FILE


def describe(name: str, config: dict) -> str | None:
    """What a continuation task measures, in words, from its config's `metadata` (as lm-eval
    records it in results.json); None for any other task."""
    about = config.get("metadata") or {}
    if not {"split", "domains", "documents", "examples", "choices"} <= set(about):
        return None
    domains = ", ".join(f"`{d}`" for d in about["domains"])
    text = (
        f"`{name}`: {about['examples']} examples of {about['choices']} choices cut from "
        f"{about['documents']} {SPLIT_NAMES.get(about['split'], about['split'])} documents "
        f"of {domains}"
    )
    if about["split"] == "test":
        return f"{text}: text no model trained on nor measured its loss on."
    return (
        f"{text}: the split the target loss is measured on (the corpus has no test split "
        "holding these domains), so this score is not independent of the target loss."
    )
