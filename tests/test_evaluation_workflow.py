"""The evaluation stage in the workflow: every final model scored by lm-eval on the tiny
config, the downstream table and summary section, and a changed `evaluation` section re-running
evaluation only."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_rerun import planned_jobs, with_changes
from workflow import REPO, TINY, snakemake

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
