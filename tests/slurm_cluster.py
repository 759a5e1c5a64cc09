"""A real single-node SLURM cluster on localhost, for tests: Debian's packages, our own config.

`slurm_cluster()` installs `slurmctld slurmd slurm-client munge` when they are missing, writes
a slurm.conf (and a gres.conf with fake GPUs: character devices that SLURM hands out and
exports as `CUDA_VISIBLE_DEVICES`, though no CUDA sits behind them) into a folder of its own,
starts munged → slurmctld → slurmd, waits for the node to be idle and checks `srun true`. On
exit it cancels the cluster's jobs and stops the daemons it started, found by their pid files,
also when the test failed. Every wait is bounded.

The cluster uses its own ports and folder. Its slurm.conf is also linked from the default
place, /etc/slurm/slurm.conf, because the SLURM executor's job step clears `SLURM_*` variables
(`SLURM_CONF` too) before its inner `srun`; a machine that already has a slurm.conf of its own
is left alone and the test skipped. Where it cannot run (not root, no apt-get, no mirror) it
skips the test with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
PROGRAMS = ["slurmctld", "slurmd", "sbatch", "srun", "sinfo", "squeue", "munged"]
HOME = Path("/tmp/regmix-slurm")
"""Fixed, so that a run killed before its clean-up is cleaned up by the next one."""
PARTITION = "regmix"
MUNGE_RUN = Path("/run/munge")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")


@dataclass
class Cluster:
    home: Path
    partition: str
    gpus: int
    started_s: float
    """Seconds from the call to an idle node that ran `srun true` (packages included)."""

    @property
    def conf(self) -> Path:
        return self.home / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["timeout", "-k", "5", str(timeout), *command],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller remembers (finished ones stay MinJobAge = 600 s)."""
        fields = {"id": "%i", "name": "%j", "comment": "%k", "state": "%T"}
        out = self.run("squeue", "-h", "--states=all", "-o", "|".join(fields.values())).stdout
        return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines()]


@contextmanager
def slurm_cluster(gpus: int = 2, timeout_s: float = 60) -> Iterator[Cluster]:
    started = time.monotonic()
    _require_root_and_packages()
    _require_free_system_conf()
    stop_leftovers()
    shutil.rmtree(HOME, ignore_errors=True)
    HOME.mkdir(parents=True)
    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        write_config(HOME, gpus)
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(HOME / "slurm.conf")
        start_munge()
        _start(["slurmctld", "-c", "-f", str(HOME / "slurm.conf")], HOME / "slurmctld.pid")
        _start(["slurmd", "-f", str(HOME / "slurm.conf")], HOME / "slurmd.pid")
        cluster = Cluster(HOME, PARTITION, gpus, 0.0)
        _wait_idle(cluster, timeout_s)
        check = cluster.run("srun", "-N1", "-n1", "true", timeout=timeout_s)
        assert check.returncode == 0, f"srun true failed: {check.stderr}{_logs(HOME)}"
        cluster.started_s = time.monotonic() - started
        yield cluster
    finally:
        try:
            stop_cluster(HOME)
        finally:
            signal.signal(signal.SIGTERM, previous)


def _interrupt_on_sigterm(signum, frame):
    """A CI timeout sends SIGTERM: stop as on Ctrl-C, so that pytest ends the session and the
    clean-up still runs (by default SIGTERM ends Python without running it)."""
    raise KeyboardInterrupt(f"signal {signum}")


# --- installing ---------------------------------------------------------------------------


