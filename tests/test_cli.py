import argparse
import os
import subprocess
import sys

import pandas as pd
import pytest
from synthetic_runs import dirichlet_weights, runs_table

from regmix.cli import build_parser, main


def _commands() -> list[str]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(subparsers.choices)


def test_help_lists_every_command():
    result = subprocess.run(
        [sys.executable, "-m", "regmix.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in _commands():
        assert command in result.stdout


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: regmix " + command in capsys.readouterr().out


def test_unknown_sampler_key_is_a_one_line_error(data_dir, tmp_path, capsys):
    code = main(
        [
            "sample-mixtures",
            "--stats",
            str(data_dir / "stats.parquet"),
            "--n",
            "4",
            "--final-tokens",
            "100000",
            "--sampler",
            '{"temprature": 0.5}',
            "--out",
            str(tmp_path / "m.parquet"),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("regmix: error: --sampler: unknown key 'temprature'")
    assert err.count("\n") == 1


def test_summarize_names_a_duplicated_final_run_in_one_line(tmp_path, capsys):
    runs = runs_table(dirichlet_weights(3, 2), ["web", "code"], {"web": lambda w: 3 - w[:, 0]})
    runs["run"] = ["regmix", "prior", "prior"]
    runs.to_parquet(tmp_path / "runs.parquet")
    predictions = pd.DataFrame({"run": ["regmix", "prior"], "prediction": [3.0, 3.1]})
    predictions.to_parquet(tmp_path / "predictions.parquet")
    args = ["summarize", "--runs", str(tmp_path / "runs.parquet"), "--predictions"]
    args += [str(tmp_path / "predictions.parquet"), "--target", "web"]
    args += ["--out", str(tmp_path / "summary.parquet"), "--markdown", str(tmp_path / "s.md")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("regmix: error: ")
    assert "run 'prior' appears more than once" in err
    assert err.count("\n") == 1


def test_summarize_names_a_binary_file_given_as_yaml_in_one_line(tmp_path, capsys):
    runs = runs_table(dirichlet_weights(2, 2), ["web", "code"], {"web": lambda w: 3 - w[:, 0]})
    runs["run"] = ["regmix", "prior"]
    runs.to_parquet(tmp_path / "runs.parquet")
    predictions = pd.DataFrame({"run": ["regmix", "prior"], "prediction": [3.0, 3.1]})
    predictions.to_parquet(tmp_path / "predictions.parquet")
    args = ["summarize", "--runs", str(tmp_path / "runs.parquet"), "--predictions"]
    args += [str(tmp_path / "predictions.parquet"), "--target", "web"]
    args += ["--planted", str(tmp_path / "runs.parquet")]  # a parquet file, not planted.yaml
    args += ["--out", str(tmp_path / "summary.parquet"), "--markdown", str(tmp_path / "s.md")]
    assert main(args) == 1
    err = capsys.readouterr().err
    expected = "expected a YAML text file, not binary data"
    assert err == f"regmix: error: {tmp_path / 'runs.parquet'}: {expected}\n"


def test_a_job_granted_no_gpu_trains_on_cpu_even_where_gpus_exist(monkeypatch):
    from regmix.cli.training import _granted_devices
    from regmix.training.train import TrainConfig

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with _granted_devices(0, TrainConfig()) as config:
        assert config.accelerator == "cpu"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_a_job_without_gpu_flag_keeps_its_settings():
    from regmix.cli.training import _granted_devices
    from regmix.training.train import TrainConfig

    with _granted_devices(None, TrainConfig(accelerator="auto")) as config:
        assert config.accelerator == "auto"
