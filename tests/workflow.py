"""Run the Snakemake workflow in a scratch folder, as a user would from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "config" / "tiny.yaml"


def snakemake_command(workdir: Path, config: Path, snakefile: Path, *args: str) -> list[str]:
    return [
        *(sys.executable, "-m", "snakemake", "--snakefile", str(snakefile)),
        *("--directory", str(workdir), "--configfile", str(config), "--cores", "2"),
        *args,
    ]


def environment() -> dict[str, str]:
    """This interpreter's scripts (the `regmix` the rules call) first on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def snakemake(
    workdir: Path,
    *args: str,
    config: Path = TINY,
    snakefile: Path = REPO / "Snakefile",
    timeout: int = 900,
) -> subprocess.CompletedProcess:
    """`snakemake` on a Snakefile (the repo's) with workdir `workdir` and the given config."""
    return subprocess.run(
        snakemake_command(workdir, config, snakefile, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(),
        check=False,
    )
