"""What running through SLURM costs: the tiny workflow on a local single-node SLURM vs locally.

Starts the test cluster of tests/slurm_cluster.py (root; installs Debian's Slurm packages when
missing), then prints the cluster start time, the wall time of the tiny-config workflow with
`--profile profiles/slurm` (the test's short status-check settings) and with
`--profile profiles/local`, and the SLURM jobs each run submitted.

    flock /tmp/regmix-cpu.lock python benchmarks/slurm_overhead.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from slurm_cluster import slurm_cluster  # noqa: E402
from test_slurm import TEST_SETTINGS, TINY  # noqa: E402


def timed_run(workdir: Path, env: dict, *args: str) -> float:
    command = [
        *("timeout", "-k", "10", "900", sys.executable, "-m", "snakemake"),
        *("--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)),
        *("--configfile", str(TINY), *args),
    ]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, slurm_cluster(gpus=2) as cluster:
        tmp = Path(tmp)
        print(
            f"cluster start (packages present or installed, daemons, srun true): "
            f"{cluster.started_s:.1f} s"
        )
        before = len(cluster.jobs())
        slurm = timed_run(
            tmp / "slurm", cluster.env, "--profile", str(REPO / "profiles/slurm"), *TEST_SETTINGS
        )
        jobs = len(cluster.jobs()) - before
        local = timed_run(tmp / "local", cluster.env, "--profile", str(REPO / "profiles/local"))
        print(f"tiny workflow through SLURM: {slurm:.1f} s ({jobs} sbatch jobs)")
        print(f"tiny workflow locally:       {local:.1f} s")
        print(f"SLURM overhead per sbatch job: {(slurm - local) / max(jobs, 1):.1f} s")


if __name__ == "__main__":
    import pytest

    try:
        main()
    except pytest.skip.Exception as skipped:  # the harness skips where SLURM cannot run
        raise SystemExit(f"cannot start a SLURM cluster here: {skipped}") from None
