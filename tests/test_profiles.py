"""The shipped Snakemake profiles and `regmix install-profile`, from a checkout and from a wheel."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml
from workflow import REPO, TINY

from regmix.cli import main
from regmix.errors import RegmixError
from regmix.workflow.profiles import available_profiles, install_profile, same_files

PROFILES = REPO / "profiles"


def test_checkout_profiles_are_the_ones_found():
    assert available_profiles() == {"local": PROFILES / "local", "slurm": PROFILES / "slurm"}


def test_slurm_profile_sets_what_a_cluster_run_needs():
    profile = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["rerun-incomplete"] is True
    assert profile["retries"] >= 1 and profile["latency-wait"] >= 30
    assert profile["slurm-no-requeue"] is True
    # grouped proxy jobs run one at a time within a submission, so it holds one job's GPUs
    proxy_rule = (REPO / "rules" / "proxy.smk").read_text()
    [group] = profile["group-components"]
    assert f'"{group}"' in proxy_rule  # the group the proxy rule declares
    assert profile["group-components"][group] > 1
    assert profile["default-resources"]["group_slot"] == profile["resources"]["group_slot"] == 1
    assert profile["set-resource-scopes"] == {"group_slot": "local"}


def test_install_copies_the_profile(tmp_path):
    dest = install_profile("slurm", tmp_path / "slurm")
    assert dest == tmp_path / "slurm"
    assert same_files(PROFILES / "slurm", dest)


def test_reinstalling_an_identical_profile_changes_nothing(tmp_path):
    dest = install_profile("local", tmp_path / "local")
    before = (dest / "config.yaml").stat().st_mtime_ns
    install_profile("local", dest)
    assert (dest / "config.yaml").stat().st_mtime_ns == before


def test_an_edited_profile_is_kept_unless_forced(tmp_path):
    dest = install_profile("slurm", tmp_path / "slurm")
    edited = (dest / "config.yaml").read_text() + "jobs: 7\n"
    (dest / "config.yaml").write_text(edited)
    with pytest.raises(
        RegmixError, match=r"slurm: a different profile is installed there.*--force"
    ):
        install_profile("slurm", dest)
    assert (dest / "config.yaml").read_text() == edited
    (dest / "extra.yaml").write_text("x: 1\n")
    install_profile("slurm", dest, force=True)
    assert same_files(PROFILES / "slurm", dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slurm"]  # no staging left behind


def test_unknown_profile_names_the_available_ones(tmp_path):
    with pytest.raises(RegmixError, match=r"profile 'pbs': no such profile \(available: local, "):
        install_profile("pbs", tmp_path / "pbs")


def test_destination_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "slurm").write_text("not a folder")
    with pytest.raises(RegmixError, match="exists and is not a folder"):
        install_profile("slurm", tmp_path / "slurm")


def test_cli_error_is_one_line(tmp_path, capsys):
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "config.yaml").write_text("jobs: 1\n")
    assert main(["install-profile", "slurm", "--dest", str(tmp_path / "slurm")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("regmix: error: ") and err.count("\n") == 1


def _snakemake_dry_run(*args: str, env=None, cwd=None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    command += ["--configfile", str(TINY), "--dry-run", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=cwd, check=False, timeout=300
    )


def test_literal_profile_name_works_after_install(tmp_path):
    """`snakemake --profile local` from any folder finds the installed copy."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    result = subprocess.run(
        [sys.executable, "-m", "regmix.cli", "install-profile", "local"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    installed = tmp_path / "config" / "snakemake" / "local"
    assert result.stdout.strip().endswith("run: snakemake --profile local")
    # a mark that only the installed copy has: it prints the shell commands
    config = installed / "config.yaml"
    config.write_text(config.read_text().replace("printshellcmds: false", "printshellcmds: true"))
    work = tmp_path / "work"
    work.mkdir()
    run = _snakemake_dry_run("--profile", "local", "--directory", str(work), env=env, cwd=work)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "regmix synth-corpus --out" in run.stdout


@pytest.mark.skipif(
    importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
    reason="snakemake-executor-plugin-slurm not installed (pip install '.[slurm]')",
)
def test_slurm_profile_is_accepted_by_snakemake(tmp_path):
    run = _snakemake_dry_run("--profile", str(PROFILES / "slurm"), "--directory", str(tmp_path))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "group_slot=1" in run.stdout


def test_wheel_carries_the_profiles(tmp_path):
    """A wheel install (no checkout beside it) still finds and installs the profiles."""
    source = tmp_path / "source"
    source.mkdir()
    for part in ("pyproject.toml", "README.md", "src", "profiles"):
        copy = shutil.copytree if (REPO / part).is_dir() else shutil.copy
        copy(REPO / part, source / part)
    shutil.rmtree(source / "src" / "regmix.egg-info", ignore_errors=True)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("regmix-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    shutil.rmtree(source)
    probe = (
        "import regmix, regmix.workflow.profiles as p, sys; "
        f"assert regmix.__file__.startswith({str(site)!r}), regmix.__file__; "
        f"print(p.install_profile('slurm', {str(tmp_path / 'installed')!r}))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert same_files(PROFILES / "slurm", tmp_path / "installed")
