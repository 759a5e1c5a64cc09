"""A sweep outlives corpus changes: after a domain is added or removed, a file added or touched,
the workflow re-runs only what the change invalidates, by content, and says so before anything
runs. One finished sweep on a user's corpus (RegMix's layout, the tiny config) is copied for each
case; each test checks what trained, what was measured again and what was kept."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow import TINY, snakemake

from regmix.cli import main
from regmix.data.synth import SynthConfig, generate
from regmix.training.reuse import kept_runs

pytestmark = pytest.mark.workflow

WEB_FILE = "corpus/train/web-2.jsonl"
SUMMARY = "results/final/summary.md"
"""The target of every run here: the whole method but the report's figures."""


def write_config(path: Path, **sections) -> Path:
    """The tiny config on the user corpus in the work folder (`corpus`), with `sections`
    merged in."""
    config = yaml.safe_load(TINY.read_text())
    config["corpus"] = {"path": "corpus"}
    config["reuse"] = {"runs_per_new_domain": 2}
    config["final"]["heldout"] = 1
    config["regression"] = {"compare": []}
    config["proxy"]["check_optimum"] = False  # it follows the regmix final model: time only
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(config))
    return path


def kept(work: Path) -> dict[str, tuple[str, dict]]:
    """Every kept run (`proxy/run0001`, `final/prior`, `optimum/regmix`): its kept folder's name
    (which changes when it trains) and its record (which changes when it is measured again)."""
    runs = kept_runs(work / "results" / "checkpoints")
    return {name: (kept.folder.name, kept.record) for name, kept in runs.items()}


def changes(before: dict, after: dict) -> tuple[set[str], set[str]]:
    """(runs trained, runs measured again) between two snapshots of `kept`."""
    trained = {run for run, (folder, _) in after.items() if before.get(run, ("",))[0] != folder}
    measured = {
        run
        for run, (folder, record) in after.items()
        if run not in trained and before[run][1]["data"] != record["data"]
    }
    return trained, measured


def rules_run(result) -> Counter:
    """Rule name → jobs run, from Snakemake's log of a real run."""
    return Counter(re.findall(r"^local(?:rule|checkpoint) (\w+):", result.stderr, re.MULTILINE))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    """A finished sweep whose corpus is a folder of the user's, inside its work folder."""
    root = tmp_path_factory.mktemp("corpus_change")
    work = root / "work"
    shutil.copytree(corpus_dir, work / "corpus")
    config = write_config(root / "config.yaml")
    started = time.perf_counter()
    result = snakemake(work, SUMMARY, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"base sweep: {time.perf_counter() - started:.0f} s")
    return work


@pytest.fixture
def copy(base: Path, tmp_path: Path) -> Path:
    """A copy of the finished sweep (metadata and times included) to change."""
    return shutil.copytree(base, tmp_path / "work", symlinks=True)


def run_changed(base: Path, work: Path, config: Path) -> tuple[str, Counter, set, set]:
    """Dry run (the table it prints), real run, and what trained and was measured again; then
    check that nothing is left to do."""
    dry = snakemake(work, SUMMARY, "--dry-run", config=config)
    assert dry.returncode == 0, dry.stderr[-3000:]
    result = snakemake(work, SUMMARY, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    trained, measured = changes(kept(base), kept(work))
    again = snakemake(work, SUMMARY, "--dry-run", config=config)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]
    return dry.stderr, rules_run(result), trained, measured


def mixtures_of(work: Path, kind: str) -> dict[str, pd.Series]:
    """The mixtures runs were trained on: proxies (rounds) or final models."""
    if kind == "proxy":
        tables = sorted((work / "results/mixtures").glob("round*.parquet"))
    else:
        tables = sorted((work / "results/mixtures/final").glob("*.parquet"))
    rows = pd.concat([pd.read_parquet(t) for t in tables]).set_index("run")
    return {run: rows.loc[run].filter(like="weight.").fillna(0.0) for run in rows.index}


def weighting(work: Path, kind: str, domain: str) -> set[str]:
    stage = {"proxy": "proxy", "final": "final"}[kind]
    mixtures = mixtures_of(work, kind)
    return {f"{stage}/{run}" for run, w in mixtures.items() if w.get(f"weight.{domain}", 0) > 0}


def add_web_file(work: Path) -> None:
    """A new file of the largest domain (3% of its text): documents of its own generator."""
    documents = generate(SynthConfig(seed=1, scale=0.21))[("train", "web")]
    old = sum(1 for _ in (work / "corpus/train").glob("web-*"))
    assert old == 2
    (work / WEB_FILE).write_text("".join(json.dumps({"text": t}) + "\n" for t in documents[-3:]))


