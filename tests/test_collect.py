import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from regmix.cli import main
from regmix.data.loader import split_domains
from regmix.errors import RegmixError
from regmix.search.mixtures import SamplerConfig, write_proxy_mixtures
from regmix.training.jobs import train_runs
from regmix.training.train import TrainConfig
from regmix.workflow.collect import collect_proxies, join_batches, write_batch_table

CONFIG = TrainConfig(
    model={"n_layer": 1, "n_head": 2, "n_embd": 16, "intermediate_size": 32},
    seq_len=16,
    batch_size=4,
    steps=6,
    eval_every=3,
    eval_windows=2,
)


@pytest.fixture(scope="module")
def sweep(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real proxy runs on mixtures from the real sampler."""
    root = tmp_path_factory.mktemp("sweep")
    mixtures = write_proxy_mixtures(
        data_dir / "stats.parquet", 3, 1e5, SamplerConfig(), 0, root / "mixtures.parquet"
    )
    train_runs(
        data_dir,
        root / "mixtures.parquet",
        list(mixtures["run"]),
        CONFIG,
        root / "proxy",
        root / "work",
    )
    return root


@pytest.fixture
def copy(sweep: Path, tmp_path: Path) -> Path:
    """A scratch copy of the sweep that a test may damage."""
    shutil.copytree(sweep, tmp_path / "sweep")
    return tmp_path / "sweep"


def test_one_row_per_run_with_weights_final_losses_and_status(sweep, data_dir, tmp_path):
    table = collect_proxies(
        [sweep / "mixtures.parquet"], sweep / "proxy", tmp_path / "runs.parquet"
    )
    mixtures = pd.read_parquet(sweep / "mixtures.parquet")
    assert list(table["run"]) == list(mixtures["run"])
    weights = [c for c in table.columns if c.startswith("weight.")]
    pd.testing.assert_frame_equal(table[["run", *weights]], mixtures[["run", *weights]])
    valid = split_domains(data_dir, "valid")
    assert [c for c in table.columns if c.startswith("loss.")] == [f"loss.{d}" for d in valid]
    for run in table["run"]:
        losses = pd.read_parquet(sweep / "proxy" / run / "losses.parquet")
        last = losses[losses["step"] == 6].set_index("domain")["loss"]
        row = table.set_index("run").loc[run]
        assert all(row[f"loss.{d}"] == last[d] for d in valid)
    assert (table["status"] == "ok").all()
    assert (table["tokens"] == 6 * 4 * 16).all()
    assert (table["params"] == CONFIG.model_config(257).non_embedding_params).all()
    assert (table["tokens_per_s"] > 0).all()
    assert pd.read_parquet(tmp_path / "runs.parquet").equals(table)


def test_missing_run_output_names_the_file(copy, capsys):
    (copy / "proxy" / "run0002" / "run.json").unlink()
    mixtures, proxies, out = copy / "mixtures.parquet", copy / "proxy", copy / "runs.parquet"
    args = f"collect-proxies --mixtures {mixtures} --proxy-dir {proxies} --out {out}"
    code = main(args.split())
    assert code == 1
    assert "run0002/run.json: no such file" in capsys.readouterr().err
    assert not (copy / "runs.parquet").exists()


def test_run_trained_on_another_mixture_is_refused(copy):
    path = copy / "proxy" / "run0001" / "run.json"
    record = json.loads(path.read_text())
    first = next(iter(record["weights"]))
    record["weights"][first] += 0.01
    path.write_text(json.dumps(record))
    with pytest.raises(RegmixError, match="run run0001 was trained on another mixture"):
        collect_proxies([copy / "mixtures.parquet"], copy / "proxy", copy / "runs.parquet")


def test_runs_trained_with_other_settings_are_refused(copy):
    path = copy / "proxy" / "run0003" / "run.json"
    record = json.loads(path.read_text())
    record["settings_fingerprint"] = "0" * 16
    path.write_text(json.dumps(record))
    with pytest.raises(RegmixError, match="run run0003 was trained with other settings than run"):
        collect_proxies([copy / "mixtures.parquet"], copy / "proxy", copy / "runs.parquet")


def test_diverged_run_without_evaluations_has_no_losses(copy):
    folder = copy / "proxy" / "run0002"
    record = json.loads((folder / "run.json").read_text())
    record.update(status="diverged", steps=1, tokens=64)
    (folder / "run.json").write_text(json.dumps(record))
    losses = pd.read_parquet(folder / "losses.parquet")
    losses.iloc[:0].to_parquet(folder / "losses.parquet")
    table = collect_proxies([copy / "mixtures.parquet"], copy / "proxy", copy / "runs.parquet")
    row = table.set_index("run").loc["run0002"]
    assert row["status"] == "diverged"
    assert all(math.isnan(row[c]) for c in table.columns if c.startswith("loss."))


def test_batch_tables_join_into_the_runs_table_of_every_round(sweep, tmp_path):
    mixtures = sweep / "mixtures.parquet"
    first = write_batch_table(mixtures, ["run0001", "run0002"], sweep / "proxy", tmp_path / "a")
    second = write_batch_table(mixtures, ["run0003"], sweep / "proxy", tmp_path / "b")
    assert list(first["run"]) == ["run0001", "run0002"] and list(second["run"]) == ["run0003"]
    assert set(first["round"]) == {1}  # the sampler's table is round 1
    joined = join_batches([tmp_path / "a", tmp_path / "b"], tmp_path / "runs.parquet")
    whole = collect_proxies([mixtures], sweep / "proxy", tmp_path / "whole.parquet")
    pd.testing.assert_frame_equal(joined, whole)


def test_joining_batches_refuses_a_run_twice_and_mixed_settings(sweep, tmp_path):
    mixtures = sweep / "mixtures.parquet"
    table = write_batch_table(mixtures, ["run0001"], sweep / "proxy", tmp_path / "a")
    with pytest.raises(RegmixError, match="run 'run0001' appears in more than one batch table"):
        join_batches([tmp_path / "a", tmp_path / "a"], tmp_path / "runs.parquet")
    other = write_batch_table(mixtures, ["run0002"], sweep / "proxy", tmp_path / "b")
    other.assign(settings_fingerprint="0" * 16).to_parquet(tmp_path / "b")
    with pytest.raises(RegmixError, match="run run0002 was trained with other settings"):
        join_batches([tmp_path / "a", tmp_path / "b"], tmp_path / "runs.parquet")
    assert not (tmp_path / "runs.parquet").exists()
    assert len(table) == 1
