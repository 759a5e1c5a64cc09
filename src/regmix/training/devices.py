"""The GPUs a training job runs on, and how it gets them.

On a SLURM cluster the scheduler hands each job its GPUs and sets `CUDA_VISIBLE_DEVICES`.
Local Snakemake only counts: `--resources gpu=N` caps how many GPU jobs run at once but
tells no job *which* GPU is free, so two jobs would both train on GPU 0. `gpu_lease` fills
that gap: a job takes k free ids from a lease file shared by the user's jobs on the machine
(guarded by a file lock), sets `CUDA_VISIBLE_DEVICES` to them and gives them back when it
ends. A job that crashed or was killed cannot give them back, so each entry records its
holder's pid and start time and an entry whose holder is gone is free again.

Under SLURM two more things keep Lightning in step with Snakemake: `lightning_plugins` turns
off Lightning's auto-requeue (it would resubmit a job behind Snakemake's back, while
Snakemake's `retries` decide what runs again), and `relaunch_under_srun` starts one process
per device with `srun`, the way Lightning expects to find a multi-GPU job on SLURM.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from regmix.errors import RegmixError
from regmix.files import write_json

VISIBLE = "CUDA_VISIBLE_DEVICES"
LEASE_FILE = "REGMIX_GPU_LEASE"
"""Environment variable naming the lease file, for setups where the default place is wrong."""
LEASED_BY = "REGMIX_GPU_LEASED_BY"
"""Set to the leasing pid: processes it starts (Lightning's DDP ranks) use its GPUs as given."""

_POLL_S = 0.2


def under_slurm() -> bool:
    return "SLURM_JOB_ID" in os.environ


def visible_gpus() -> list[str]:
    """The GPU ids this process may use: `CUDA_VISIBLE_DEVICES` if set, else every GPU present.

    Counting the driver's entries in /proc avoids importing torch or initialising CUDA (which
    would fix the visible devices before the lease could choose them).
    """
    if VISIBLE in os.environ:
        return [d.strip() for d in os.environ[VISIBLE].split(",") if d.strip()]
    driver = Path("/proc/driver/nvidia/gpus")
    if driver.is_dir():
        return [str(i) for i in range(sum(1 for _ in driver.iterdir()))]
    if shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        return [str(i) for i, _ in enumerate(listed.stdout.splitlines())]
    return []


def default_lease_path() -> Path:
    """Per user and machine; inside a SLURM job (salloc + local Snakemake), per job.

    The ids a SLURM job sees belong to its allocation, so two jobs must not share a table.
    """
    if os.environ.get(LEASE_FILE):
        return Path(os.environ[LEASE_FILE])
    if os.environ.get("XDG_RUNTIME_DIR"):
        folder = Path(os.environ["XDG_RUNTIME_DIR"]) / "regmix"
    else:
        folder = Path(tempfile.gettempdir()) / f"regmix-{os.getuid()}"
    scope = f"slurm-{os.environ['SLURM_JOB_ID']}" if under_slurm() else "local"
    return folder / f"gpu-lease-{scope}.json"


@contextmanager
def gpu_lease(
    count: int,
    devices: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    wait_s: float = 600.0,
) -> Iterator[list[str]]:
    """Hold `count` GPUs for the block: sets `CUDA_VISIBLE_DEVICES` and yields the ids.

    Call it before anything initialises CUDA. `devices` is the pool to choose from (default:
    `visible_gpus()`); `path` the lease file (default: `default_lease_path()`). With 0 GPUs it
    does nothing. In a SLURM job that was given exactly its GPUs, and in a process started by
    the one holding the lease (Lightning's DDP ranks), the ids are used as they are. When
    every id is held, it waits up to `wait_s` seconds (another workflow may be finishing) and
    then fails naming the holders.
    """
    if count < 0:
        raise RegmixError(f"gpus: expected a count >= 0, got {count}")
    if count == 0:
        yield []
        return
    pool = list(visible_gpus() if devices is None else devices)
    where = f"{VISIBLE}={os.environ[VISIBLE]!r}" if VISIBLE in os.environ else "on this machine"
    if count > len(pool):
        raise RegmixError(
            f"gpus: the job asks for {count} GPU(s) but {len(pool)} are visible {where}"
        )
    inherited = os.environ.get(LEASED_BY, str(os.getpid())) != str(os.getpid())
    if count == len(pool) and (under_slurm() or inherited):
        yield pool
        return
    lease = Lease(Path(path) if path is not None else default_lease_path())
    ids = lease.acquire(pool, count, wait_s)
    before = {name: os.environ.get(name) for name in (VISIBLE, LEASED_BY)}
    os.environ.update({VISIBLE: ",".join(ids), LEASED_BY: str(os.getpid())})
    try:
        yield ids
    finally:
        lease.release(ids)
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Lease:
    """A JSON table `{gpu id: {pid, start}}` beside a lock file that serialises its updates.

    The lock sits on its own file because the table is replaced on every write, and a lock
    held on a replaced file guards nothing.
    """

    def __init__(self, path: Path):
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.me = holder(os.getpid())

    def acquire(self, pool: Sequence[str], count: int, wait_s: float) -> list[str]:
        deadline = time.monotonic() + wait_s
        while True:
            with self._locked():
                table = self._live_entries()
                free = [d for d in pool if d not in table]
                if len(free) >= count:
                    ids = free[:count]
                    table.update(dict.fromkeys(ids, self.me))
                    write_json(table, self.path)
                    return ids
            if time.monotonic() >= deadline:
                held = ", ".join(f"{d} (pid {table[d]['pid']})" for d in pool if d in table)
                raise RegmixError(
                    f"{self.path}: no {count} free GPU(s) after {wait_s:g} s; held: {held} "
                    "(another workflow on this machine? lower --resources gpu)"
                )
            time.sleep(_POLL_S)

    def release(self, ids: Sequence[str]) -> None:
        with self._locked():
            table = self._live_entries()
            for d in ids:
                if table.get(d) == self.me:
                    del table[d]
            write_json(table, self.path)

    def held(self) -> dict[str, dict]:
        """The live entries, for inspection: who holds which id right now."""
        with self._locked():
            return self._live_entries()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _live_entries(self) -> dict[str, dict]:
        """The table without the entries of processes that have ended (killed jobs)."""
        if not self.path.is_file():
            return {}
        try:
            table = json.loads(self.path.read_text() or "{}")
        except json.JSONDecodeError as exc:
            raise RegmixError(f"{self.path}: not a GPU lease table ({exc}); delete it") from exc
        return {d: h for d, h in table.items() if is_alive(h)}


def holder(pid: int) -> dict:
    """A process's identity: its pid and start time, since pids are reused after it ends."""
    return {"pid": pid, "start": _start_time(pid)}


def is_alive(entry: dict) -> bool:
    pid = entry.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        pass
    return entry.get("start") is None or entry.get("start") == _start_time(pid)


def _start_time(pid: int) -> int | None:
    """Clock ticks since boot at which `pid` started (field 22 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def srun_prefix(tasks: int, cpus_per_task: int) -> list[str] | None:
    """The `srun` that starts `tasks` copies of this process as Lightning expects under SLURM.

    Lightning trains on several GPUs under SLURM when `srun` started one process per GPU
    (SLURM_PROCID, SLURM_NTASKS_PER_NODE = devices). The SLURM executor runs a rule with
    `resources: mpi="srun", tasks_per_node=N` directly in the batch script (not in a job
    step), so the process finds itself there and must start the N tasks itself; locally, or
    once started by srun, there is nothing to do (None). A job step with another task count
    means the rule lacks those resources: Lightning would wait for ranks that never come.
    """
    if tasks <= 1 or not under_slurm():
        return None
    if "SLURM_STEP_ID" not in os.environ:  # the batch script: start the tasks
        return [
            "srun",
            f"--ntasks-per-node={tasks}",
            f"--cpus-per-task={cpus_per_task}",
            "--kill-on-bad-exit=1",
        ]
    if os.environ.get("SLURM_NTASKS_PER_NODE") == str(tasks):
        return None
    raise RegmixError(
        f"SLURM job {os.environ['SLURM_JOB_ID']}: training on {tasks} devices needs one task per "
        f"device; give its rule resources mpi='srun', tasks_per_node={tasks}"
    )


def relaunch_under_srun(tasks: int, cpus_per_task: int) -> None:
    """Replace this process by `srun` running `tasks` copies of the same command, when needed.

    Call it first thing in a multi-device training command (before CUDA or Lightning start);
    it returns only where this process should train: locally, or as one of srun's tasks.
    """
    prefix = srun_prefix(tasks, cpus_per_task)
    if prefix is not None:
        command = [*prefix, sys.executable, *sys.argv]  # argv[0]: the `regmix` script
        os.execvp(command[0], command)


def lightning_plugins() -> list:
    """Plugins for `lightning.Trainer(plugins=...)`: SLURM without Lightning's auto-requeue.

    Under `srun` Lightning picks SLURMEnvironment by itself, with auto-requeue on: on a
    pre-emption signal it would requeue the SLURM job while Snakemake, which owns retries,
    counts it as failed. Outside SLURM this returns no plugins.
    """
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=False)]
