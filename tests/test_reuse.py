"""Reusing runs after the corpus changed: what each run's job decides (regmix.training.reuse),
how much of a domain changed (regmix.data.content), and measuring a kept run again from its
final weights."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regmix.data.content import DomainContent, change_fraction, read_contents
from regmix.errors import RegmixError
from regmix.search.mixtures import mixture_table
from regmix.training.jobs import train_runs
from regmix.training.reuse import (
    DROPPED,
    KEEP,
    NEW,
    REEVALUATE,
    RETRAIN,
    ReusePolicy,
    data_record,
    decide,
    kept_run,
    training_key,
)
from regmix.training.train_config import TrainConfig

TINY = TrainConfig(
    model={"n_layer": 1, "n_head": 2, "n_embd": 32, "intermediate_size": 64},
    seq_len=32,
    batch_size=8,
    steps=6,
    eval_windows=4,
)
SETTINGS = asdict(TINY)


def content(name: str, parts: list[tuple[str, int]]) -> DomainContent:
    return DomainContent(f"fp-{name}", sum(n for _, n in parts), tuple(parts))


def corpus(**changes: DomainContent) -> dict:
    """A corpus of two train domains (a, b) and their valid sets, with `changes` applied
    (`train_a=...`, `valid_c=...`; None removes one)."""
    contents = {
        "train": {"a": content("a", [("a1", 100)]), "b": content("b", [("b1", 50)])},
        "valid": {"a": content("va", [("va", 10)]), "b": content("vb", [("vb", 10)])},
    }
    for key, value in changes.items():
        split, domain = key.split("_", 1)
        if value is None:
            contents[split].pop(domain)
        else:
            contents[split][domain] = value
    return contents


def record(weights: dict, contents: dict, settings: dict = SETTINGS) -> dict:
    """What a run trained on `contents` records."""
    from regmix.training.reuse import code_fingerprint

    return {
        "status": "ok",
        "training_key": training_key(settings, weights, False),
        "code": code_fingerprint(),
        "keep_model": False,
        "settings": settings,
        "weights": weights,
        "data": data_record(weights, contents),
    }


def test_a_file_added_measures_its_share_of_the_domain():
    old = content("a", [("a1", 100), ("a2", 100)])
    added = content("a+", [("a1", 100), ("a2", 100), ("a3", 6)])
    assert change_fraction(old, added) == pytest.approx(0.03)
    replaced = content("a~", [("a1", 100), ("a9", 100)])
    assert change_fraction(old, replaced) == pytest.approx(1.0)  # 100 gone + 100 new, of 200
    assert change_fraction(old, old) == 0
    assert change_fraction(old, DomainContent("other", 200, ())) == 1.0  # nothing to match


def test_a_run_on_unchanged_data_is_kept_and_one_never_trained_is_new():
    weights = {"a": 0.5, "b": 0.5}
    decision = decide(record(weights, corpus()), SETTINGS, weights, corpus(), ReusePolicy())
    assert decision.action == KEEP and decision.category == "kept (data unchanged)"
    assert decide(None, SETTINGS, weights, corpus(), ReusePolicy()).action == NEW


def test_a_changed_domain_retrains_only_the_runs_that_weight_it():
    changed = corpus(train_b=content("b+", [("b1", 50), ("b2", 2)]))
    uses_b, without_b = {"a": 0.5, "b": 0.5}, {"a": 1.0, "b": 0.0}
    strict = ReusePolicy()
    decision = decide(record(uses_b, corpus()), SETTINGS, uses_b, changed, strict)
    assert decision.action == RETRAIN
    assert decision.reasons == ("train data of b changed (4.0% of its tokens)",)
    assert decide(record(without_b, corpus()), SETTINGS, without_b, changed, strict).action == KEEP


def test_within_max_change_a_changed_domain_keeps_the_run_flagged_stale():
    changed = corpus(train_b=content("b+", [("b1", 50), ("b2", 2)]))
    weights = {"a": 0.5, "b": 0.5}
    decision = decide(record(weights, corpus()), SETTINGS, weights, changed, ReusePolicy(0.05))
    assert decision.action == KEEP and decision.stale == (("b", 0.04),)
    assert decision.category == "kept within reuse.max_change"
    beyond = decide(record(weights, corpus()), SETTINGS, weights, changed, ReusePolicy(0.03))
    assert beyond.action == RETRAIN


def test_a_new_or_changed_valid_set_is_measured_again_not_trained():
    weights = {"a": 1.0}
    grown = corpus(valid_c=content("vc", [("vc", 10)]), valid_a=content("va2", [("va2", 9)]))
    decision = decide(record(weights, corpus()), SETTINGS, weights, grown, ReusePolicy())
    assert decision.action == REEVALUATE and decision.measure == ("a", "c")
    assert decision.reasons == ("valid set of a changed", "new domain c")


def test_a_removed_domain_keeps_the_runs_that_weighted_it_but_drops_them_from_retraining():
    weights = {"a": 0.5, "b": 0.5}
    gone = corpus(train_b=None, valid_b=None)
    kept = decide(record(weights, corpus()), SETTINGS, weights, gone, ReusePolicy())
    assert kept.action == KEEP  # its evidence stays; its loss on b stays in the record
    other = {**SETTINGS, "lr": 1e-3}
    dropped = decide(record(weights, corpus()), other, weights, gone, ReusePolicy())
    assert dropped.action == DROPPED
    assert dropped.reasons == ("settings changed", "weights b, gone from the corpus")


def test_settings_mixture_and_placement():
    weights = {"a": 0.5, "b": 0.5}
    trained = record(weights, corpus())
    mixture = decide(trained, SETTINGS, {"a": 0.4, "b": 0.6}, corpus(), ReusePolicy())
    assert mixture.action == RETRAIN and mixture.reasons == ("mixture changed",)
    # Where a run trains (the devices a job was granted) is not what it trains.
    on_gpu = {**SETTINGS, "accelerator": "gpu", "devices": 2}
    assert decide(trained, on_gpu, weights, corpus(), ReusePolicy()).action == KEEP
    # A domain added at weight 0 (a mixture table drawn after it arrived) changes nothing.
    assert decide(trained, SETTINGS, {**weights, "c": 0.0}, corpus(), ReusePolicy()).action == KEEP


def test_the_state_is_what_the_record_will_be_once_the_job_ran():
    """The rules' params carry the state: after the job ran, the same decision on the new
    record gives the same state, so Snakemake finds nothing more to do."""
    weights = {"a": 0.5, "b": 0.5}
    grown = corpus(valid_c=content("vc", [("vc", 10)]))
    before = decide(record(weights, corpus()), SETTINGS, weights, grown, ReusePolicy())
    after = decide(record(weights, grown), SETTINGS, weights, grown, ReusePolicy())
    assert before.action == REEVALUATE and after.action == KEEP
    assert before.state == after.state
    retrained = decide(
        record(weights, corpus()),
        SETTINGS,
        weights,
        corpus(train_a=content("x", [])),
        ReusePolicy(),
    )
    assert (
        retrained.state
        == decide(
            record(weights, corpus(train_a=content("x", []))),
            SETTINGS,
            weights,
            corpus(train_a=content("x", [])),
            ReusePolicy(),
        ).state
    )


def test_the_policy_is_checked():
    with pytest.raises(RegmixError, match=r"reuse.max_change: must be in \[0, 1\)"):
        ReusePolicy(max_change=1.5)


# --- a real job: re-evaluation from kept weights ---------------------------------------------


@pytest.fixture(scope="module")
def trained(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two proxies trained on the shared data folder, and a copy of that folder."""
    root = tmp_path_factory.mktemp("reuse")
    data = shutil.copytree(data_dir, root / "data")
    domains = sorted(p.stem for p in (data / "train").glob("*.json"))
    weights = np.zeros((2, len(domains)))
    weights[0, domains.index("legal")] = 1.0
    weights[1] = 1 / len(domains)
    mixtures = root / "mixtures.parquet"
    mixture_table(["legal_only", "uniform"], domains, weights).to_parquet(mixtures)
    results = train_runs(
        data, mixtures, ["legal_only", "uniform"], TINY, root / "out", root / "work"
    )
    return {"root": root, "data": data, "mixtures": mixtures, "results": results}


