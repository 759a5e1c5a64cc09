"""The evaluation stage in the workflow: every final model scored by lm-eval on the tiny
config, the downstream table and summary section, a changed `evaluation` section re-running
evaluation only, and the continuation task made from what the data stage chose on corpora that
name their domains in each record."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
import zstandard
from test_continuation import held_out_documents, source, tagged
from test_rerun import planned_jobs, with_changes
from workflow import REPO, TINY, snakemake

from regmix.data.corpus import ReadOptions

pytestmark = pytest.mark.workflow
pytest.importorskip("lm_eval", reason="optional extra: pip install .[eval]")

EVALUATION = {"enabled": True, "continuation": {"examples": 24}, "batch_size": 8}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    workdir = tmp_path_factory.mktemp("evaluation")
    config = with_changes(TINY, workdir / "config.yaml", {"evaluation": EVALUATION})
    result = snakemake(workdir, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, config


def test_every_final_model_is_scored_by_lm_eval(evaluated):
    workdir, _ = evaluated
    names = ["regmix", "prior", "uniform", "planted", "heldout01", "heldout02"]
    table = pd.read_parquet(workdir / "results/final/downstream.parquet")
    assert list(table.columns) == [
        "model", "task", "metric", "value", "stderr", "samples", "group"
    ]  # fmt: skip
    assert set(table.model) == set(names)
    assert set(table.task) == {"continuation_target"}
    assert set(table.metric) == {"acc", "acc_norm"} and (table.samples == 24).all()
    assert table.value.between(0, 1).all() and (table.stderr > 0).all()
    for name in names:
        eval_dir = workdir / "results/final" / name / "eval"
        assert (eval_dir / "results.json").is_file()
        assert len((eval_dir / "samples.jsonl").read_text().splitlines()) == 24
        assert (workdir / "results/benchmarks/evaluate" / f"{name}.tsv").is_file()


def test_the_summary_has_a_downstream_section_and_a_figure(evaluated):
    workdir, _ = evaluated
    text = (workdir / "results/final/summary.md").read_text()
    assert "## Downstream (lm-eval)" in text
    assert "| `prior` |" in text and "P(regmix better)" in text
    assert "Spearman(target loss, downstream average) over 6 final models" in text
    assert (
        "- `continuation_target`: 24 examples of 4 choices cut from 36 validation documents of "
        "`target`: the split the target loss is measured on" in text
    )
    summary = pd.read_parquet(workdir / "results/final/summary.parquet")
    assert summary.downstream_average.between(0, 1).all()
    assert (workdir / "results/report/downstream.png").stat().st_size > 0


def test_changing_evaluation_reruns_evaluation_only(evaluated):
    workdir, config = evaluated
    changed = with_changes(config, workdir / "changed.yaml", {"evaluation": {"limit": 12}})
    jobs = planned_jobs(workdir, changed, REPO)
    assert jobs.get("evaluate") == 6
    assert not {rule for rule in jobs if rule.startswith("train")}
    assert set(jobs) <= {
        "evaluate",
        "collect_downstream",
        "summarize",
        "report_downstream",
        "report_figures",
        "all",
    }


def test_the_evaluation_settings_stay_out_of_the_training_config(evaluated):
    workdir, config = evaluated
    settings = yaml.safe_load(config.read_text())
    assert settings["evaluation"]["enabled"] is True
    result = snakemake(workdir, "--dry-run", config=config)
    assert "Nothing to be done" in result.stdout + result.stderr


def _field_corpus(corpus: Path, layout: str) -> None:
    """Two train files whose records name their domain (`meta.set`), no validation file."""
    (corpus / "train").mkdir(parents=True)
    texts = {"Pile-CC": tagged("cc", 40), "ArXiv": tagged("ax", 40), "Github": tagged("gh", 40)}
    records = [{"text": t, "set": name} for name, ts in texts.items() for t in ts]
    for k in range(2):
        part = records[k::2]
        if layout == "parquet":
            pd.DataFrame(part).to_parquet(corpus / "train" / f"{k:02d}.parquet")
        else:
            lines = "".join(json.dumps({"text": r["text"], "meta": {"set": r["set"]}}) + "\n"
                            for r in part)  # fmt: skip
            data = zstandard.ZstdCompressor().compress(lines.encode())
            (corpus / "train" / f"{k:02d}.jsonl.zst").write_bytes(data)


@pytest.mark.parametrize("layout", ["jsonl.zst", "parquet"])
def test_continuation_task_from_what_the_data_stage_held_out(tmp_path, layout):
    """A corpus that names domains in its records, validation held out by hash, evaluation on:
    the task is cut from exactly the target's held-out documents (the data stage's decision)."""
    corpus = tmp_path / "corpus"
    _field_corpus(corpus, layout)
    field = "set" if layout == "parquet" else "meta.set"
    settings = {"path": str(corpus), "domain_field": field, "valid_fraction": 0.25}
    changes = {"corpus": settings, "evaluation": EVALUATION}
    config = with_changes(TINY, tmp_path / "config.yaml", changes)
    config.write_text(config.read_text() + "target: Pile-CC\n")
    task = "results/evaluation/continuation/task.yaml"
    result = snakemake(tmp_path, task, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    held_out = held_out_documents(
        corpus, ReadOptions(domain_field=field, valid_fraction=0.25), "pile_cc"
    )
    about = yaml.safe_load((tmp_path / task).read_text())["metadata"]
    assert about["split"] == "valid" and about["domains"] == ["pile_cc"]
    assert about["documents"] == len(held_out) and about["examples"] == 24
    data = (tmp_path / task).with_name("data.jsonl").read_text().splitlines()
    assert {source(json.loads(line)) for line in data} <= held_out
