"""The workflow end to end on the tiny config: every artefact, its schema, and idempotence."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.utils import validate
from workflow import REPO, snakemake

from regmix.mixtures import check_weights
from regmix.train import TrainConfig

# Keys of a training section that steer the workflow, not the training (rules/common.smk).
WORKFLOW_KEYS = ("proxies_per_job", "resources", "heldout")

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_data_stage_writes_shards_and_stats(finished):
    stats = pd.read_parquet(finished / "results/data/stats.parquet")
    assert list(stats.columns) == ["domain", "split", "tokens", "documents"]
    assert (finished / "results/corpus/planted.yaml").is_file()
    for row in stats.itertuples():
        assert (finished / "results/data" / row.split / f"{row.domain}.bin").is_file()


def test_mixture_stage_writes_table_and_yaml_per_run(finished):
    table = pd.read_parquet(finished / "results/mixtures/proxy.parquet")
    assert len(table) == 6
    check_weights(table, "proxy.parquet")
    assert sorted(p.stem for p in (finished / "results/mixtures/proxy").glob("*.yaml")) == sorted(
        table["run"]
    )


def test_every_rule_writes_its_log(finished):
    assert (finished / "logs/prepare.log").read_text().startswith("prepare:")


def test_second_invocation_has_nothing_to_do(finished):
    result = snakemake(finished, "--dry-run")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_wrong_config_key_fails_naming_the_key(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("mixtures:\n  n: 4\n  temprature: 0.5\n")
    result = snakemake(tmp_path, "--dry-run", config=config)
    assert result.returncode != 0
    assert "config key mixtures: Additional properties are not allowed ('temprature'" in (
        result.stdout + result.stderr
    )


def test_wrong_config_type_fails_naming_the_key(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("mixtures:\n  n: many\n")
    result = snakemake(tmp_path, "--dry-run", config=config)
    assert result.returncode != 0
    assert "config key mixtures.n: 'many' is not of type 'integer'" in (
        result.stdout + result.stderr
    )


def test_user_corpus_is_used_instead_of_the_synthetic_one(tmp_path, corpus_dir):
    corpus = shutil.copytree(corpus_dir, tmp_path / "my_corpus")
    config = tmp_path / "user.yaml"
    config.write_text(f"corpus:\n  path: {corpus}\nmixtures:\n  n: 4\n")
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
    TrainConfig(**{k: v for k, v in config["proxy"].items() if k not in WORKFLOW_KEYS})
    TrainConfig(**{k: v for k, v in config["final"].items() if k not in WORKFLOW_KEYS})


def test_embedded_default_config_is_valid():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "config" / "schema.yaml"), set_default=True)
    TrainConfig(**{k: v for k, v in config["proxy"].items() if k not in WORKFLOW_KEYS})
