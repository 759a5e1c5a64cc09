import json
import math
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from regmix.cli import main
from regmix.data.loader import MixedBatches, open_shards, split_domains
from regmix.errors import RegmixError
from regmix.search.mixtures import mixture_table
from regmix.training import reuse
from regmix.training.jobs import read_mixture_weights, train_runs
from regmix.training.language_modeling import StepBatches, lr_factor
from regmix.training.train import TrainConfig, train_mixture
from regmix.training.validation import WEIGHTS

TINY_MODEL = {"n_layer": 1, "n_head": 2, "n_embd": 32, "intermediate_size": 64}
BASE = TrainConfig(
    model=TINY_MODEL,
    seq_len=32,
    batch_size=8,
    steps=12,
    lr=3e-3,
    eval_every=4,
    eval_windows=4,
    checkpoint_every=4,
)


class Interrupt(Exception):
    """Stands for a kill: raised from inside training, after a checkpoint was written."""


class InterruptAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise Interrupt


class PoisonOnceAt(L.Callback):
    """Turns the weights into NaN once, as a too-large learning rate eventually would."""

    def __init__(self, step: int) -> None:
        self.step, self.fired = step, False

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == self.step and not self.fired:
            self.fired = True
            with torch.no_grad():
                pl_module.model.lm_head.weight.fill_(math.nan)


