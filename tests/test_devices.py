"""The GPU-id lease with fake device lists: no GPU is needed, only ids and processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from regmix.errors import RegmixError
from regmix.training.devices import (
    VISIBLE,
    Lease,
    gpu_lease,
    holder,
    lightning_plugins,
    srun_prefix,
    visible_gpus,
)

GPUS = ["0", "1", "2", "3"]


@pytest.fixture(autouse=True)
def local_machine(monkeypatch, tmp_path):
    """Outside SLURM, no CUDA_VISIBLE_DEVICES, and a lease file of the test's own."""
    for name in [n for n in os.environ if n.startswith(("SLURM_", "REGMIX_GPU"))] + [VISIBLE]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REGMIX_GPU_LEASE", str(tmp_path / "lease.json"))


def test_zero_gpus_changes_nothing(tmp_path):
    with gpu_lease(0, GPUS) as ids:
        assert ids == []
        assert VISIBLE not in os.environ
    assert not (tmp_path / "lease.json").exists()


def test_lease_sets_visible_devices_and_restores_them_after():
    with gpu_lease(2, GPUS) as ids:
        assert ids == ["0", "1"]
        assert os.environ[VISIBLE] == "0,1"
    assert VISIBLE not in os.environ


def test_two_leases_at_once_get_different_ids():
    with gpu_lease(1, GPUS) as first, gpu_lease(2, GPUS) as second:
        assert first == ["0"]
        assert second == ["1", "2"]
    with gpu_lease(4, GPUS) as again:
        assert again == GPUS


def test_ids_are_free_again_after_a_failed_job(tmp_path):
    with pytest.raises(RuntimeError), gpu_lease(4, GPUS):
        raise RuntimeError("training crashed")
    assert Lease(tmp_path / "lease.json").held() == {}


def test_asking_more_gpus_than_visible_names_the_counts():
    with (
        pytest.raises(RegmixError, match=r"asks for 5 GPU\(s\) but 4 are visible"),
        gpu_lease(5, GPUS),
    ):
        pass


def test_pool_is_the_visible_devices_when_the_user_restricted_them(monkeypatch):
    monkeypatch.setenv(VISIBLE, "3,5")
    assert visible_gpus() == ["3", "5"]
    with gpu_lease(1) as ids:
        assert ids == ["3"]
        assert os.environ[VISIBLE] == "3"
    assert os.environ[VISIBLE] == "3,5"


def test_no_visible_gpu_is_an_error_not_a_silent_cpu_run(monkeypatch):
    monkeypatch.setenv(VISIBLE, "")
    with pytest.raises(RegmixError, match=r"asks for 1 GPU\(s\) but 0 are visible"), gpu_lease(1):
        pass


