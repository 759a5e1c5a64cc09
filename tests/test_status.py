"""`regmix status` on fabricated sweep folders (the files train.py, the rules and Snakemake
write, in their real shapes), on a real Snakemake mid-job, and after the tiny workflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest
import yaml
from workflow import REPO, environment, snakemake

from regmix.cli import main
from regmix.observe.eta import flops_ratio, seen_slots
from regmix.observe.status import DONE, FAILED, PENDING, QUEUED, RUNNING, Run, gather, render
from regmix.workflow.config import load_config
from regmix.workflow.workdir import SnakemakeLog, failure_reason

NOW = time.time()
SWEEP = {
    "mixtures": {"rounds": [8, 4]},
    "proxy": {"proxies_per_job": 2},
    "final": {"heldout": 1},
}


def config_file(tmp_path: Path, values: dict = SWEEP) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def write(path: Path, text: str, at: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if at is not None:
        os.utime(path, (at, at))
    return path


def publish(root: Path, folder: str, run: str, at: float, wall: float, **fields) -> None:
    """A run.json with the keys `regmix.training.train.train_mixture` writes."""
    record = {
        "run": run,
        "status": "ok",
        "steps": 80,
        "tokens": 327680,
        "params": 402048,
        "params_total": 467840,
        "tokens_per_s": 20000.0,
        "train_seconds": wall - 1.0,
        "wall_seconds": wall,
        "resumed_from_step": None,
        "device": "cpu, 1 thread(s) × 1 (32-true)",
        "slurm_job_id": None,
        "seed": 0,
        "settings_fingerprint": "2aa9efeb3b66ba06",
        "fingerprint": "9610485612f3b8a9",
        "weights": {"web": 0.5, "code": 0.5},
        "settings": {"steps": 80, "batch_size": 32, "seq_len": 128},
        **fields,
    }
    write(root / folder / run / "run.json", json.dumps(record, indent=2) + "\n", at)


def mark_in_progress(root: Path, output: str, at: float) -> None:
    """Snakemake 9's mark of a started job's output (persistence/file.py)."""
    name = urlsafe_b64encode(output.encode()).decode()
    write(root / ".snakemake" / "incomplete" / name, '{"external_jobid": null}', at)


def hold_locks(root: Path) -> None:
    write(root / ".snakemake" / "locks" / "0.output.lock", "results/proxy/runs.parquet\n")


def finished_line(run: str, speed: int = 20000) -> str:
    return f"{run}: ok, 80 steps, 327,680 tokens, {speed:,} tokens/s, 10.0 s\n"


@pytest.fixture
def mid_sweep(tmp_path: Path) -> Path:
    """Round 1 of 8 proxies (batches of 2) under way: one batch done (one run diverged), one
    failed after its first run, one running, one queued; round 2 and the rest not started."""
    root = tmp_path / "work"
    start = NOW - 3600
    publish(root, "results/proxy", "run0001", start + 10, 10.0)
    publish(
        root, "results/proxy", "run0002", start + 15, 5.0, status="diverged", tokens_per_s=10000.0
    )
    publish(root, "results/proxy", "run0003", start + 10, 10.0, tokens_per_s=30000.0)
    write(root / "results/proxy/batches/round1/run0001-run0002.parquet", "table")
    write(root / "logs/proxy/round1/run0001-run0002.log", finished_line("run0001"), start + 15)
    error = "regmix: error: run run0004: training stopped at step 40 of 80"
    write(
        root / "logs/proxy/round1/run0003-run0004.log",
        finished_line("run0003")
        + "Traceback (most recent call last):\n  File ...\n"
        + error
        + "\n",
        start + 30,
    )
    hold_locks(root)
    mark_in_progress(root, "results/proxy/batches/round1/run0005-run0006.parquet", NOW - 100)
    write(
        root / "logs/proxy/round1/run0005-run0006.log",
        "run0005: step 40/80, 163,840 tokens, 21,974 tokens/s, mean validation loss 2.7931\n",
        NOW - 50,
    )
    write(root / "results/checkpoints/proxy/run0005/9610485612f3b8a9/last.ckpt", "state")
    mark_in_progress(root, "results/proxy/batches/round1/run0007-run0008.parquet", NOW - 100)
    write(root / "results/mixtures/round1.parquet", "table")
    return root


def snapshot_of(root: Path, tmp_path: Path, values: dict = SWEEP):
    return gather(load_config([config_file(tmp_path, values)]), root)


def states(snapshot) -> dict[str, str]:
    return {run.name: run.state for run in snapshot.runs}


def test_counts_runs_per_state_for_each_round(mid_sweep, tmp_path):
    snapshot = snapshot_of(mid_sweep, tmp_path)
    rows = snapshot.stage_rows()
    assert rows["proxy round 1"] == {DONE: 3, RUNNING: 1, QUEUED: 2, FAILED: 1, PENDING: 1}
    assert rows["proxy round 2"] == {DONE: 0, RUNNING: 0, QUEUED: 0, FAILED: 0, PENDING: 4}
    assert rows["optimum proxy check"][PENDING] == 1
    assert rows["final models"][PENDING] == 5  # regmix, prior, uniform, planted, heldout01
    found = states(snapshot)
    assert (found["run0004"], found["run0005"], found["run0006"]) == (FAILED, RUNNING, PENDING)
    assert {r.name: r.outcome for r in snapshot.runs if r.state == DONE}["run0002"] == "diverged"
    assert snapshot.snakemake_running


def test_shows_the_failed_run_with_the_error_line_of_its_log(mid_sweep, tmp_path):
    text = render(snapshot_of(mid_sweep, tmp_path))
    assert (
        "run0004 (logs/proxy/round1/run0003-run0004.log): "
        "regmix: error: run run0004: training stopped at step 40 of 80"
    ) in text
    assert "diverged: run0002" in text
    assert "running:  run0005 50%" in text


def test_reports_tokens_per_second_finished_and_now(mid_sweep, tmp_path):
    snapshot = snapshot_of(mid_sweep, tmp_path)
    proxies = snapshot.throughput("proxy")
    assert proxies == {"median": 20000.0, "finished": 3, "now": 21974.0, "running": 1}
    assert "tokens/s  proxies  20,000 median of 3 finished; ~21,974 now over 1 running" in render(
        snapshot
    )


def test_eta_follows_rounds_batches_and_the_flops_of_the_finals(mid_sweep, tmp_path):
    config = load_config([config_file(tmp_path)])
    snapshot = gather(config, mid_sweep)
    eta = snapshot.eta
    # ok proxies took 10 s; one job runs now (no local Snakemake log says its cores).
    assert (eta["proxy_seconds"], eta["proxy_slots"], eta["final_slots"]) == (10.0, 1, 1)
    final = 10.0 * flops_ratio(config, 257)
    assert final > 10 and eta["final_seconds"] == pytest.approx(final)
    # Round 1 has 20 s (run0007-8), 15 s (run0005 half done + run0006) and 10 s (run0004)
    # left, round 2 two batches of 20 s, then five finals and the optimum's 10 s proxy check.
    assert eta["seconds"] == round(45 + 40 + 5 * final + 10)
    assert eta["runs_left"] == 15
    text = render(snapshot)
    assert f"ETA: ~{round(eta['seconds'] / 60)} min for 15 runs left (an estimate" in text


def test_parallelism_is_what_runs_now_else_what_ran_at_once():
    def run(job, state, end=None, wall=None):
        return Run(job, "proxy", 1, job, state, wall_seconds=wall, finished_at=end)

    # Two batches side by side: 30 s of runs in 15 s.
    history = [run("a", DONE, 10, 10), run("a", DONE, 15, 5), run("b", DONE, 10, 10)]
    assert seen_slots(history, SnakemakeLog()) == 2
    assert seen_slots([*history, run("c", RUNNING)], SnakemakeLog()) == 1
    assert seen_slots(history, SnakemakeLog(nodes=1)) == 1
    assert seen_slots([run("a", PENDING)], SnakemakeLog()) is None


def test_without_snakemake_a_fresh_checkpoint_runs_and_a_stale_log_failed(tmp_path):
    root = tmp_path / "work"
    write(root / "results/checkpoints/proxy/run0001/abc/last.ckpt.partial", "state")
    log = "logs/proxy/round1/run0003-run0004.log"
    write(root / log, "run0003: step 40/80, ...\nKilled\n", NOW - 900)
    found = states(snapshot_of(root, tmp_path))
    assert (found["run0001"], found["run0002"], found["run0003"]) == (RUNNING, PENDING, FAILED)
    assert f"run0003 ({log}): Killed" in render(snapshot_of(root, tmp_path))


def test_a_job_marked_in_progress_without_a_running_snakemake_was_interrupted(mid_sweep, tmp_path):
    (mid_sweep / ".snakemake/locks/0.output.lock").unlink()
    os.utime(mid_sweep / "logs/proxy/round1/run0005-run0006.log", (NOW - 900, NOW - 900))
    os.utime(mid_sweep / "results/checkpoints/proxy/run0005/9610485612f3b8a9/last.ckpt", (1, 1))
    snapshot = snapshot_of(mid_sweep, tmp_path)
    run = next(r for r in snapshot.runs if r.name == "run0005")
    assert run.state == FAILED and run.reason.startswith("interrupted")
    assert not snapshot.snakemake_running


def test_small_stage_failures_come_from_the_snakemake_log(mid_sweep, tmp_path):
    write(mid_sweep / "logs/regression/gp.log", "ValueError: need at least 2 runs with status ok\n")
    write(
        mid_sweep / ".snakemake/log/2026-12-01T034841.186005.snakemake.log",
        "[Tue Dec  1 03:46:55 2026]\nError in rule fit:\n    message: None\n    jobid: 14\n"
        "    input: results/proxy/runs.parquet\n"
        "    output: results/regression/gp/model.joblib, results/regression/gp/model.json\n"
        "    log: logs/regression/gp.log (check log file(s) for error details)\n    shell:\n"
        "        regmix fit ...\n        (command exited with non-zero exit code)\n",
    )
    snapshot = snapshot_of(mid_sweep, tmp_path)
    assert next(s for s in snapshot.steps if s.name == "fit").state == FAILED
    assert "rule fit (logs/regression/gp.log): ValueError: need at least 2 runs" in render(snapshot)


def test_a_kept_slurm_log_tells_why_a_job_failed_before_writing_its_own(mid_sweep, tmp_path):
    cancelled = (
        "slurmstepd: error: *** JOB 4242 ON n1 CANCELLED AT 2026-12-01T03:00 DUE TO TIME LIMIT ***"
    )
    write(mid_sweep / ".snakemake/slurm_logs/rule_train_final/prior/4242.log", cancelled + "\n")
    snapshot = snapshot_of(mid_sweep, tmp_path)
    prior = next(r for r in snapshot.runs if r.stage == "final" and r.name == "prior")
    assert (prior.state, prior.reason) == (FAILED, cancelled)


def test_eta_is_unknown_until_a_proxy_has_finished(tmp_path):
    root = tmp_path / "work"
    hold_locks(root)
    mark_in_progress(root, "results/proxy/batches/round1/run0001-run0002.parquet", NOW - 10)
    write(root / "logs/proxy/round1/run0001-run0002.log", "", NOW)
    text = render(snapshot_of(root, tmp_path))
    assert "ETA: unknown, 18 runs left (no proxy run has finished yet)" in text


def test_status_on_an_empty_folder_says_nothing_has_run(tmp_path, capsys):
    assert main(["status", "--directory", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Nothing has run here yet" in out
    assert "proxy round 1: 32, proxy round 2: 16, proxy round 3: 15" in out  # the default's plan


def test_status_json_holds_the_counts(mid_sweep, tmp_path, capsys):
    args = ["status", "-d", str(mid_sweep), "--configfile", str(config_file(tmp_path)), "--json"]
    assert main(args) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert snapshot["stages"]["proxy round 1"]["failed"] == 1
    assert snapshot["tokens_per_s"]["proxy"]["median"] == 20000.0


def test_status_of_a_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert main(["status", "-d", str(tmp_path / "nowhere")]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"regmix: error: --directory {tmp_path / 'nowhere'}: no such folder"
    )


# --- against Snakemake itself ---------------------------------------------------------------

HOLDING_RULE = """
rule train_proxy:
    output: "results/proxy/batches/round1/run0001-run0002.parquet"
    log: "logs/proxy/round1/run0001-run0002.log"
    shell: "echo started > {log}; while [ ! -e release ]; do sleep 0.1; done; touch {output}"
