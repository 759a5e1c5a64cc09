"""The workflow end to end on the tiny config: every artefact, its schema, and idempotence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.utils import validate
from workflow import REPO, snakemake

from regmix.search.mixtures import check_weights
from regmix.training.train import TrainConfig
from regmix.training.train_config import training_settings

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_compiled_training_through_the_workflow_learns_what_eager_training_learns(
    finished, tmp_path
):
    """The demo's setting, `compile: true` for proxies and finals, merged over the tiny config
    on the command line: the proxy batches and a final model train compiled through Snakemake
    and measure the eager run's losses to float rounding."""
    targets = ["results/proxy/runs.parquet", "results/final/planted/losses.parquet"]
    compiled = "proxy={compile: true}", "final={compile: true}"
    result = snakemake(tmp_path, *targets, "--config", *compiled)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "results/final/planted/run.json").read_text())
    assert record["settings"]["compile"] is True
    ours, eager = (pd.read_parquet(f / targets[0]).sort_values("run") for f in (tmp_path, finished))
    loss = [c for c in ours.columns if c.startswith("loss.")]
    assert loss and list(ours["run"]) == list(eager["run"]) and set(ours["status"]) == {"ok"}
    np.testing.assert_allclose(ours[loss].to_numpy(), eager[loss].to_numpy(), rtol=2e-3)
    final = pd.read_parquet(tmp_path / targets[1])["loss"].to_numpy()
    expected = pd.read_parquet(finished / targets[1])["loss"].to_numpy()
    np.testing.assert_allclose(final, expected, rtol=2e-3)


def test_data_stage_writes_shards_and_stats(finished):
    stats = pd.read_parquet(finished / "results/data/stats.parquet")
    columns = ["domain", "split", "tokens", "documents", "text_bytes", "estimated_tokens"]
    assert list(stats.columns) == [*columns, "fingerprint"]
    assert (finished / "results/corpus/planted.yaml").is_file()
    for row in stats.itertuples():
        data = finished / "results/data"
        index = json.loads((data / row.split / f"{row.domain}.json").read_text())
        shards = [data / shard["path"] for shard in index["shards"]]
        assert all(shard.is_file() for shard in shards)
        assert sum(shard.stat().st_size for shard in shards) == 2 * row.tokens  # uint16 ids


def test_mixture_stage_writes_one_table_per_round_with_global_run_names(finished):
    first = pd.read_parquet(finished / "results/mixtures/round1.parquet")
    second = pd.read_parquet(finished / "results/mixtures/round2.parquet")
    assert list(first["run"]) == ["run0001", "run0002", "run0003", "run0004"]
    assert list(second["run"]) == ["run0005", "run0006"]
    assert set(first["round"]) == {1} and set(second["round"]) == {2}
    for table in (first, second):
        check_weights(table, "round table")
    promised = pd.read_parquet(finished / "results/mixtures/intervals/round2.parquet")
    assert list(promised["run"]) == ["run0005", "run0006"] and set(promised["model"]) == {"gp"}
    assert (promised["lower"] < promised["prediction"]).all()
    assert (promised["prediction"] < promised["upper"]).all()


def test_proxy_stage_writes_long_losses_and_the_runs_table(finished):
    runs = pd.read_parquet(finished / "results/proxy/runs.parquet")
    assert len(runs) == 6 and set(runs["status"]) == {"ok"}
    assert list(runs["round"]) == [1, 1, 1, 1, 2, 2]
    for column in ("run", "weight.web", "loss.target", "loss.web", "tokens", "params"):
        assert column in runs
    check_weights(runs, "runs.parquet")
    losses = pd.read_parquet(finished / "results/proxy/run0001/losses.parquet")
    assert list(losses.columns) == ["run", "step", "tokens", "domain", "loss"]
    assert sorted(losses["step"].unique()) == [3, 6]  # eval_every 3 and the end
    assert "target" in set(losses["domain"])


def test_regression_stage_writes_cv_and_metrics_for_every_model(finished):
    for model in ("gp", "lightgbm", "linear", "mixlaw"):
        folder = finished / "results/regression" / model
        metrics = json.loads((folder / "metrics.json").read_text())
        assert {"spearman", "spearman_top_quarter", "regret", "pearson", "n_runs"} <= set(metrics)
        calibration = metrics["calibration"]  # round 2's runs checked round 1's gp intervals
        assert calibration["checks"] == 2 and list(calibration["rounds"]) == ["2"]
        assert calibration["coverage"] in (0, 0.5, 1) and calibration["model"] == "gp"
        assert calibration["interval_scale"] is None and not calibration["applied"]  # 2 < 5
        cv = pd.read_parquet(folder / "cv.parquet")
        assert {"run", "fold", "actual", "prediction"} <= set(cv.columns)
        assert len(cv) == 6


