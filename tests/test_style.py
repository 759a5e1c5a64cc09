"""The project's own checks: ruff, snakefmt and Snakemake's linter, run by the test command."""

import subprocess
import sys

from workflow import REPO, TINY


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)


def test_ruff_finds_nothing():
    result = _run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout


def test_code_is_ruff_formatted():
    result = _run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout


def test_snakemake_lint_is_clean():
    result = _run(sys.executable, "-m", "snakemake", "--lint", "--configfile", str(TINY))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_snakemake_files_are_snakefmt_formatted():
    result = _run(sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules")
    assert result.returncode == 0, result.stdout + result.stderr