def test_a_kept_job_imports_no_torch_and_republishes(trained):
    """A job whose runs are all kept decides and copies: a fresh process, no torch."""
    import subprocess
    import sys

    root = trained["root"]
    script = (
        "import sys\n"
        "from regmix.training.jobs import train_runs\n"
        "from regmix.training.train_config import TrainConfig\n"
        f"config = TrainConfig(**{SETTINGS!r})\n"
        f"train_runs({str(trained['data'])!r}, {str(trained['mixtures'])!r}, ['legal_only'],"
        f" config, {str(root / 'again')!r}, {str(root / 'work')!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "kept (data unchanged); results re-published" in result.stderr
    published = json.loads((root / "again" / "legal_only" / "run.json").read_text())
    assert published["decision"] == "kept (data unchanged)" and not published["earlier_corpus"]


def test_a_new_valid_domain_is_measured_from_the_kept_weights_as_training_would(trained, tmp_path):
    """Add a validation domain: the runs are not trained again, and their loss on it equals
    what a run trained from scratch on the new data measures at its last step."""
    root, data = trained["root"], shutil.copytree(trained["data"], tmp_path / "data")
    (data / "valid" / "copy.json").write_text((data / "valid" / "legal.json").read_text())
    work = shutil.copytree(root / "work", tmp_path / "work")
    results = train_runs(data, trained["mixtures"], ["legal_only"], TINY, tmp_path / "out", work)
    assert results[0].reused
    record = json.loads((tmp_path / "out" / "legal_only" / "run.json").read_text())
    assert record["decision"] == "re-evaluated" and record["reasons"] == ["new domain copy"]
    assert record["earlier_corpus"]
    losses = pd.read_parquet(tmp_path / "out" / "legal_only" / "losses.parquet")
    last = losses[losses["step"] == TINY.steps].set_index("domain")["loss"]
    assert last["copy"] == pytest.approx(last["legal"], rel=1e-6)  # the same windows
    fresh = train_runs(
        data, trained["mixtures"], ["legal_only"], TINY, tmp_path / "o", tmp_path / "w"
    )
    again = fresh[0].losses.query(f"step == {TINY.steps}").set_index("domain")["loss"]
    pd.testing.assert_series_equal(last.sort_index(), again.sort_index(), rtol=1e-5)
    kept = kept_run(work / "legal_only")
    assert set(kept.record["data"]["valid"]) == set(read_contents(data)["valid"])


def test_a_domain_gone_keeps_its_runs_and_drops_one_that_must_retrain(trained, tmp_path, capsys):
    data = shutil.copytree(trained["data"], tmp_path / "data")
    for split in ("train", "valid"):
        (data / split / "legal.json").unlink()  # legal left the corpus
    work = shutil.copytree(trained["root"] / "work", tmp_path / "work")
    out = tmp_path / "out"
    [kept] = train_runs(data, trained["mixtures"], ["legal_only"], TINY, out, work)
    assert kept.reused and kept.record["decision"] == "kept (data unchanged)"
    assert "legal" in set(kept.losses["domain"])  # its evidence stays
    other = TrainConfig(**{**SETTINGS, "lr": 1e-3})
    assert train_runs(data, trained["mixtures"], ["legal_only"], other, out, work) == []
    assert (
        "legal_only: dropped: settings changed; weights legal, gone from the corpus"
        in capsys.readouterr().err
    )


def test_corpus_changes_are_predicted_from_the_file_records(corpus_dir, data_dir, tmp_path):
    """Before the data stage runs again, what changed is read from its per-file records: a file
    added is expected to give its domain the tokens per byte its other files gave, a file
    removed takes away the tokens it gave, a touched file of the same content moves nothing,
    and a file rewritten otherwise counts as its old and new tokens."""
    from regmix.data.corpus import discover
    from regmix.workflow.reuse_plan import predict_changes, predicted_contents

    corpus = shutil.copytree(corpus_dir, tmp_path / "corpus")  # times kept (copy2)
    web = [json.loads(line) for line in (corpus / "train/web-0.jsonl").read_text().splitlines()]
    added = corpus / "train/web-9.jsonl"
    added.write_text("".join(json.dumps(d) + "\n" for d in web[:5]))
    (corpus / "train/math-0.jsonl").unlink()
    (corpus / "train/chat-0.jsonl").touch()
    news = corpus / "train/news-0.jsonl"
    news.write_text(
        "".join(
            json.dumps(json.loads(x), indent=None, separators=(",", ":")) + "\n"
            for x in news.read_text().splitlines()
        )
    )
    changes = predict_changes(data_dir, discover(corpus))
    by_file = {(c.relative, c.split, c.domain): c for c in changes}
    assert set(by_file) == {
        ("train/web-9.jsonl", "train", "web"),
        ("train/math-0.jsonl", "train", "math"),
        ("train/chat-0.jsonl", "train", "chat"),
        ("train/news-0.jsonl", "train", "news"),
    }
    kinds = {key[0]: c.kind for key, c in by_file.items()}
    assert kinds == {
        "train/web-9.jsonl": "added",
        "train/math-0.jsonl": "removed",
        "train/chat-0.jsonl": "touched (same content)",
        "train/news-0.jsonl": "changed",
    }
    old = read_contents(data_dir)
    truth = sum(len(d["text"].encode()) + 1 for d in web[:5])  # byte tokens and an end token
    assert by_file[("train/web-9.jsonl", "train", "web")].tokens == pytest.approx(truth, rel=0.1)
    assert by_file[("train/math-0.jsonl", "train", "math")].tokens == old["train"]["math"].tokens
    assert by_file[("train/chat-0.jsonl", "train", "chat")].tokens == 0
    news_tokens = by_file[("train/news-0.jsonl", "train", "news")].tokens
    assert news_tokens == pytest.approx(2 * old["train"]["news"].tokens, rel=0.1)
    expected = {"train": sorted(set(old["train"]) - {"math"}), "valid": sorted(old["valid"])}
    predicted = predicted_contents(old, changes, expected)
    assert "math" not in predicted["train"] and predicted["train"]["chat"] == old["train"]["chat"]
    share = change_fraction(old["train"]["web"], predicted["train"]["web"])
    assert share == pytest.approx(truth / old["train"]["web"].tokens, rel=0.1)
