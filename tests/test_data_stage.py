"""The data stage under Snakemake on a user corpus: one job per group of files, a fan-in,
re-running only what a new file touches, and a bad file failing its own job only."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import zstandard
from workflow import TINY, snakemake

pytestmark = pytest.mark.workflow

STATS = "results/data/stats.parquet"
NAMES = ["Pile-CC", "Wikipedia (en)", "Github"]


def write_part(path: Path, k: int, docs: int = 60) -> Path:
    lines = [
        json.dumps({"text": f"{name} text {k}-{i} " * 30, "meta": {"pile_set_name": name}})
        for i, name in zip(range(docs), NAMES * docs, strict=False)
    ]
    path.write_bytes(zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode()))
    return path


def pile_config(tmp_path: Path, corpus: Path, **corpus_keys) -> Path:
    settings = {
        "path": str(corpus),
        "domain_field": "meta.pile_set_name",
        "valid_fraction": 0.1,
        "bytes_per_job": 1,  # every file a job of its own
        **corpus_keys,
    }
    config = tmp_path / "pile.yaml"
    config.write_text(TINY.read_text() + f"\ncorpus: {json.dumps(settings)}\ntarget: Github\n")
    return config


def jobs_planned(output: str) -> dict[str, int]:
    if "Job stats:" not in output:
        return {}
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("pile")
    corpus = tmp / "corpus"
    corpus.mkdir()
    for k in range(3):
        write_part(corpus / f"{k:02d}.jsonl.zst", k)
    config = pile_config(tmp, corpus)
    workdir = tmp / "work"
    workdir.mkdir()
    result = snakemake(workdir, STATS, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, config


def test_one_job_per_file_and_a_fan_in_write_the_stats(prepared):
    workdir, _ = prepared
    groups = sorted(p.name for p in (workdir / "results/data/shards").iterdir())
    assert len(groups) == 3
    stats = pd.read_parquet(workdir / STATS)
    assert set(stats["domain"]) == {"pile_cc", "wikipedia_en", "github"}
    index = json.loads((workdir / "results/data/train/github.json").read_text())
    assert len(index["shards"]) == 3  # the domain is made of every job's shard
    names = json.loads((workdir / "results/data/domains.json").read_text())
    assert names["Wikipedia (en)"] == "wikipedia_en"
    for group in groups:  # Snakemake's benchmark file records each job's peak memory
        benchmark = workdir / f"results/benchmarks/data/prepare/{group}.tsv"
        assert "max_rss" in benchmark.read_text()


def test_adding_a_file_reruns_only_its_job_and_the_fan_in(prepared):
    workdir, config = prepared
    corpus = Path(json.loads(config.read_text().split("corpus: ", 1)[1].split("\n")[0])["path"])
    added = write_part(corpus / "03.jsonl.zst", 3)
    try:
        dry = snakemake(workdir, STATS, "--dry-run", config=config)
    finally:
        added.unlink()
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert jobs_planned(dry.stdout + dry.stderr) == {"prepare_group": 1, "collect_shards": 1}
    assert "03-" in dry.stdout + dry.stderr


def test_a_bad_file_fails_its_own_job_in_one_line_and_keeps_the_others(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_part(corpus / "00.jsonl.zst", 0)
    bad = corpus / "01.jsonl"
    bad.write_text('{"text": "fine", "meta": {"pile_set_name": "Github"}}\n{"text": "no domain"}\n')
    workdir = tmp_path / "work"
    workdir.mkdir()
    config = pile_config(tmp_path, corpus)
    result = snakemake(workdir, STATS, "--keep-going", "--retries", "1", config=config)
    assert result.returncode != 0
    # a retry (SLURM's time limit, say) asks for more time: attempt × the job's runtime
    runtimes = re.findall(
        r"rule prepare_group:(?:\n .*)*?\n\s+resources: .*runtime=(\d+)", result.stderr
    )
    assert [int(r) for r in runtimes].count(20) == 1 and [int(r) for r in runtimes].count(10) == 2
    (log,) = [p for p in (workdir / "logs/data/prepare").glob("01-*.log")]
    lines = log.read_text().strip().splitlines()
    assert lines == [
        f"regmix: error: {bad}:2: record has no 'meta.pile_set_name' field (set "
        "corpus.missing_domain: skip to leave such records out)"
    ]
    (good,) = (workdir / "results/data/shards").glob("00-*")
    assert (good / "group.json").is_file()  # the finished file's shards are kept
    assert not list((workdir / "results/data/shards").glob("01-*"))


def test_max_tokens_adds_a_survey_and_records_the_full_size(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k in range(3):
        write_part(corpus / f"{k:02d}.jsonl.zst", k, docs=600)  # ~270k tokens per domain
    config = pile_config(tmp_path, corpus, max_tokens=30_000)
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = snakemake(workdir, STATS, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = pd.read_parquet(workdir / STATS).set_index(["split", "domain"])
    train = stats.loc["train"]
    assert ((train["tokens"] > 15_000) & (train["tokens"] < 60_000)).all()  # ~33k (+10%)
    assert (train["estimated_tokens"] > 4 * train["tokens"]).all()
    assert (workdir / "results/data/survey.json").is_file()


def test_adding_a_file_under_max_tokens_reruns_only_its_job_and_the_fan_in(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k in range(3):
        write_part(corpus / f"{k:02d}.jsonl.zst", k, docs=300)
    config = pile_config(tmp_path, corpus, max_tokens=20_000)
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = snakemake(workdir, STATS, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    write_part(corpus / "03.jsonl.zst", 3, docs=300)
    dry = snakemake(workdir, STATS, "--dry-run", config=config)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert jobs_planned(dry.stdout + dry.stderr) == {"prepare_group": 1, "collect_shards": 1}
    result = snakemake(workdir, STATS, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    train = pd.read_parquet(workdir / STATS).set_index(["split", "domain"]).loc["train"]
    assert (abs(train["tokens"] - 20_000) <= 4).all()  # each domain cut to its target
    index = json.loads((workdir / "results/data/train/github.json").read_text())
    assert len(index["shards"]) == 4


def test_a_misspelt_domain_stops_the_run_before_any_proxy(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_part(corpus / "00.jsonl.zst", 0)
    config = pile_config(tmp_path, corpus, domains=["Pile-CC", "Wikipedia (en)", "Git hub"])
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = snakemake(workdir, config=config)
    assert result.returncode != 0
    log = (workdir / "logs/data/collect_shards.log").read_text().strip().splitlines()
    assert log[-1] == (
        "regmix: error: config key corpus.domains: no domain 'git_hub' in the corpus (its "
        "domains: 'Github', 'Pile-CC', 'Wikipedia (en)'); did you mean 'Github'?"
    )
    assert not (workdir / "results/proxy").exists() and not (workdir / STATS).exists()


def test_a_killed_data_job_resumes_and_leaves_nothing_behind(prepared, tmp_path):
    source, config = prepared
    workdir = tmp_path / "work"
    shutil.copytree(source, workdir)
    shards = workdir / "results/data/shards"
    group = sorted(shards.iterdir())[0]
    # What a SIGKILL leaves once Snakemake deleted the declared output: the finished files in
    # the partial folder, and the file being read (here: half-written shards) in a staging one.
    partial = shards / f".{group.name}.partial"
    (finished,) = [p for p in group.iterdir() if p.is_dir()]
    shutil.copytree(finished, partial / finished.name)
    staging = partial / ".zz-000000.staging-4242"
    shutil.copytree(finished / "train", staging / "train")
    shutil.rmtree(group)
    (workdir / STATS).unlink()
    result = snakemake(workdir, STATS, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (workdir / f"logs/data/prepare/{group.name}.log").read_text()
    assert "1 of 1 file(s) finished by an earlier attempt, kept" in log
    assert not list(shards.glob(".*"))
    assert (group / "group.json").is_file()