class FailIfTrained(L.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        raise AssertionError("a finished run was trained again")


@pytest.fixture(scope="module")
def mixtures(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    domains = split_domains(data_dir, "train")
    weights = np.full((3, len(domains)), 0.1 / (len(domains) - 1))
    weights[0, domains.index("legal")] = 0.9
    weights[1, domains.index("code")] = 0.9
    weights[2] = 1 / len(domains)
    path = tmp_path_factory.mktemp("mixtures") / "mixtures.parquet"
    mixture_table(["legal_heavy", "code_heavy", "uniform"], domains, weights).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def reference(data_dir, mixtures, tmp_path_factory):
    """Uninterrupted runs of BASE, trained once for the tests that compare against them."""
    root = tmp_path_factory.mktemp("reference")
    runs = ["legal_heavy", "code_heavy"]
    results = train_runs(data_dir, mixtures, runs, BASE, root / "out", root / "work")
    return {r.record["run"]: r for r in results} | {"root": root}


def test_losses_cover_every_valid_domain_at_every_eval_step(data_dir, reference):
    losses = pd.read_parquet(reference["root"] / "out" / "legal_heavy" / "losses.parquet")
    assert list(losses.columns) == ["run", "step", "tokens", "domain", "loss"]
    assert sorted(losses["step"].unique()) == [4, 8, 12]
    for _, at_step in losses.groupby("step"):
        assert sorted(at_step["domain"]) == split_domains(data_dir, "valid")
    assert (losses["tokens"] == losses["step"] * BASE.batch_size * BASE.seq_len).all()
    assert np.isfinite(losses["loss"]).all()


def test_evaluates_at_the_end_when_steps_are_not_a_multiple(data_dir, mixtures, tmp_path):
    config = replace(BASE, steps=10, checkpoint_every=0)
    result = train_mixture(data_dir, "uniform", _weights(mixtures, "uniform"), config, tmp_path)
    assert sorted(result.losses["step"].unique()) == [4, 8, 10]


def test_run_record_reports_status_size_speed_and_settings(reference):
    record = json.loads((reference["root"] / "out" / "code_heavy" / "run.json").read_text())
    assert record["status"] == "ok"
    assert record["steps"] == 12
    assert record["tokens"] == 12 * 8 * 32
    assert record["params"] == 1 * (4 * 32 * 32 + 3 * 32 * 64 + 2 * 32) + 32
    assert record["params_total"] == record["params"] + 2 * 257 * 32
    assert record["tokens_per_s"] > 0
    assert 0 < record["train_seconds"] <= record["wall_seconds"]
    assert record["settings"]["lr"] == BASE.lr
    assert record["settings_fingerprint"] == BASE.fingerprint()
    assert record["weights"]["code"] == pytest.approx(0.9)


def test_losses_fall_and_follow_the_mixture(reference):
    def final(run: str) -> pd.Series:
        losses = reference[run].losses
        return losses[losses["step"] == 12].set_index("domain")["loss"]

    legal, code = final("legal_heavy"), final("code_heavy")
    first = reference["legal_heavy"].losses.query("step == 4").set_index("domain")["loss"]
    assert (legal < first).all()
    assert legal["legal"] < code["legal"]
    assert code["code"] < legal["code"]


def test_same_seed_and_mixture_give_identical_losses(data_dir, mixtures, reference, tmp_path):
    again = train_mixture(
        data_dir, "legal_heavy", _weights(mixtures, "legal_heavy"), BASE, tmp_path
    )
    pd.testing.assert_frame_equal(again.losses, reference["legal_heavy"].losses, check_exact=True)


def test_another_seed_gives_other_losses(data_dir, mixtures, reference, tmp_path):
    config = replace(BASE, seed=1)
    other = train_mixture(
        data_dir, "legal_heavy", _weights(mixtures, "legal_heavy"), config, tmp_path
    )
    assert not np.allclose(other.losses["loss"], reference["legal_heavy"].losses["loss"])


def test_killed_run_resumes_from_its_checkpoint_with_identical_losses(
    data_dir, mixtures, reference, tmp_path
):
    weights = _weights(mixtures, "legal_heavy")
    with pytest.raises(Interrupt):
        train_mixture(data_dir, "legal_heavy", weights, BASE, tmp_path, [InterruptAt(6)])
    assert len(list(tmp_path.glob("*/last.ckpt"))) == 1
    resumed = train_mixture(data_dir, "legal_heavy", weights, BASE, tmp_path)
    assert resumed.record["resumed_from_step"] == 4
    pd.testing.assert_frame_equal(resumed.losses, reference["legal_heavy"].losses, check_exact=True)
    # Finished: the small results stay in the work folder, the heavy checkpoint does not.
    assert not list(tmp_path.glob("*/last.ckpt"))
    assert len(list(tmp_path.glob("*/run.json"))) == 1


def test_checkpoint_from_other_settings_is_never_resumed(data_dir, mixtures, tmp_path):
    weights = _weights(mixtures, "uniform")
    with pytest.raises(Interrupt):
        train_mixture(data_dir, "uniform", weights, BASE, tmp_path, [InterruptAt(6)])
    stale = next(tmp_path.glob("*/last.ckpt")).parent
    result = train_mixture(data_dir, "uniform", weights, replace(BASE, lr=1e-3), tmp_path)
    assert result.record["resumed_from_step"] is None
    assert not stale.exists()


def test_finished_run_is_republished_not_retrained(data_dir, mixtures, reference):
    out, work = reference["root"] / "out", reference["root"] / "work"
    kept = pd.read_parquet(out / "code_heavy" / "losses.parquet")
    for path in (out / "code_heavy").iterdir():
        path.unlink()  # as Snakemake does with the outputs of a failed job
    [result] = train_runs(data_dir, mixtures, ["code_heavy"], BASE, out, work, [FailIfTrained()])
    assert result.reused
    pd.testing.assert_frame_equal(pd.read_parquet(out / "code_heavy" / "losses.parquet"), kept)
    assert json.loads((out / "code_heavy" / "run.json").read_text())["status"] == "ok"


def test_results_of_older_training_code_are_not_reused(data_dir, mixtures, tmp_path, monkeypatch):
    weights = _weights(mixtures, "uniform")
    first = train_mixture(data_dir, "uniform", weights, BASE, tmp_path)
    monkeypatch.setattr(reuse, "code_fingerprint", lambda: "edited-training-code")
    second = train_mixture(data_dir, "uniform", weights, BASE, tmp_path)
    assert not second.reused
    assert first.folder != second.folder and not first.folder.exists()


def test_diverged_run_is_recorded_and_the_job_goes_on(data_dir, mixtures, tmp_path):
    runs = ["legal_heavy", "code_heavy"]
    config = replace(BASE, eval_every=2)
    diverged, fine = train_runs(
        data_dir, mixtures, runs, config, tmp_path / "out", tmp_path / "work", [PoisonOnceAt(5)]
    )
    record = json.loads((tmp_path / "out" / "legal_heavy" / "run.json").read_text())
    assert record["status"] == "diverged"
    assert record["steps"] == 5
    losses = pd.read_parquet(tmp_path / "out" / "legal_heavy" / "losses.parquet")
    assert sorted(losses["step"].unique()) == [2, 4]  # the losses so far, all finite
    assert np.isfinite(losses["loss"]).all()
    assert fine.record["status"] == "ok"
    assert diverged.record["status"] == "diverged"


def test_gradient_accumulation_matches_the_full_batch(data_dir, mixtures, reference, tmp_path):
    config = replace(BASE, micro_batch_size=2)
    accumulated = train_mixture(
        data_dir, "legal_heavy", _weights(mixtures, "legal_heavy"), config, tmp_path
    )
    expected = reference["legal_heavy"].losses["loss"].to_numpy()
    np.testing.assert_allclose(accumulated.losses["loss"].to_numpy(), expected, rtol=1e-4)


def test_compiled_runs_learn_what_eager_runs_learn(data_dir, mixtures, reference, tmp_path):
    """`compile: true` (the demo's setting): two runs in one job, the second reusing the first's
    compiled code, reach the eager runs' losses, and keep plain parameter names."""
    config = replace(BASE, compile=True)
    runs = ["legal_heavy", "code_heavy"]
    results = train_runs(data_dir, mixtures, runs, config, tmp_path / "out", tmp_path / "work")
    for result in results:
        expected = reference[result.record["run"]].losses["loss"].to_numpy()
        np.testing.assert_allclose(result.losses["loss"].to_numpy(), expected, rtol=2e-3)
    kept = [load_file(str(path)) for path in (tmp_path / "work").rglob(WEIGHTS)]
    assert len(kept) == 2
    assert all("lm_head.weight" in w and not any("_orig_mod" in k for k in w) for w in kept)


def test_a_killed_compiled_run_resumes_from_its_checkpoint(data_dir, mixtures, reference, tmp_path):
    config = replace(BASE, compile=True)
    weights = _weights(mixtures, "legal_heavy")
    with pytest.raises(Interrupt):
        train_mixture(data_dir, "legal_heavy", weights, config, tmp_path, [InterruptAt(6)])
    resumed = train_mixture(data_dir, "legal_heavy", weights, config, tmp_path)
    assert resumed.record["resumed_from_step"] == 4
    expected = reference["legal_heavy"].losses["loss"].to_numpy()
    np.testing.assert_allclose(resumed.losses["loss"].to_numpy(), expected, rtol=2e-3)


def test_learning_rate_warms_up_linearly_then_stays_constant():
    config = replace(BASE, warmup_steps=4, schedule="constant")
    assert [lr_factor(s, config) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_schedule_decays_from_the_peak_to_min_lr():
    config = replace(BASE, steps=100, warmup_steps=10, schedule="cosine", lr=4e-4, min_lr=4e-5)
    assert lr_factor(10, config) == pytest.approx(1.0)
    assert lr_factor(55, config) == pytest.approx(0.55)
    assert lr_factor(100, config) == pytest.approx(0.1)


def test_batches_are_a_function_of_seed_and_step_split_across_ranks(data_dir, mixtures):
    shards = open_shards(data_dir, "train")
    batches = MixedBatches(shards, _weights(mixtures, "uniform"), 8, 16, seed=3)
    whole = list(StepBatches(batches, first=5, last=7))
    assert torch.equal(whole[0], batches(5)) and torch.equal(whole[1], batches(6))
    ranks = [list(StepBatches(batches, 5, 6, rank=r, world_size=2)) for r in (0, 1)]
    assert torch.equal(
        torch.cat([ranks[0][0], ranks[1][0]]).sort(0).values, batches(5).sort(0).values
    )
    micro = list(StepBatches(batches, 5, 6, micro_batch_size=2))
    assert len(micro) == 4 and torch.equal(torch.cat(micro), batches(5))


def test_cli_trains_the_listed_runs_with_pinned_threads(data_dir, mixtures, tmp_path):
    settings = json.dumps({"model": TINY_MODEL, "seq_len": 16, "batch_size": 4, "steps": 3})
    threads = torch.get_num_threads()
    try:
        code = main(
            [
                "train-proxy",
                *_data_args(data_dir, mixtures),
                "--runs",
                "uniform",
                "code_heavy",
                "--settings",
                settings,
                "--out",
                str(tmp_path / "out"),
                "--work",
                str(tmp_path / "work"),
                "--threads",
                "1",
            ]
        )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    for run in ("uniform", "code_heavy"):
        assert (tmp_path / "out" / run / "losses.parquet").is_file()
        assert (
            "1 thread(s)" in json.loads((tmp_path / "out" / run / "run.json").read_text())["device"]
        )


def test_cli_unknown_setting_is_a_one_line_error(data_dir, mixtures, tmp_path, capsys):
    code = main(
        [
            "train-proxy",
            *_data_args(data_dir, mixtures),
            "--runs",
            "uniform",
            "--settings",
            '{"step": 3}',
            "--out",
            str(tmp_path),
            "--work",
            str(tmp_path),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("regmix: error: --settings: unknown key 'step'")
    assert err.count("\n") == 1


def test_run_missing_from_the_mixture_table_is_an_error(mixtures):
    with pytest.raises(RegmixError, match="no run named 'run9999'"):
        read_mixture_weights(mixtures, ["uniform", "run9999"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"micro_batch_size": 3}, "micro_batch_size"),
        ({"schedule": "linear"}, "schedule"),
        ({"steps": 0}, "steps"),
        ({"min_lr": 1.0}, "min_lr"),
        ({"model": {"n_layer": 1, "n_head": 2, "n_embd": 8, "ffn": 4}}, "unknown key 'ffn'"),
        ({"model": "tinyllama_2M"}, "preset 'tinyllama_2M': unknown"),
        ({"strategy": "fsdp"}, "strategy: 'fsdp' is not supported"),
    ],
)
def test_bad_settings_are_named(change, message):
    with pytest.raises(RegmixError, match=message):
        replace(BASE, **change)


def _weights(mixtures: Path, run: str) -> dict[str, float]:
    return read_mixture_weights(mixtures, [run])[run]


def _data_args(data_dir: Path, mixtures: Path) -> list[str]:
    return ["--data", str(data_dir), "--mixtures", str(mixtures)]
