"""The whole workflow (tiny models, evaluation on) on a corpus laid out as The Pile ships:
`train/NN.jsonl.zst`, `val.jsonl.zst` and `test.jsonl.zst` at the root, the domain in
`meta.pile_set_name`, one record with a lone surrogate. Counted by split and domain: no test
document is trained on, validation comes from `val.jsonl.zst` (though the config sets
`valid_fraction`, as the README's does), and the run ends with a summary and downstream scores.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zstandard
from workflow import TINY, snakemake

from regmix.data.domains import normalise
from regmix.data.tokenize import BYTE_EOS
from regmix.workflow.config import merge

pytestmark = pytest.mark.workflow

DOMAINS = ["Pile-CC", "Wikipedia (en)", "Github", "StackExchange", "FreeLaw"]
SURROGATE = "scraped text with a lone surrogate \ud800 in it "
FILES = {"train/00.jsonl.zst": 24, "train/01.jsonl.zst": 24, "train/02.jsonl.zst": 24}
FILES |= {"val.jsonl.zst": 6, "test.jsonl.zst": 6}
"""Documents per domain in each file."""


def text(path: str, domain: str, i: int) -> str:
    words = " ".join(f"{domain[:2].lower()}{(i * 7 + j) % 13}" for j in range(40))
    return f"{words} ({path}, {domain}, document {i}) "  # short words first: continuations


def write_pile(corpus: Path) -> dict[str, list[tuple[str, str]]]:
    """The corpus, and its (domain identifier, text as prepared) per file."""
    written = {}
    for path, docs in FILES.items():
        records = [
            {"text": text(path, domain, i), "meta": {"pile_set_name": domain}}
            for i in range(docs)
            for domain in DOMAINS
        ]
        if path == "train/01.jsonl.zst":
            records[7]["text"] = SURROGATE + records[7]["text"]
        lines = "".join(json.dumps(r) + "\n" for r in records)  # "\ud800" as JSON escapes it
        (corpus / path).parent.mkdir(parents=True, exist_ok=True)
        (corpus / path).write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
        written[path] = [
            (normalise(r["meta"]["pile_set_name"]), r["text"].replace("\ud800", "\ufffd"))
            for r in records
        ]
    return written


def pile_config(folder: Path, corpus: Path) -> Path:
    config = {
        "corpus": {
            "path": str(corpus),
            "domain_field": "meta.pile_set_name",
            "valid_fraction": 0.2,  # the README's Pile config: ignored, val.jsonl.zst is there
        },
        "target": "Wikipedia (en)",
        "mixtures": {"rounds": [4]},
        "proxy": {"check_optimum": False},  # what is tested here is data and evaluation:
        "regression": {"folds": 4, "compare": []},  # one regressor, no optimum proxy
        "final": {"heldout": 0},
        "evaluation": {"enabled": True, "continuation": {"examples": 20}},
    }
    path = folder / "pile.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(TINY.read_text()), config)))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("pile")
    written = write_pile(tmp / "pile")
    workdir = tmp / "work"
    workdir.mkdir()
    result = snakemake(workdir, config=pile_config(tmp, tmp / "pile"))
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, written


def prepared_texts(data: Path, split: str) -> Counter:
    """(domain, document) of every document in a split's shards (byte tokens: EOS-separated)."""
    found = Counter()
    for index_path in sorted((data / split).glob("*.json")):
        index = json.loads(index_path.read_text())
        for shard in index["shards"]:
            ids = np.fromfile(data / shard["path"], dtype=index["dtype"])[: shard["use"]]
            for doc in np.split(ids, np.flatnonzero(ids == BYTE_EOS) + 1)[:-1]:
                found[(index_path.stem, bytes(doc[:-1].astype(np.uint8)).decode())] += 1
    return found


def test_no_test_document_is_trained_on_and_validation_comes_from_val(finished):
    workdir, written = finished
    data = workdir / "results/data"
    train = Counter(d for path, docs in written.items() if path.startswith("train/") for d in docs)
    valid, test = Counter(written["val.jsonl.zst"]), Counter(written["test.jsonl.zst"])
    assert prepared_texts(data, "train") == train
    assert prepared_texts(data, "valid") == valid
    assert not (data / "test").exists()
    stats = pd.read_parquet(data / "stats.parquet")
    documents = stats.set_index(["split", "domain"])["documents"].to_dict()
    expected = {("train", d): n for d, n in Counter(d for d, _ in train).items()}
    expected |= {("valid", d): n for d, n in Counter(d for d, _ in valid).items()}
    assert documents == expected  # 72 train and 6 valid documents per domain, no test row
    groups = [json.loads(p.read_text()) for p in data.glob("shards/*/group.json")]
    assert sum(g["test_documents"] for g in groups) == sum(test.values()) == 30
    assert sum(g["repaired"] for g in groups) == 1 and sum(g["held_out"] for g in groups) == 0


def test_the_run_ends_with_a_summary_and_downstream_scores(finished):
    workdir, _ = finished
    summary = (workdir / "results/final/summary.md").read_text()
    assert "cut from 6 test documents of `wikipedia_en`: text no model trained on" in summary
    downstream = pd.read_parquet(workdir / "results/final/downstream.parquet")
    assert set(downstream["model"]) == {"regmix", "prior", "uniform"}
    runs = pd.read_parquet(workdir / "results/proxy/runs.parquet")
    assert {f"weight.{normalise(d)}" for d in DOMAINS} <= set(runs.columns)
