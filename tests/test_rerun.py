"""Re-running after a change re-runs exactly the invalidated stages, and resumes a killed run.

The workflow is copied into a scratch checkout, so that a test can edit its package code the
way a developer would, and run once on the tiny config; each test then asks Snakemake what a
second invocation would do.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from workflow import REPO, TINY, environment, snakemake, snakemake_command

pytestmark = pytest.mark.workflow

WORKFLOW_FILES = ("Snakefile", "rules", "config", "report", "profiles", "src", "environment.yml")


def planned_jobs(workdir: Path, config: Path, checkout: Path) -> dict[str, int]:
    """Rule name → jobs that `snakemake --dry-run` would run (empty: nothing to do)."""
    result = snakemake(workdir, "--dry-run", config=config, snakefile=checkout / "Snakefile")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    output = result.stdout + result.stderr
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    jobs = {}
    for line in table.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            jobs[parts[0]] = int(parts[1])
    return jobs


def proxy_jobs(jobs: dict[str, int]) -> int:
    return jobs.get("train_proxy", 0)


def with_changes(base: Path, target: Path, changes: dict) -> Path:
    """A copy of the config at `base` with `changes` merged in (one level deep)."""
    config = yaml.safe_load(base.read_text())
    for section, values in changes.items():
        config.setdefault(section, {}).update(values)
    target.write_text(yaml.safe_dump(config))
    return target


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(checkout, workdir, config) of a completed tiny run."""
    root = tmp_path_factory.mktemp("rerun")
    checkout = root / "checkout"
    checkout.mkdir()
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, checkout / name)
    config = shutil.copy(TINY, root / "config.yaml")
    workdir = root / "work"
    result = snakemake(workdir, config=config, snakefile=checkout / "Snakefile")
    assert result.returncode == 0, result.stderr[-3000:]
    return checkout, workdir, config


def test_nothing_changed_means_nothing_to_do(finished):
    checkout, workdir, config = finished
    assert planned_jobs(workdir, config, checkout) == {}


def test_a_regression_setting_reruns_fit_and_downstream_but_no_proxy(finished, tmp_path):
    checkout, workdir, config = finished
    changed = with_changes(config, tmp_path / "c.yaml", {"regression": {"folds": 3}})
    jobs = planned_jobs(workdir, changed, checkout)
    assert proxy_jobs(jobs) == 0
    assert "collect_proxies" not in jobs
    assert {"fit", "simulate", "final_mixture", "summarize", "report_figures"} <= set(jobs)


def test_a_simulation_setting_reruns_simulate_and_downstream_only(finished, tmp_path):
    checkout, workdir, config = finished
    changed = with_changes(config, tmp_path / "c.yaml", {"simulation": {"top_k": 7}})
    jobs = planned_jobs(workdir, changed, checkout)
    assert proxy_jobs(jobs) == 0
    assert "fit" not in jobs and "propose_mixtures" not in jobs
    assert {"simulate", "summarize", "report_figures"} <= set(jobs)
    # Only the optimum moves: its mixture, its final model and its proxy check, not the
    # baselines' or the held-out models'.
    assert jobs["final_mixture"] == 1 and jobs["train_final"] == 1
    assert jobs["train_optimum_proxy"] == 1


def test_a_proxy_training_setting_reruns_every_proxy(finished, tmp_path):
    checkout, workdir, config = finished
    changed = with_changes(config, tmp_path / "c.yaml", {"proxy": {"lr": 0.001}})
    jobs = planned_jobs(workdir, changed, checkout)
    assert proxy_jobs(jobs) == 2  # round 1's 4 runs in one job, round 2's 2 in another
    assert "collect_proxies" in jobs and "fit" in jobs
    assert "prepare" not in jobs and "sample_mixtures" not in jobs