def test_a_domain_added_is_explored_by_one_small_round_and_no_run_trains_again(base, copy, capsys):
    documents = generate(SynthConfig(seed=2, scale=0.05))
    for split, count in (("train", 30), ("valid", 15)):
        texts = documents[(split, "web")][:count]  # another generator's words: a new domain
        (copy / "corpus" / split / "extra-0.jsonl").write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in texts)
        )
    config = write_config(copy.parent / "config.yaml")
    code = main(["plan", "--no-measure", "--configfile", str(config), "--directory", str(copy)])
    planned = capsys.readouterr().out
    assert code in (0, None) and "new: round 3 explores extra" in planned
    assert "sweep: 3 round(s) of 4 + 2 + 2 proxy runs" in planned
    table, ran, trained, measured = run_changed(base, copy, config)
    assert "re-evaluated: new domain extra" in table
    assert "new: round 3 explores extra" in table
    old_proxies = {f"proxy/run{i:04d}" for i in range(1, 7)}
    assert old_proxies <= measured  # measured on the new domain from their kept weights
    assert trained & old_proxies == set()
    assert {"proxy/run0007", "proxy/run0008"} <= trained  # the exploration round: 2 runs
    assert {"final/planted", "final/heldout01"} <= measured  # their mixtures did not change
    assert trained <= {"proxy/run0007", "proxy/run0008"} | {
        f"final/{name}" for name in ("regmix", "prior", "uniform")
    }
    round3 = pd.read_parquet(copy / "results/mixtures/round3.parquet")
    assert (round3["weight.extra"] > 0).all() and list(round3["round"]) == [3, 3]
    for round in (1, 2):  # designs do not move when the data does
        path = f"results/mixtures/round{round}.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(copy / path), pd.read_parquet(base / path))
    runs = pd.read_parquet(copy / "results/proxy/runs.parquet")
    assert (
        runs["loss.extra"].notna().all()
        and (runs.loc[runs["round"] < 3, "weight.extra"] == 0).all()
    )
    assert ran["propose_mixtures"] == 2  # round 2 re-published as drawn, round 3 drawn
    summary = (copy / "results/final/summary.md").read_text()
    assert "## Runs from an earlier corpus" in summary and "re-evaluated" in summary


def test_a_file_added_retrains_exactly_the_runs_that_weight_its_domain(base, copy):
    add_web_file(copy)
    config = write_config(copy.parent / "config.yaml")
    table, ran, trained, measured = run_changed(base, copy, config)
    assert "corpus changes: train/web: 1 file(s) added" in table
    assert "re-trained: train data of web changed" in table
    proxies = {run for run in trained if run.startswith("proxy/")}
    assert proxies == weighting(base, "proxy", "web")
    finals = {run for run in trained if run.startswith("final/")}
    web_finals = weighting(base, "final", "web")
    assert web_finals - {"final/regmix"} <= finals  # the optimum follows the new evidence
    assert finals - web_finals <= {"final/regmix"}
    assert measured == set()
    assert ran["prepare_group"] == 1


def test_a_file_added_within_max_change_trains_no_proxy_and_flags_the_runs(base, copy):
    add_web_file(copy)
    config = write_config(copy.parent / "config.yaml", reuse={"max_change": 0.1})
    table, ran, trained, _ = run_changed(base, copy, config)
    assert "kept within reuse.max_change: web changed" in table
    assert trained == {"final/prior"}  # the token prior follows the corpus; nothing else moves
    runs = pd.read_parquet(copy / "results/proxy/runs.parquet").set_index("run")
    stale = {f"proxy/{run}" for run, s in runs["stale_domains"].items() if "web" in json.loads(s)}
    assert stale == weighting(base, "proxy", "web")
    assert runs["earlier_corpus"].all()
    assert "fit" in ran and "train_proxy" in ran  # re-published with their flags: no training
    summary = (copy / "results/final/summary.md").read_text()
    assert re.search(r"\| `run\d+` \| kept within reuse.max_change \| web \d", summary)


def test_a_removed_domain_trains_no_proxy_and_gets_weight_zero(base, copy):
    domains = ["chat", "code", "forum", "legal", "news", "poetry", "web", "target"]  # no math
    config = write_config(copy.parent / "config.yaml", corpus={"domains": domains})
    table, _, trained, measured = run_changed(base, copy, config)
    assert "train/math: left out" in table
    assert not {run for run in trained if run.startswith("proxy/")}
    assert trained <= {"final/regmix", "final/prior", "final/uniform"}
    assert "final/planted" not in trained | measured
    optimum = yaml.safe_load((copy / "results/optimal/mixture.yaml").read_text())
    assert optimum["train"].get("math", 0) == 0
    runs = pd.read_parquet(copy / "results/proxy/runs.parquet")
    assert "weight.math" in runs and runs["loss.math"].notna().all()  # evidence kept


def test_a_touched_file_runs_nothing_and_a_rewritten_one_only_its_data_job(base, copy):
    config = write_config(copy.parent / "config.yaml")
    (copy / "corpus/train/web-0.jsonl").touch()
    dry = snakemake(copy, SUMMARY, "--dry-run", config=config)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    path = copy / "corpus/train/web-1.jsonl"  # the same documents, written otherwise
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in lines))
    table, ran, trained, measured = run_changed(base, copy, config)
    assert "train/web: 1 file(s) changed, 1 file(s) touched (same content)" in table
    assert set(ran) <= {"prepare_group", "collect_shards", "all"} and ran["prepare_group"] == 1
    assert trained == measured == set()