def _require_root_and_packages() -> None:
    missing = [p for p in PROGRAMS if not _which(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.skip(f"SLURM test needs root to install and start Slurm (missing: {missing})")
    if not shutil.which("apt-get"):
        pytest.skip(f"SLURM test needs apt-get to install {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    result = _bounded(install, 300, env)
    if result.returncode != 0:  # stale package lists: refresh once
        _bounded(["apt-get", "update", "-q"], 300, env)
        result = _bounded(install, 300, env)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"cannot install {' '.join(PACKAGES)} with apt-get: {reason}")


def _require_free_system_conf() -> None:
    """/etc/slurm/slurm.conf must be absent or our own link (left by a killed run)."""
    ours = SYSTEM_CONF.is_symlink() and SYSTEM_CONF.readlink() == HOME / "slurm.conf"
    if ours:
        SYSTEM_CONF.unlink()
    elif SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
        pytest.skip(f"{SYSTEM_CONF} exists: this machine has a SLURM setup the test must not touch")


def _which(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


def _bounded(command: list[str], seconds: float, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["timeout", "-k", "10", str(seconds), *command],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


# --- configuring ----------------------------------------------------------------------------


def write_config(home: Path, gpus: int) -> None:
    """slurm.conf + gres.conf for one node on 127.0.0.1 with `gpus` fake GPUs.

    The node advertises 8 CPUs whatever the machine has (config_overrides), so that a few
    small jobs run side by side on a 2-core CI machine, as on a real node.
    """
    host = socket.gethostname().split(".")[0]
    memory = int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20 * 0.75)
    for d in ("state", "spool"):
        (home / d).mkdir()
    devices = []
    for i in range(gpus):
        device = home / f"gpu{i}"
        subprocess.run(["mknod", str(device), "c", "1", "3"], check=True)  # like /dev/null
        devices.append(device)
    gres = f" Gres=gpu:{gpus}" if gpus else ""
    settings = {
        "ClusterName": "regmix",
        "SlurmctldHost": f"{host}(127.0.0.1)",
        "SlurmctldPort": "16817",
        "SlurmdPort": "16818",
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "AuthType": "auth/munge",
        "StateSaveLocation": home / "state",
        "SlurmdSpoolDir": home / "spool",
        "SlurmctldPidFile": home / "slurmctld.pid",
        "SlurmdPidFile": home / "slurmd.pid",
        "SlurmctldLogFile": home / "slurmctld.log",
        "SlurmdLogFile": home / "slurmd.log",
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core_Memory",
        "AccountingStorageType": "accounting_storage/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "JobCompType": "jobcomp/none",
        "SlurmdParameters": "config_overrides",
        "DefMemPerCPU": "1024",
        "EnforcePartLimits": "ALL",
        "MinJobAge": "600",
        "ReturnToService": "2",
        "MpiDefault": "none",
        "GresTypes": "gpu",
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    lines.append(
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs=8 RealMemory={memory}{gres} State=UNKNOWN"
    )
    lines.append(f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
    (home / "slurm.conf").write_text("\n".join(lines) + "\n")
    files = ",".join(str(d) for d in devices)
    (home / "gres.conf").write_text(f"NodeName={host} Name=gpu File={files}\n" if gpus else "")


# --- starting and stopping ----------------------------------------------------------------


def start_munge() -> None:
    """Reuse a running munged (it may serve another SLURM), else start one and note its pid."""
    if _bounded(["sh", "-c", "munge -n | unmunge"], 10).returncode == 0:
        return
    key = Path("/etc/munge/munge.key")
    if not key.is_file():
        _bounded(["mungekey", "--create", "--force"], 30)
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    MUNGE_RUN.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_RUN, "munge", "munge")
    started = _bounded(["runuser", "-u", "munge", "--", _which("munged")], 30)
    assert started.returncode == 0, f"munged did not start: {started.stderr}"
    shutil.copy(MUNGE_RUN / "munged.pid", HOME / "munged.pid")
    deadline = time.monotonic() + 10
    while _bounded(["sh", "-c", "munge -n | unmunge"], 10).returncode != 0:
        assert time.monotonic() < deadline, "munged does not answer"
        time.sleep(0.1)


def _start(command: list[str], pid_file: Path) -> None:
    """Start a daemon (it forks into the background) and wait for its pid file."""
    result = _bounded([_which(command[0]), *command[1:]], 30)
    assert result.returncode == 0, f"{command[0]} did not start: {result.stderr}{_logs(HOME)}"
    deadline = time.monotonic() + 10
    while not pid_file.is_file():
        assert time.monotonic() < deadline, f"{command[0]} wrote no pid file{_logs(HOME)}"
        time.sleep(0.05)


def _wait_idle(cluster: Cluster, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        state = cluster.run("sinfo", "-h", "-o", "%t", timeout=10).stdout.strip()
        if state == "idle":
            return
        time.sleep(0.2)
    raise AssertionError(f"node not idle after {timeout_s} s (state {state!r}){_logs(HOME)}")


def stop_cluster(home: Path) -> None:
    """Cancel the cluster's jobs, then stop slurmd, slurmctld and our munged, by pid file."""
    if (home / "slurmctld.pid").is_file():
        env = {**os.environ, "SLURM_CONF": str(home / "slurm.conf")}
        ids = _bounded(["squeue", "-h", "-o", "%i"], 10, env).stdout.split()
        if ids:
            _bounded(["scancel", *ids], 10, env)
            deadline = time.monotonic() + 15
            while (
                time.monotonic() < deadline
                and _bounded(
                    ["squeue", "-h", "-t", "RUNNING,COMPLETING", "-o", "%i"], 10, env
                ).stdout.strip()
            ):
                time.sleep(0.2)
    for daemon in ("slurmd", "slurmctld", "munged"):
        _stop(home / f"{daemon}.pid", daemon)
    if SYSTEM_CONF.is_symlink() and SYSTEM_CONF.readlink() == home / "slurm.conf":
        SYSTEM_CONF.unlink()


def stop_leftovers() -> None:
    """Daemons of an earlier run that was killed before its clean-up."""
    if HOME.is_dir():
        stop_cluster(HOME)


def _stop(pid_file: Path, name: str) -> None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if not _is_process(pid, name):
        pid_file.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _is_process(pid, name):
        if time.monotonic() > deadline:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    pid_file.unlink(missing_ok=True)


def _is_process(pid: int, name: str) -> bool:
    """`pid` runs `name` (a pid file may outlive its daemon, and pids are reused)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    zombie = stat.rsplit(")", 1)[1].split()[0] == "Z"
    return not zombie and os.path.basename(command.decode()) == name


def _logs(home: Path) -> str:
    tails = []
    for log in ("slurmctld.log", "slurmd.log"):
        path = home / log
        if path.is_file():
            tails.append(f"\n--- {log} ---\n" + "\n".join(path.read_text().splitlines()[-15:]))
    return "".join(tails)
