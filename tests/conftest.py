"""Shared fixtures: a small synthetic corpus and its token shards, built once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regmix.data.prepare import prepare_corpus
from regmix.data.synth import SynthConfig, write_corpus

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo corpus at a fifth of its size (same domains, planted blend and formats)."""
    return write_corpus(tmp_path_factory.mktemp("corpus"), SynthConfig(seed=1, scale=0.2))


@pytest.fixture(scope="session")
def data_dir(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    prepare_corpus(corpus_dir, out, "byte")
    return out


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path
