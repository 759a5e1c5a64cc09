"""The continuation task: examples cut from held-out documents, and which ones: the target
domains' test documents where the corpus has a test split holding them, else their validation
documents exactly as the data stage chose them (decoded from its shards), on every layout the
data stage reads."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zstandard

from regmix.data.corpus import ReadOptions, documents, open_corpus
from regmix.data.prepare import prepare_corpus
from regmix.errors import RegmixError
from regmix.evaluation.continuation import (
    cut_examples,
    describe,
    make_examples,
    write_continuation_task,
)
from regmix.evaluation.tasks import select_tasks

WORDS = [
    *("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"),
    *("theta", "iota", "kappa", "lambda", "mu", "nu", "xi"),
]


def word_documents(n: int = 12, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=60)) for _ in range(n)]


def test_continuation_examples_hide_the_true_continuation_among_other_documents():
    examples = make_examples(word_documents(), n=30, choices=4, seed=1)
    assert len(examples) == 30
    for example in examples:
        assert len(example["choices"]) == 4 and len(set(example["choices"])) == 4
        assert 0 <= example["label"] < 4
    labels = [e["label"] for e in examples]
    assert len(set(labels)) > 1  # the answer is not always in the same place


def test_continuation_examples_fit_a_short_model_in_bytes():
    texts = [text.replace("a", "å") for text in word_documents()]  # two bytes each
    for example in make_examples(texts, n=30, max_tokens=32):
        assert len(example["context"].encode()) <= 16
        assert all(0 < len(choice.encode()) <= 8 for choice in example["choices"])


def test_continuation_task_needs_documents_from_enough_places():
    with pytest.raises(RegmixError, match="too few examples"):
        make_examples(word_documents(n=2), n=10, choices=4)
    long_words = [" ".join(["pneumonoultramicroscopic"] * 20)] * 8
    with pytest.raises(RegmixError, match="continuation of 4 to 8 bytes at a model length of 32"):
        make_examples(long_words, n=10, max_tokens=32)


def test_a_word_too_long_to_fit_is_stepped_over_not_the_rest_of_the_document():
    url = "https://example.org/" + "x" * 40
    texts = [f"{text} {url} {text}" for text in word_documents(n=4)]
    cut = cut_examples(texts, 16, 8)
    assert all(url not in context + continuation for _, context, continuation in cut)
    per_document = np.bincount([doc for doc, _, _ in cut])
    alone = np.bincount([doc for doc, _, _ in cut_examples(word_documents(n=4), 16, 8)])
    assert (per_document > alone).all()  # examples from after the URL too


# --- which documents, on each layout the data stage reads ---------------------------------------


def tagged(tag: str, n: int) -> list[str]:
    """`n` documents whose every word names its document (`<tag><i>w<j>`, short enough for
    a 32-token model's examples): an example's words say which document it was cut from."""
    return [" ".join(f"{tag}{i}w{j}" for j in range(30)) for i in range(n)]


def source(example: dict) -> str:
    """The document an example's true continuation was cut from."""
    return example["choices"][example["label"]].split()[0].rpartition("w")[0]


def write_task(corpus: Path, options: ReadOptions, tmp_path: Path, target="target", n=20):
    data = tmp_path / "data"
    prepare_corpus(corpus, data, "byte", options=options)
    out = tmp_path / "task"
    write_continuation_task(corpus, options, data, "byte", target, out, n, max_tokens=32)
    examples = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    task = yaml.safe_load((out / "task.yaml").read_text())
    return examples, task


PREFIX = {"train": "T", "valid": "V", "test": "X"}


def regmix_corpus(corpus: Path, files: dict[str, tuple[str, ...]]) -> Path:
    """RegMix's layout: `<split>/<domain>-0.jsonl` for each split's domains, 8 documents each,
    tagged `<T|V|X><first letter of the domain>`."""
    for split, domains in files.items():
        (corpus / split).mkdir(parents=True)
        for domain in domains:
            lines = [json.dumps({"text": t}) for t in tagged(PREFIX[split] + domain[0], 8)]
            (corpus / split / f"{domain}-0.jsonl").write_text("\n".join(lines) + "\n")
    return corpus


def test_regmix_layout_uses_the_target_domains_validation_documents(tmp_path):
    both = ("target", "web")
    corpus = regmix_corpus(tmp_path / "corpus", {"train": both, "valid": both})
    examples, task = write_task(corpus, ReadOptions(), tmp_path)
    assert task["task"] == "continuation_target" and len(examples) == 20
    assert {source(e)[:2] for e in examples} == {"Vt"}
    assert len({source(e) for e in examples}) > 4  # spread over the documents
    about = {"split": "valid", "domains": ["target"], "documents": 8, "examples": 20}
    assert task["metadata"] == {"version": 1.0, **about, "choices": 4}
    assert select_tasks([str(tmp_path / "task" / "task.yaml")]).names == ["continuation_target"]
    weighted, task = write_task(corpus, ReadOptions(), tmp_path / "weighted", "target:0.5,web:0.5")
    assert task["task"] == "continuation_target_web"
    assert {source(e)[:2] for e in weighted} == {"Vt", "Vw"}


def test_a_test_split_holding_the_target_is_used_instead(tmp_path):
    """Test documents: text no model trains on nor measures the target loss on."""
    both = ("target", "web")
    corpus = regmix_corpus(tmp_path / "corpus", {"train": both, "valid": both, "test": both})
    examples, task = write_task(corpus, ReadOptions(), tmp_path)
    assert {source(e)[:2] for e in examples} == {"Xt"}
    assert task["metadata"]["split"] == "test" and task["metadata"]["documents"] == 8


def test_a_test_split_without_the_target_leaves_the_task_on_validation(tmp_path):
    both = ("target", "web")
    corpus = regmix_corpus(tmp_path / "corpus", {"train": both, "valid": both, "test": ("web",)})
    examples, task = write_task(corpus, ReadOptions(), tmp_path)
    assert {source(e)[:2] for e in examples} == {"Vt"} and task["metadata"]["split"] == "valid"


def test_the_pile_as_it_ships_uses_test_jsonl_zst(tmp_path):
    """`train/NN.jsonl.zst`, `val.jsonl.zst`, `test.jsonl.zst`, the domain in each record."""
    corpus = tmp_path / "corpus"
    files = {"train/00.jsonl.zst": "T", "val.jsonl.zst": "V", "test.jsonl.zst": "X"}
    for path, prefix in files.items():
        records = [{"text": t, "meta": {"set": "Pile-CC"}} for t in tagged(prefix + "c", 10)]
        records += [{"text": t, "meta": {"set": "ArXiv"}} for t in tagged(prefix + "a", 10)]
        text = "".join(json.dumps(r) + "\n" for r in records).encode()
        (corpus / path).parent.mkdir(parents=True, exist_ok=True)
        (corpus / path).write_bytes(zstandard.ZstdCompressor().compress(text))
    options = ReadOptions(domain_field="meta.set", valid_fraction=0.2)  # ignored: val is there
    examples, task = write_task(corpus, options, tmp_path, target="pile_cc")
    assert {source(e)[:2] for e in examples} == {"Xc"}
    assert task["task"] == "continuation_pile_cc"
    assert (task["metadata"]["split"], task["metadata"]["documents"]) == ("test", 10)


def held_out_documents(corpus: Path, options: ReadOptions, domain: str) -> set[str]:
    """The documents of `domain` the data stage's reader puts in the validation split."""
    files, options = open_corpus(corpus, options)
    return {
        d.text.split()[0].rpartition("w")[0]
        for f in files
        for d in documents(f, options)
        if d.split == "valid" and d.domain == domain
    }


def test_domain_field_corpus_with_a_hash_hold_out_uses_the_held_out_documents(tmp_path):
    """The Pile's layout (no validation file): what the data stage held out, nothing else."""
    corpus = tmp_path / "corpus"
    (corpus / "train").mkdir(parents=True)
    records = [{"text": t, "meta": {"set": "Pile-CC"}} for t in tagged("cc", 40)]
    records += [{"text": t, "meta": {"set": "ArXiv"}} for t in tagged("ax", 40)]
    for k in range(2):
        text = "".join(json.dumps(r) + "\n" for r in records[k::2]).encode()
        (corpus / "train" / f"{k:02d}.jsonl.zst").write_bytes(
            zstandard.ZstdCompressor().compress(text)
        )
    options = ReadOptions(domain_field="meta.set", valid_fraction=0.3)
    examples, task = write_task(corpus, options, tmp_path, target="pile_cc")
    held_out = held_out_documents(corpus, options, "pile_cc")
    assert 4 <= len(held_out) < 40
    assert {source(e) for e in examples} <= held_out
    assert task["task"] == "continuation_pile_cc"
    assert task["metadata"]["split"] == "valid"
    assert task["metadata"]["documents"] == len(held_out)


def test_parquet_corpus_with_a_domain_column_uses_its_validation_documents(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = tagged("cc", 30) + tagged("ax", 30)
    frame = pd.DataFrame({"text": texts, "source": ["Pile-CC"] * 30 + ["ArXiv"] * 30})
    frame.to_parquet(corpus / "part-0.parquet")
    options = ReadOptions(domain_field="source", valid_fraction=0.3)
    examples, task = write_task(corpus, options, tmp_path, target="arxiv")
    assert {source(e) for e in examples} <= held_out_documents(corpus, options, "arxiv")
    assert task["metadata"]["domains"] == ["arxiv"]


def test_the_summary_says_what_the_task_measures():
    about = {"split": "valid", "domains": ["target"], "documents": 36, "examples": 200}
    config = {"metadata": {"version": 1.0, **about, "choices": 4}}
    text = describe("continuation_target", config)
    assert text.startswith(
        "`continuation_target`: 200 examples of 4 choices cut from 36 validation documents of "
        "`target`: the split the target loss is measured on"
    )
    config["metadata"]["split"] = "test"
    assert "36 test documents of `target`: text no model trained on" in describe("c", config)
    assert describe("hellaswag", {"metadata": {"version": 1.0}}) is None


@pytest.mark.parametrize("umask", [0o002, 0o027])
def test_the_task_folder_and_files_follow_the_umask(tmp_path, umask):
    """A lab-mate reads (or, with umask 002, writes) what evaluation wrote: no 0700 folder,
    no 0600 file, whatever the temporary files were made with."""
    corpus = regmix_corpus(tmp_path / "corpus", {"train": ("target",), "valid": ("target",)})
    prepare_corpus(corpus, tmp_path / "data", "byte")
    out = tmp_path / "shared" / "continuation"
    command = [sys.executable, "-m", "regmix.cli", "continuation-task", "--corpus", str(corpus)]
    command += ["--data", str(tmp_path / "data"), "--target", "target", "--examples", "8"]
    command += ["--max-tokens", "32", "--out-dir", str(out)]
    result = subprocess.run(
        command, capture_output=True, text=True, preexec_fn=lambda: os.umask(umask), check=False
    )
    assert result.returncode == 0, result.stderr
    for path, mode in ((out.parent, 0o777), (out, 0o777), (out / "task.yaml", 0o666)):
        assert stat.S_IMODE(path.stat().st_mode) == mode & ~umask, path
    assert stat.S_IMODE((out / "data.jsonl").stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("tokenizer", ["byte", "bpe:300"])
def test_validation_documents_decode_to_the_text_the_data_stage_read(tmp_path, tokenizer):
    from regmix.evaluation.continuation import valid_documents

    both = ("target", "web")
    corpus = regmix_corpus(tmp_path / "corpus", {"train": both, "valid": both})
    prepare_corpus(corpus, tmp_path / "data", tokenizer)
    spec = "byte" if tokenizer == "byte" else str(tmp_path / "data" / "tokenizer.json")
    found = valid_documents(tmp_path / "data", spec, ["web"], limit=5)
    assert found == {"web": tagged("Vw", 8)[:5]}