def test_slurm_allocation_is_used_as_given_without_a_lease(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.setenv(VISIBLE, "2,6")
    with gpu_lease(2) as ids:
        assert ids == ["2", "6"]
        assert os.environ[VISIBLE] == "2,6"
    assert not (tmp_path / "lease.json").exists()


def test_jobs_sharing_a_slurm_allocation_lease_within_it(monkeypatch, tmp_path):
    monkeypatch.delenv("REGMIX_GPU_LEASE")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    with gpu_lease(1, ["0", "1"]) as first, gpu_lease(1, ["0", "1"]) as second:
        assert (first, second) == (["0"], ["1"])
        assert (tmp_path / "regmix" / "gpu-lease-slurm-17.json").is_file()


def test_all_ids_held_waits_then_fails_naming_the_holder():
    with gpu_lease(4, GPUS):
        started = time.monotonic()
        held = rf"no 1 free GPU\(s\).*0 \(pid {os.getpid()}\)"
        with pytest.raises(RegmixError, match=held), gpu_lease(1, GPUS, wait_s=0.3):
            pass
        assert time.monotonic() - started >= 0.3


def test_lease_of_a_reused_pid_is_reclaimed(tmp_path):
    """Same pid, other start time: the holder ended and the pid went to a new process."""
    stale = {**holder(os.getpid()), "start": -1}
    (tmp_path / "lease.json").write_text(json.dumps(dict.fromkeys(GPUS, stale)))
    with gpu_lease(4, GPUS, wait_s=0) as ids:
        assert ids == GPUS


def test_damaged_lease_file_is_a_one_line_error_naming_it(tmp_path):
    (tmp_path / "lease.json").write_text("{not json")
    with (
        pytest.raises(RegmixError, match=r"lease\.json: not a GPU lease table"),
        gpu_lease(1, GPUS),
    ):
        pass


HOLD = textwrap.dedent(
    """
    import sys, time
    from regmix.training.devices import gpu_lease
    count, hold_s, devices = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3].split(",")
    devices = None if devices == ["visible"] else devices
    with gpu_lease(count, devices, wait_s=60) as ids:
        print(",".join(ids), time.time(), flush=True)
        time.sleep(hold_s)
        print(time.time(), flush=True)
    """
)


def _holder_process(count: int, hold_s: float, devices: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-c", HOLD, str(count), str(hold_s), ",".join(devices)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def test_concurrent_jobs_never_hold_the_same_id_at_once():
    """Six processes share two ids: each id is held by one process at a time, both are used."""
    jobs = [_holder_process(1, 0.3, ["0", "1"]) for _ in range(6)]
    spans = []
    for job in jobs:
        out, _ = job.communicate(timeout=60)
        assert job.returncode == 0
        first, last = out.split("\n")[:2]
        gpu, start = first.split()
        spans.append((gpu, float(start), float(last)))
    assert {gpu for gpu, _, _ in spans} == {"0", "1"}
    for i, (gpu, start, end) in enumerate(spans):
        for other, other_start, other_end in spans[i + 1 :]:
            if other == gpu:
                assert end <= other_start or other_end <= start, spans


def test_processes_started_by_the_holder_use_its_gpus_without_leasing_again():
    """Lightning's DDP launcher re-runs the command once per extra rank: no second lease."""
    with gpu_lease(2, GPUS) as ids:
        child = _holder_process(2, 0, ["visible"])  # would wait 60 s for a second lease
        out, _ = child.communicate(timeout=30)
        assert child.returncode == 0
        assert out.split()[0] == ",".join(ids) == "0,1"


def test_ids_of_a_killed_job_are_reclaimed():
    job = _holder_process(2, 60, ["0", "1"])
    assert job.stdout.readline().split()[0] == "0,1"
    job.kill()
    job.wait()
    with gpu_lease(2, ["0", "1"], wait_s=0) as ids:
        assert ids == ["0", "1"]


@pytest.mark.filterwarnings("ignore:The `srun` command is available")
def test_lightning_runs_without_auto_requeue_under_srun(monkeypatch):
    assert lightning_plugins() == []
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.setenv("SLURM_JOB_NAME", "regmix")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    (environment,) = lightning_plugins()
    assert environment.auto_requeue is False


def test_multi_device_job_in_a_slurm_batch_script_starts_one_task_per_device(monkeypatch):
    assert srun_prefix(4, 8) is None  # locally Lightning starts its own processes
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    assert srun_prefix(1, 8) is None
    prefix = srun_prefix(4, 8)
    assert prefix[0] == "srun"
    assert "--ntasks-per-node=4" in prefix and "--cpus-per-task=8" in prefix


def test_task_started_by_srun_trains_instead_of_relaunching(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    assert srun_prefix(4, 8) is None


def test_job_step_with_one_task_for_several_devices_names_the_missing_resources(monkeypatch):
    """Without `mpi`, the SLURM executor wraps the rule in `srun -n1`: Lightning would hang."""
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "1")
    with pytest.raises(RegmixError, match=r"mpi='srun', tasks_per_node=4"):
        srun_prefix(4, 8)