"""


def test_a_job_snakemake_is_running_shows_as_running(tmp_path):
    """Snakemake's own in-progress mark and locks, not fabricated ones."""
    root = tmp_path / "work"
    root.mkdir()
    (root / "Snakefile").write_text(HOLDING_RULE)
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "--directory", str(root)]
    job = subprocess.Popen(
        command, cwd=root, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 120
        while not (root / "logs/proxy/round1/run0001-run0002.log").is_file():
            assert job.poll() is None and time.time() < deadline, "snakemake did not start the job"
            time.sleep(0.2)
        planned = {"mixtures": {"rounds": [2]}, "proxy": {"proxies_per_job": 2}}
        snapshot = snapshot_of(root, tmp_path, planned)
        assert snapshot.snakemake_running
        assert (states(snapshot)["run0001"], states(snapshot)["run0002"]) == (RUNNING, PENDING)
    finally:
        (root / "release").touch()
        job.wait(timeout=60)
    assert job.returncode == 0
    assert not snapshot_of(root, tmp_path, planned).snakemake_running


@pytest.mark.workflow
def test_after_the_tiny_workflow_every_run_is_done(tmp_path):
    result = snakemake(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    tiny = str(REPO / "tests/config/tiny.yaml")
    command = [
        sys.executable,
        "-m",
        "regmix.cli",
        "status",
        "-d",
        str(tmp_path),
        "--configfile",
        tiny,
    ]
    status = subprocess.run(command, capture_output=True, text=True, env=environment(), check=False)
    assert status.returncode == 0, status.stderr
    shown = subprocess.run([*command, "--json"], capture_output=True, text=True, env=environment())
    stages = json.loads(shown.stdout)["stages"]

    def done(n):
        return {"done": n, "running": 0, "queued": 0, "failed": 0, "pending": 0}

    assert stages["proxy round 1"] == done(4)  # tiny.yaml: rounds [4, 2]
    assert stages["proxy round 2"] == done(2)
    assert stages["optimum proxy check"] == done(1)
    assert stages["final models"] == done(6)
    assert "failed:" not in status.stdout
    assert all(counts["pending"] == counts["failed"] == 0 for counts in stages.values())
    assert "ETA: done" in status.stdout


def test_a_local_snakemake_runs_as_many_jobs_as_its_cores_allow(mid_sweep, tmp_path):
    write(
        mid_sweep / ".snakemake/log/2026-12-01T034841.186005.snakemake.log",
        "Building DAG of jobs...\nUsing shell: /usr/bin/bash\nProvided cores: 4\n"
        "Rules claiming more threads will be scaled down.\n",
    )
    values = {**SWEEP, "final": {"heldout": 1, "resources": {"threads": 2}}}
    eta = snapshot_of(mid_sweep, tmp_path, values).eta
    assert (eta["proxy_slots"], eta["final_slots"]) == (4, 2)


def test_the_reason_is_the_last_error_line_not_trailing_noise():
    lines = [
        "run0004: step 40/80, 163,840 tokens, 21,974 tokens/s, mean validation loss 2.7931",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        "[rank0]:[W1201 03:46:55] ProcessGroupNCCL.cpp:1496] destroy_process_group() not called",
    ]
    assert failure_reason(lines) == lines[1]
    assert failure_reason(lines[:1]) == lines[0]  # no error line: the last line
