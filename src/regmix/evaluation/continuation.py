"""A 4-way continuation task on the target domain, made from its held-out documents.

Each example is a stretch of a validation document (the context), its true continuation and
continuations cut at the same length from other documents of the same domain. A model that
learned the domain picks the true one; chance is 1 / choices. It needs no download, so every
sweep, the demo included, ends with a downstream score; the documents are the validation split,
which no model trains on.
"""

from __future__ import annotations

import json
import os
import random
from itertools import islice
from pathlib import Path

from regmix.data.corpus import discover, read_documents
from regmix.errors import RegmixError
from regmix.files import atomic_path, write_text

TASK_NAME = "continuation_{domain}"
DATA_FILE = "data.jsonl"
TASK_FILE = "task.yaml"


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
    """(document, context, continuation) triples cut at word boundaries, one after another."""
    examples = []
    for doc, text in enumerate(documents):
        words = text.split()
        start = 0
        while start < len(words):
            context, end = _take(words, start, context_bytes)
            continuation, stop = _take(words, end, continuation_bytes)
            if not context or len(continuation.encode()) < continuation_bytes // 2:
                break
            examples.append((doc, context, continuation))
            start = stop
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
        raise RegmixError(
            f"continuation task: {len(documents)} documents give too few examples from "
            f"{choices} different documents (need longer or more validation documents)"
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


def task_yaml(name: str, data_file: Path) -> str:
    """lm-eval's task config: a multiple-choice task over the JSON lines in `data_file`."""
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
            "metadata: {version: 1.0}",
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


def write_continuation_task(
    corpus: str | os.PathLike,
    target: str,
    out_dir: str | os.PathLike,
    n: int = 200,
    choices: int = 4,
    max_tokens: int = 128,
    seed: int = 0,
) -> Path:
    """Write `<out_dir>/task.yaml` and `data.jsonl` from the target domains' validation
    documents."""
    valid = [f for f in discover(corpus) if f.split == "valid"]
    domains = target_domains(target, sorted({f.domain for f in valid}))
    files = [f for f in valid if f.domain in domains]
    documents = list(islice((text for f in files for text in read_documents(f.path)), 10 * n))
    examples = make_examples(documents, n, choices=choices, max_tokens=max_tokens, seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / DATA_FILE) as tmp:
        tmp.write_text("".join(json.dumps(e) + "\n" for e in examples))
    name = TASK_NAME.format(domain="_".join(domains))
    write_text(task_yaml(name, out_dir / DATA_FILE), out_dir / TASK_FILE)
    return out_dir / TASK_FILE