def test_a_later_round_setting_reruns_that_round_and_what_follows_only(finished, tmp_path):
    checkout, workdir, config = finished
    changed = with_changes(config, tmp_path / "c.yaml", {"acquisition": {"method": "ucb"}})
    jobs = planned_jobs(workdir, changed, checkout)
    assert jobs["propose_mixtures"] == 1 and proxy_jobs(jobs) == 1  # round 2, not round 1
    assert "sample_mixtures" not in jobs and "prepare" not in jobs
    assert {"collect_proxies", "fit", "simulate"} <= set(jobs)
    # The baselines and held-out models do not read the proxies: they stay.
    assert jobs.get("train_final", 0) == 1


def planned_after_editing(finished, module_name: str) -> dict[str, int]:
    """The jobs a dry run plans after a developer appends a comment to a package module."""
    checkout, workdir, config = finished
    module = checkout / "src" / "regmix" / f"{module_name.replace('.', '/')}.py"
    original = module.read_text()
    try:
        module.write_text(original + "\n# a developer's edit\n")
        return planned_jobs(workdir, config, checkout)
    finally:
        module.write_text(original)


def test_editing_a_stage_module_reruns_that_stage_and_downstream(finished):
    checkout, workdir, config = finished
    jobs = planned_after_editing(finished, "search.regression")
    # Proposals of later rounds are fitted with this code too: round 2 is proposed again
    # (its batch re-publishes if the proposal is unchanged), round 1 is not touched.
    assert jobs["propose_mixtures"] == 1 and proxy_jobs(jobs) == 1
    assert "prepare_group" not in jobs and "collect_shards" not in jobs
    assert "sample_mixtures" not in jobs
    assert {"fit", "simulate", "predict_final", "summarize"} <= set(jobs)
    jobs = planned_after_editing(finished, "search.simulate")
    assert proxy_jobs(jobs) == 0 and "fit" not in jobs and "propose_mixtures" not in jobs
    assert {"simulate", "summarize"} <= set(jobs) and jobs["train_final"] == 1
    assert planned_jobs(workdir, config, checkout) == {}


def test_editing_the_corpus_reader_reruns_the_data_jobs_and_everything_after(finished):
    jobs = planned_after_editing(finished, "data.readers")
    assert jobs["prepare_group"] == 1 and jobs["collect_shards"] == 1
    assert "synth_corpus" not in jobs and proxy_jobs(jobs) > 0


def training_processes(workdir: Path) -> list[int]:
    """Pids of `regmix train-proxy` processes working in `workdir`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            if b"train-proxy" in command and (proc / "cwd").resolve() == workdir.resolve():
                pids.append(int(proc.name))
        except (OSError, ValueError):
            continue  # not a process, or it ended while we looked
    return pids


def test_a_killed_proxy_resumes_from_its_checkpoint(tmp_path):
    """Kill a proxy job mid-training; the next `snakemake` finishes the rest and resumes it."""
    config = with_changes(
        TINY,
        tmp_path / "slow.yaml",
        {"proxy": {"steps": 400, "checkpoint_every": 20, "eval_every": 0}},
    )
    workdir = tmp_path / "work"
    target = "results/proxy/runs.parquet"
    process = subprocess.Popen(
        snakemake_command(workdir, config, REPO / "Snakefile", target),
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = workdir / "results" / "checkpoints" / "proxy" / "run0001"
    deadline = time.monotonic() + 240
    try:
        while not list(checkpoints.glob("*/last.ckpt")):
            assert process.poll() is None, "the workflow ended before the first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
        for pid in training_processes(workdir):
            os.kill(pid, signal.SIGKILL)  # as the OOM killer or a lost node would
        assert process.wait(timeout=120) != 0  # Snakemake reports the failed job
    finally:
        if process.poll() is None:
            process.kill()

    result = snakemake(workdir, target, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((workdir / "results/proxy/run0001/run.json").read_text())
    assert record["status"] == "ok"
    assert record["resumed_from_step"] >= 20
    assert (workdir / target).is_file()