def test_optimum_is_a_regmix_yaml_mixture(finished):
    optimum = yaml.safe_load((finished / "results/optimal/mixture.yaml").read_text())
    assert sum(optimum["train"].values()) == pytest.approx(1, abs=1e-6)
    assert "target" not in optimum["train"]
    assert optimum["target"] == "target" and np.isfinite(optimum["predicted_loss"])


def test_final_stage_trains_exports_and_summarises_every_model(finished):
    names = ["regmix", "prior", "uniform", "planted", "heldout01", "heldout02"]
    summary = pd.read_parquet(finished / "results/final/summary.parquet")
    assert sorted(summary["run"]) == sorted(names)
    for column in ("kind", "target_loss", "predicted_loss", "l1_to_planted", "loss.web"):
        assert column in summary
    for name in names:
        hf = finished / "results/final" / name / "hf"
        assert json.loads((hf / "config.json").read_text())["model_type"] == "llama"
        assert (hf / "model.safetensors").stat().st_size > 0
    text = (finished / "results/final/summary.md").read_text()
    assert "beats the `prior` mixture" in text and "transfer" in text
    assert "trained as a proxy it measured" in text and "95% interval" in text
    assert "## Do the 95% intervals hold?" in text and "| 2 | 2 |" in text
    assert "too few checks to rescale" in text
    assert "  - held-out mixtures: Spearman " in text
    check = pd.read_parquet(finished / "results/optimal/proxy/regmix/losses.parquet")
    assert "target" in set(check["domain"])


def test_report_figures_are_pngs(finished):
    for figure in ("weights", "cv", "optimum", "final_losses", "loss_curves"):
        assert (finished / f"results/report/{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_rule_writes_its_log(finished):
    assert (finished / "logs/data/prepare/synthetic.log").read_text().startswith("prepare ")
    assert (finished / "logs/data/collect_shards.log").read_text().startswith("collect-shards:")


def test_second_invocation_has_nothing_to_do(finished):
    result = snakemake(finished, "--dry-run")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "mixtures:\n  rounds: [4]\n  temprature: 0.5\n",
            "config key mixtures: Additional properties are not allowed ('temprature'",
        ),
        (
            "mixtures:\n  rounds: [many]\n",
            "config key mixtures.rounds.0: 'many' is not of type 'integer'",
        ),
    ],
    ids=["unknown key", "wrong type"],
)
def test_bad_config_fails_in_one_line_naming_the_key(tmp_path, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = snakemake(tmp_path, "--dry-run", config=config)
    assert result.returncode != 0
    assert f"\nregmix: error: {message}" in "\n" + result.stdout + result.stderr


def test_user_corpus_is_used_instead_of_the_synthetic_one(tmp_path, corpus_dir):
    corpus = shutil.copytree(corpus_dir, tmp_path / "my_corpus")
    config = tmp_path / "user.yaml"
    config.write_text(f"corpus:\n  path: {corpus}\nmixtures:\n  rounds: [6]\n")
    result = snakemake(tmp_path, "results/data/stats.parquet", config=config)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (tmp_path / "results/corpus").exists()
    (corpus / "train" / "forum-0.jsonl").write_text('{"text": "changed"}\n')
    rerun = snakemake(tmp_path, "results/data/stats.parquet", "--dry-run", config=config)
    assert "prepare" in rerun.stdout


@pytest.mark.parametrize("preset", sorted((REPO / "config" / "presets").glob("*.yaml")))
def test_config_presets_are_valid(preset):
    config = yaml.safe_load(preset.read_text())
    validate(config, str(REPO / "config" / "schema.yaml"), set_default=True)
    TrainConfig(**training_settings(config["proxy"]))
    TrainConfig(**training_settings(config["final"]))


def test_embedded_default_config_is_valid():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "config" / "schema.yaml"), set_default=True)
    TrainConfig(**training_settings(config["proxy"]))


def test_the_html_report_builds_with_every_figure_and_caption(finished):
    result = snakemake(finished, "--report", "report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (finished / "report.html").read_text(errors="replace")
    assert "proxy mixtures" in html and "coloured by round" in html
