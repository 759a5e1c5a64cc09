"""Experiment trackers: each backend receives one run per trained model, grouped by workflow,
with the mixture as hyper-parameters and the training and per-domain validation losses as
metrics, read back with the backend's own reader; a resumed run keeps one clean history."""

from __future__ import annotations

import csv
import sys
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import yaml

from regmix.cli import main
from regmix.data.loader import split_domains
from regmix.errors import RegmixError
from regmix.search.mixtures import mixture_table
from regmix.training.jobs import train_runs
from regmix.training.tracking import TrackingConfig, build_logger, tracking_settings, workflow_group
from regmix.training.train import TrainConfig, train_mixture
from regmix.workflow.config import load_config

TINY_MODEL = {"n_layer": 1, "n_head": 2, "n_embd": 32, "intermediate_size": 64}
CONFIG = TrainConfig(
    model=TINY_MODEL,
    seq_len=32,
    batch_size=8,
    steps=12,
    lr=3e-3,
    eval_every=4,
    eval_windows=4,
    checkpoint_every=4,
)
RUNS = ("legal_heavy", "uniform")
EXTRA = "optional extra: pip install -e '.[{}]'"
GROUP = "target-0123abcd"
TRAIN_STEPS = [2, 4, 6, 8, 10, 12]  # log_every=2
EVAL_STEPS = [4, 8, 12]


class Interrupt(Exception):
    """Stands for a kill: raised from inside training, after a checkpoint was written."""


class InterruptAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise Interrupt


@pytest.fixture(scope="module")
def mixtures(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    domains = split_domains(data_dir, "train")
    weights = np.full((2, len(domains)), 1 / len(domains))
    weights[0] = 0.1 / (len(domains) - 1)
    weights[0, domains.index("legal")] = 0.9
    path = tmp_path_factory.mktemp("mixtures") / "mixtures.parquet"
    mixture_table(list(RUNS), domains, weights).to_parquet(path)
    return path


def weights_of(mixtures: Path, run: str) -> dict[str, float]:
    row = pd.read_parquet(mixtures).set_index("run").loc[run]
    return {c.removeprefix("weight."): float(v) for c, v in row.items()}


def tracking(backend: str, root: Path) -> TrackingConfig:
    return TrackingConfig(backend=backend, log_every=2, dir=str(root / "tracking"), group=GROUP)


def train(data_dir, mixtures, backend, root, kind="proxy"):
    """Both runs trained by one job, reporting to `backend`; their loss tables by run."""
    results = train_runs(
        data_dir,
        mixtures,
        RUNS,
        CONFIG,
        root / "out",
        root / "work",
        tracking=tracking(backend, root),
        kind=kind,
    )
    return {r.record["run"]: r for r in results}


def validation_metrics(result) -> dict[tuple[int, str], float]:
    """{(step, 'val/<domain>'): loss} from a run's own loss table."""
    return {(int(r.step), f"val/{r.domain}"): float(r.loss) for r in result.losses.itertuples()}


def check_validation(logged: dict[tuple[int, str], float], result) -> None:
    """The tracker holds exactly the losses the run published, and their mean per step."""
    expected = validation_metrics(result)
    assert {k: v for k, v in logged.items() if k in expected} == pytest.approx(expected)
    for step in EVAL_STEPS:
        at_step = [v for (s, _), v in expected.items() if s == step]
        assert logged[(step, "val/mean")] == pytest.approx(np.mean(at_step))
    domains = {name for _, name in expected}
    assert {k for k in logged if k[1].startswith("val/")} == {
        (s, name) for s in EVAL_STEPS for name in [*domains, "val/mean"]
    }


def check_weights(params: dict, mixtures: Path, run: str) -> None:
    weights = weights_of(mixtures, run)
    assert {k: float(v) for k, v in params.items() if k.startswith("weight.")} == pytest.approx(
        {f"weight.{d}": w for d, w in weights.items()}
    )


# --- CSV ------------------------------------------------------------------------------------


def read_csv_metrics(folder: Path) -> dict[tuple[int, str], float]:
    with (folder / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    logged = {}
    for row in rows:
        step = int(row.pop("step"))
        for name, value in row.items():
            if value != "":
                assert (step, name) not in logged, f"{name} logged twice at step {step}"
                logged[(step, name)] = float(value)
    return logged


def test_csv_tracker_has_one_folder_per_run_with_weights_and_losses(data_dir, mixtures, tmp_path):
    results = train(data_dir, mixtures, "csv", tmp_path)
    group = tmp_path / "tracking" / "csv" / GROUP / "proxy"
    assert sorted(p.name for p in group.iterdir()) == sorted(RUNS)
    for run in RUNS:
        logged = read_csv_metrics(group / run)
        assert sorted(s for s, name in logged if name == "train/loss") == TRAIN_STEPS
        assert all(np.isfinite(v) for v in logged.values())
        check_validation(logged, results[run])
        params = yaml.safe_load((group / run / "hparams.yaml").read_text())
        check_weights(params, mixtures, run)
        assert params["run"] == run and params["group"] == GROUP and params["kind"] == "proxy"
        assert params["fingerprint"] == results[run].record["fingerprint"]
        assert params["train"]["lr"] == CONFIG.lr and params["train"]["model"] == TINY_MODEL


# --- TensorBoard ----------------------------------------------------------------------------


def read_tensorboard(folder: Path) -> tuple[dict[tuple[int, str], float], dict]:
    """Scalars and hyper-parameters through TensorBoard's own event reader."""
    pytest.importorskip("tensorboard", reason=EXTRA.format("tensorboard"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(folder))
    events.Reload()
    logged = {}
    for tag in events.Tags()["scalars"]:
        for event in events.Scalars(tag):
            assert (event.step, tag) not in logged, f"{tag} logged twice at step {event.step}"
            logged[(event.step, tag)] = event.value
    params = {}
    for content in events.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        for name, value in data.session_start_info.hparams.items():
            params[name] = getattr(value, value.WhichOneof("kind"))
    return logged, params


def test_tensorboard_tracker_has_events_and_hparams_per_run(data_dir, mixtures, tmp_path):
    pytest.importorskip("tensorboard", reason=EXTRA.format("tensorboard"))
    results = train(data_dir, mixtures, "tensorboard", tmp_path, kind="final")
    group = tmp_path / "tracking" / "tensorboard" / GROUP / "final"
    assert sorted(p.name for p in group.iterdir()) == sorted(RUNS)
    for run in RUNS:
        logged, params = read_tensorboard(group / run)
        assert sorted(s for s, name in logged if name == "train/loss") == TRAIN_STEPS
        # float32 in the event file
        expected = validation_metrics(results[run])
        assert {k: logged[k] for k in expected} == pytest.approx(expected, rel=1e-6)
        assert {k for k in logged if k[1].startswith("val/")} >= set(expected)
        check_weights(params, mixtures, run)
        assert params["run"] == run and params["kind"] == "final"
        assert params["train/model/n_embd"] == 32


# --- MLflow ---------------------------------------------------------------------------------


def mlflow_runs(root: Path):
    """The MLflow client on the file store, and the group's runs by name."""
    pytest.importorskip("mlflow", reason=EXTRA.format("mlflow"))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file:{(root / 'tracking' / 'mlflow').resolve()}")
    experiment = client.get_experiment_by_name(GROUP)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    return client, runs


def mlflow_metrics(client, run) -> dict[tuple[int, str], list[float]]:
    logged: dict[tuple[int, str], list[float]] = {}
    for name in run.data.metrics:
        for point in client.get_metric_history(run.info.run_id, name):
            logged.setdefault((point.step, name), []).append(point.value)
    return logged


def test_mlflow_tracker_has_one_run_per_model_in_the_group_experiment(
    data_dir, mixtures, tmp_path, monkeypatch
):
    pytest.importorskip("mlflow", reason=EXTRA.format("mlflow"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = train(data_dir, mixtures, "mlflow", tmp_path)
    client, runs = mlflow_runs(tmp_path)
    assert sorted(r.info.run_name for r in runs) == sorted(RUNS)
    for tracked in runs:
        run = tracked.info.run_name
        assert tracked.info.status == "FINISHED"
        assert tracked.data.tags["regmix.kind"] == "proxy"
        check_weights(tracked.data.params, mixtures, run)
        assert tracked.data.params["train/steps"] == str(CONFIG.steps)
        logged = mlflow_metrics(client, tracked)
        assert all(len(values) == 1 for values in logged.values())
        logged = {k: v[0] for k, v in logged.items()}
        assert sorted(s for s, name in logged if name == "train/loss") == TRAIN_STEPS
        check_validation(logged, results[run])


# --- resuming -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["csv", "tensorboard", "mlflow"])
def test_a_killed_run_resumes_into_the_same_tracker_run(
    backend, data_dir, mixtures, tmp_path, monkeypatch
):
    """Killed at step 6 after the checkpoint at step 4, then resumed: one tracker run whose
    history has every step once (MLflow keeps the retrained step's second value too)."""
    if backend != "csv":
        pytest.importorskip(backend, reason=EXTRA.format(backend))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run, weights, config = (
        "legal_heavy",
        weights_of(mixtures, "legal_heavy"),
        tracking(backend, tmp_path),
    )
    with pytest.raises(Interrupt):
        train_mixture(
            data_dir, run, weights, CONFIG, tmp_path / "work", [InterruptAt(6)], tracking=config
        )
    result = train_mixture(data_dir, run, weights, CONFIG, tmp_path / "work", tracking=config)
    assert result.record["resumed_from_step"] == 4
    folder = tmp_path / "tracking" / backend / GROUP / "proxy" / run
    if backend == "csv":
        logged = read_csv_metrics(folder)
    elif backend == "tensorboard":
        logged, params = read_tensorboard(folder)
        check_weights(params, mixtures, run)
    else:
        client, runs = mlflow_runs(tmp_path)
        assert [r.info.run_name for r in runs] == [run]
        assert runs[0].info.status == "FINISHED"
        history = mlflow_metrics(client, runs[0])
        assert len(history[(6, "train/loss")]) == 2  # the killed attempt's, then the resumed one's
        assert history[(6, "train/loss")][0] == pytest.approx(history[(6, "train/loss")][1])
        logged = {k: v[-1] for k, v in history.items()}
    assert sorted(s for s, name in logged if name == "train/loss") == TRAIN_STEPS
    check_validation(logged, result)


def test_a_fresh_start_replaces_what_an_abandoned_attempt_logged(data_dir, mixtures, tmp_path):
    """Killed before its first checkpoint, a run starts again from step 0: one history."""
    run, weights = "uniform", weights_of(mixtures, "uniform")
    config = tracking("csv", tmp_path)
    with pytest.raises(Interrupt):
        train_mixture(
            data_dir, run, weights, CONFIG, tmp_path / "work", [InterruptAt(3)], tracking=config
        )
    result = train_mixture(data_dir, run, weights, CONFIG, tmp_path / "work", tracking=config)
    assert result.record["resumed_from_step"] is None
    logged = read_csv_metrics(tmp_path / "tracking" / "csv" / GROUP / "proxy" / run)
    assert sorted(s for s, name in logged if name == "train/loss") == TRAIN_STEPS


def test_training_loss_with_gradient_accumulation_is_the_full_batch_loss(
    data_dir, mixtures, tmp_path
):
    run, weights = "legal_heavy", weights_of(mixtures, "legal_heavy")
    logged = {}
    for micro in (None, 2):  # 4 micro-batches per step
        root = tmp_path / str(micro)
        config = replace(CONFIG, micro_batch_size=micro)
        train_mixture(data_dir, run, weights, config, root / "work", tracking=tracking("csv", root))
        metrics = read_csv_metrics(root / "tracking" / "csv" / GROUP / "proxy" / run)
        logged[micro] = {s: v for (s, name), v in metrics.items() if name == "train/loss"}
    assert sorted(logged[2]) == TRAIN_STEPS
    assert logged[2] == pytest.approx(logged[None], rel=1e-4)


# --- settings and errors --------------------------------------------------------------------


def test_none_builds_no_logger_and_writes_nothing(data_dir, mixtures, tmp_path):
    assert build_logger(tracking("none", tmp_path), "uniform", "proxy", tmp_path) is None
    weights = weights_of(mixtures, "uniform")
    small = replace(CONFIG, steps=2, eval_every=0)
    train_mixture(data_dir, "uniform", weights, small, tmp_path / "work", tracking=None)
    assert not (tmp_path / "tracking").exists()


def test_tracking_never_changes_a_run_or_retrains_it(data_dir, mixtures, tmp_path):
    """The same run with and without a tracker: one fingerprint, and the second is reused."""
    weights = weights_of(mixtures, "uniform")
    small = replace(CONFIG, steps=4)
    first = train_mixture(data_dir, "uniform", weights, small, tmp_path / "work")
    again = train_mixture(
        data_dir, "uniform", weights, small, tmp_path / "work", tracking=tracking("csv", tmp_path)
    )
    assert again.reused and again.record["fingerprint"] == first.record["fingerprint"]
    assert not (tmp_path / "tracking").exists()  # a finished run is not reported again


def test_missing_tracker_package_is_one_line_naming_the_extra(
    data_dir, mixtures, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    code = main(
        [
            "train-proxy",
            *("--data", str(data_dir), "--mixtures", str(mixtures), "--runs", "uniform"),
            *("--settings", '{"steps": 2}', "--tracking", '{"backend": "mlflow"}'),
            *("--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err == (
        "regmix: error: tracking.backend: mlflow needs the mlflow package; "
        'install it with: pip install "regmix[mlflow]"\n'
    )
    assert not (tmp_path / "out").exists()  # checked before any training


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"backend": "neptune"}, "tracking.backend: expected one of none, csv"),
        ({"log_evry": 5}, "--tracking: unknown key 'log_evry'"),
        ({"log_every": 0}, "tracking.log_every: must be an integer >= 1"),
        ({"wandb": {"mode": "cloud"}}, "tracking.wandb.mode: expected one of offline, online"),
        ({"mlflow": {"uri": "x"}}, "--tracking.mlflow: unknown key 'uri'"),
    ],
)
def test_bad_tracking_settings_are_named(values, message):
    with pytest.raises(RegmixError, match=message):
        TrackingConfig.from_dict(values, "--tracking")


def test_workflow_group_is_the_target_and_a_fingerprint_of_what_the_workflow_computes(tmp_path):
    def group(changes: dict) -> str:
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(changes))
        return workflow_group(load_config([path]))

    base = group({})
    assert base.startswith("target-") and base == group({})
    assert group({"proxy": {"lr": 0.001}}) != base
    assert group({"target": "a:0.5,b:0.5"}).startswith("a_0.5_b_0.5-")
    # Neither the tracker nor the machine a job asks for changes what is computed.
    assert group({"tracking": {"backend": "mlflow"}}) == base
    assert group({"proxy": {"resources": {"threads": 2}}}) == base
    settings = tracking_settings(load_config([tmp_path / "c.yaml"]))
    assert settings["group"] == group({"proxy": {"resources": {"threads": 2}}})
    assert TrackingConfig.from_dict(settings).backend == "none"


# --- the workflow ---------------------------------------------------------------------------


@pytest.mark.workflow
def test_workflow_reports_every_run_and_a_tracker_change_reruns_nothing(tmp_path):
    from workflow import TINY, snakemake

    def config_with(tracker: dict) -> Path:
        config = yaml.safe_load(TINY.read_text()) | {"tracking": tracker}
        path = tmp_path / f"{tracker['backend']}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    workdir = tmp_path / "work"
    config = config_with({"backend": "csv", "log_every": 2})
    result = snakemake(workdir, config=config)
    assert result.returncode == 0, result.stderr[-3000:]

    results = workdir / "results"
    (group,) = (results / "tracking" / "csv").iterdir()
    assert group.name == workflow_group(load_config([config]))
    published = {
        "proxy": {p.parent.name for p in results.glob("proxy/*/run.json")}
        | {p.parent.name for p in results.glob("optimal/proxy/*/run.json")},
        "final": {p.parent.name for p in results.glob("final/*/run.json")},
    }
    for kind, runs in published.items():
        assert runs and {p.name for p in (group / kind).iterdir()} == runs
        for run in runs:
            logged = read_csv_metrics(group / kind / run)
            assert any(name == "train/loss" for _, name in logged)
            assert any(name.startswith("val/") for _, name in logged)
            params = yaml.safe_load((group / kind / run / "hparams.yaml").read_text())
            assert params["run"] == run and params["group"] == group.name
            assert any(key.startswith("weight.") for key in params)

    # Another tracker, or none, after the fact: nothing is planned, nothing retrained.
    for tracker in ({"backend": "none"}, {"backend": "mlflow", "log_every": 5}):
        result = snakemake(workdir, "--dry-run", config=config_with(tracker))
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Nothing to be done" in result.stdout + result.stderr
