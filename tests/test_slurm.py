"""The tiny workflow end to end on a real single-node SLURM with `--profile profiles/slurm`.

The cluster (tests/slurm_cluster.py) has two fake GPUs, and the run asks for one GPU per proxy
job, so the GPU request path of the profile is exercised as on a GPU cluster; the GPUs are
character devices without CUDA, so training itself runs on the CPU. Test-only settings on top
of the profile: `squeue` for job states (no accounting database here), short status-check
intervals, kept SLURM logs (evidence of where each rule ran).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from slurm_cluster import Cluster, slurm_cluster
from workflow import REPO, TINY

pytestmark = pytest.mark.slurm
pytest.importorskip(
    "snakemake_executor_plugin_slurm", reason="needs snakemake-executor-plugin-slurm: .[slurm]"
)

PROFILE = REPO / "profiles" / "slurm"
TEST_SETTINGS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "6",
    "--seconds-between-status-checks",
    "1",
    "--slurm-keep-successful-logs",
    "--latency-wait",
    "5",
]
ONE_GPU_PER_PROXY = (
    "proxy:\n  proxies_per_job: 2\n  resources: {threads: 1, mem_mb: 1000, runtime: 10, gpu: 1}\n"
)
"""Two batches in round 1 (run0001-run0002, run0003-run0004) to bundle, one in round 2."""
FIRST_ROUND_BATCHES = ("run0001-run0002", "run0003-run0004")
TIMEOUT_S = 600


@dataclass
class Run:
    workdir: Path
    planned: dict[str, int]
    """Jobs per rule that the dry run announced (`all` excluded: it runs on the login node)."""
    result: subprocess.CompletedProcess
    wall_s: float


def snakemake_command(cluster: Cluster, workdir: Path, *args: str) -> tuple[list[str], dict]:
    """`snakemake --profile profiles/slurm` as a user types it, bounded by `timeout -k`, and
    the environment it runs in."""
    gpu_config = workdir.parent / f"{workdir.name}-gpu.yaml"
    gpu_config.write_text(ONE_GPU_PER_PROXY)
    command = [
        *("timeout", "-k", "10", str(TIMEOUT_S)),
        *(sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")),
        *("--directory", str(workdir), "--configfile", str(TINY), str(gpu_config)),
        *("--profile", str(PROFILE), *TEST_SETTINGS, *args),
    ]
    env = {**cluster.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return command, env


def snakemake(cluster: Cluster, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_bounded(*snakemake_command(cluster, workdir, *args))


def slurm_logs(workdir: Path) -> dict[str, str]:
    """SLURM job id → its log, as the executor keeps them."""
    return {p.stem: p.read_text() for p in (workdir / ".snakemake/slurm_logs").rglob("*.log")}


def run_bounded(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run in a session of its own, so that a test interrupted mid-run (Ctrl-C, CI timeout)
    stops Snakemake and its children too, not only the `timeout` wrapper."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=TIMEOUT_S + 30)
    except BaseException:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
            time.sleep(5)  # Snakemake cancels its SLURM jobs on SIGTERM
            os.killpg(process.pid, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def planned_jobs(dry_run: str) -> dict[str, int]:
    """Rule → job count from the dry run's "Job stats" table."""
    table = dry_run.split("Job stats:", 1)[1].split("total", 1)[0]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.MULTILINE))
    return {rule: int(n) for rule, n in counts.items() if rule != "all"}


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    with slurm_cluster(gpus=2) as started:
        yield started


@pytest.fixture(scope="module")
def run(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Run:
    workdir = tmp_path_factory.mktemp("slurm") / "work"
    workdir.mkdir()
    dry = snakemake(cluster, workdir, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    started = time.monotonic()
    result = snakemake(cluster, workdir)
    return Run(workdir, planned_jobs(dry.stdout + dry.stderr), result, time.monotonic() - started)


def test_workflow_finishes_with_every_output_present(run, cluster):
    assert run.result.returncode == 0, run.result.stderr[-4000:]
    assert "train_proxy" in " ".join(run.planned) or {"prepare", "sample_mixtures"} <= set(
        run.planned
    )
    summary = snakemake(cluster, run.workdir, "--summary")
    assert summary.returncode == 0, summary.stderr[-3000:]
    rows = [line.split("\t") for line in summary.stdout.splitlines()[1:] if "\t" in line]
    assert rows, summary.stdout
    assert {rule for _, _, rule, *_ in rows} >= set(run.planned)
    missing = [row[0] for row in rows if row[4] == "missing" or not (run.workdir / row[0]).exists()]
    assert not missing, missing


def test_every_rule_ran_inside_a_completed_slurm_job(run, cluster):
    """Each planned job is a SLURM job (or part of one), and its SLURM log shows the rule."""
    assert run.result.returncode == 0, run.result.stderr[-4000:]
    jobs = [j for j in cluster.jobs() if j["comment"].startswith("rule_")]
    assert jobs and all(j["state"] == "COMPLETED" for j in jobs), jobs
    logs = slurm_logs(run.workdir)
    assert {j["id"] for j in jobs} <= set(logs)
    for rule, count in run.planned.items():
        ran_in = [j for j in jobs if re.search(rf"(rule|checkpoint) {rule}:", logs[j["id"]])]
        assert ran_in, f"rule {rule} is in no SLURM job's log"
        if not ran_in[0]["comment"].startswith("rule_proxy-round"):  # not bundled: a job each
            assert len(ran_in) == count, (rule, ran_in)


def test_a_rounds_proxy_batches_share_one_submission_holding_one_gpu(run, cluster):
    """Grouping bundles round 1's proxy batches into one sbatch that runs them in turn on one
    GPU; round 2's batch is a submission of its own, since it needs round 1's runs."""
    assert run.result.returncode == 0, run.result.stderr[-4000:]
    assert run.planned["train_proxy"] == 3
    logs = slurm_logs(run.workdir)
    bundles = [j for j in cluster.jobs() if j["comment"].startswith("rule_proxy-round")]
    (first,) = [j for j in bundles if f"batch={FIRST_ROUND_BATCHES[0]}" in logs[j["id"]]]
    assert f"batch={FIRST_ROUND_BATCHES[1]}" in logs[first["id"]]
    assert "batch=run0005-run0006" not in logs[first["id"]]
    details = cluster.run("scontrol", "show", "job", first["id"]).stdout
    assert re.search(r"TresPerJob=gres[:/]gpu[:=]1\b", details), details


def test_rerun_after_completion_has_nothing_to_do(run, cluster):
    assert run.result.returncode == 0, run.result.stderr[-4000:]
    again = snakemake(cluster, run.workdir, "--dry-run")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_sweep_stopped_after_round_one_resumes_without_training_it_again(cluster, tmp_path):
    """Stop Snakemake once round 1 is trained (SIGTERM: it cancels its SLURM jobs); the next
    invocation proposes and trains round 2 and finishes, re-using round 1 as it is."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    target = "results/proxy/runs.parquet"
    command, env = snakemake_command(cluster, workdir, target)
    first_log = tmp_path / "first.log"
    with first_log.open("w") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    round_one = [workdir / f"results/proxy/batches/round1/{b}.parquet" for b in FIRST_ROUND_BATCHES]
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not all(p.is_file() for p in round_one):
            assert process.poll() is None, "the workflow ended before round 1 was trained"
            assert time.monotonic() < deadline, f"round 1 not trained within {TIMEOUT_S} s"
            time.sleep(0.5)
        # To Snakemake itself: `timeout -k` would SIGKILL it 10 s after passing the signal on.
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text()
        (snakemake_pid,) = map(int, children.split())
        os.kill(snakemake_pid, signal.SIGTERM)  # Snakemake: finish running jobs, start none
        process.wait(timeout=300)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    trained = {p: p.stat().st_mtime_ns for p in (workdir / "results/proxy").glob("run000[1-4]/*")}
    result = snakemake(cluster, workdir, target)
    stopped = first_log.read_text()[-3000:]
    assert result.returncode == 0, f"{stopped}\n--- resumed ---\n{result.stderr[-3000:]}"
    runs = pd.read_parquet(workdir / target)
    assert list(runs["round"]) == [1, 1, 1, 1, 2, 2] and set(runs["status"]) == {"ok"}
    assert {p: p.stat().st_mtime_ns for p in trained} == trained  # round 1 left as it was


def test_the_data_stage_runs_as_one_slurm_job_per_group_of_files(cluster, tmp_path):
    """A user corpus of three files, a job each (corpus.bytes_per_job: 1): three prepare_group
    SLURM jobs and the collect_shards fan-in, each a submission of its own."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k in range(3):
        lines = [
            json.dumps({"text": f"document {k}-{i} " * 40, "meta": {"set": name}})
            for i, name in enumerate(["Pile-CC", "Wikipedia (en)"] * 20)
        ]
        (corpus / f"{k:02d}.jsonl").write_text("\n".join(lines) + "\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    data_config = tmp_path / "data.yaml"
    data_config.write_text(
        f"corpus: {{path: {corpus}, domain_field: meta.set, valid_fraction: 0.2, "
        "bytes_per_job: 1}\ntarget: Wikipedia (en)\n"
    )
    command, env = snakemake_command(cluster, workdir, "results/data/stats.parquet")
    at = command.index("--profile")
    command[at:at] = [str(data_config)]  # after the other --configfile files: it wins
    result = run_bounded(command, env)
    assert result.returncode == 0, result.stderr[-4000:]
    logs = slurm_logs(workdir)
    jobs = [j for j in cluster.jobs() if j["id"] in logs]
    groups = [j for j in jobs if re.search(r"rule prepare_group:", logs[j["id"]])]
    fan_in = [j for j in jobs if re.search(r"checkpoint collect_shards:", logs[j["id"]])]
    assert len(groups) == 3 and len(fan_in) == 1, [j["comment"] for j in jobs]
    assert all(j["state"] == "COMPLETED" for j in groups + fan_in)
    stats = pd.read_parquet(workdir / "results/data/stats.parquet")
    assert set(stats["domain"]) == {"pile_cc", "wikipedia_en"}


DDP_SCRIPT = r"""
import json, os, sys
from regmix.training.devices import lightning_plugins, relaunch_under_srun

relaunch_under_srun(2, 1)  # the batch script becomes `srun` with 2 tasks
import lightning as L
import torch


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, index):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


trainer = L.Trainer(
    accelerator="cpu", devices=2, strategy="ddp", plugins=lightning_plugins(), max_steps=2,
    logger=False, enable_checkpointing=False, enable_progress_bar=False,
    enable_model_summary=False,
)
trainer.fit(Tiny(), torch.utils.data.DataLoader(torch.randn(16, 4), batch_size=4))
environment = trainer.strategy.cluster_environment
record = {
    "rank": trainer.global_rank, "world": trainer.world_size, "steps": trainer.global_step,
    "environment": type(environment).__name__, "requeue": environment.auto_requeue,
    "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
}
out = sys.argv[1]
with open(f"{out}.{trainer.global_rank}", "w") as f:
    f.write(json.dumps(record) + "\n")
"""

DDP_SNAKEFILE = """
rule ddp:
    output: "ranks.json"
    threads: 1
    resources: gpu=2, mpi="srun", tasks_per_node=2, runtime=10, mem_mb=2000
    shell: "{python} {script} rank > ddp.log 2>&1 && cat rank.0 rank.1 > {{output}}"
"""


def test_two_device_training_runs_one_lightning_rank_per_srun_task(cluster, tmp_path):
    """A rule with gpu=2, mpi="srun", tasks_per_node=2 trains with SLURM-launched DDP ranks.

    Lightning's own launcher is not used: `relaunch_under_srun` turns the batch script into
    `srun` with two tasks and each rank finds SLURMEnvironment (auto-requeue off). The fake
    GPUs cannot run CUDA, so the ranks train on the CPU with the same launch path.
    """
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    (tmp_path / "Snakefile").write_text(DDP_SNAKEFILE.format(python=sys.executable, script=script))
    command = [
        *("timeout", "-k", "10", str(TIMEOUT_S)),
        *(sys.executable, "-m", "snakemake", "--directory", str(tmp_path)),
        *("--snakefile", str(tmp_path / "Snakefile"), "--profile", str(PROFILE), *TEST_SETTINGS),
    ]
    result = run_bounded(command, cluster.env)
    log = (tmp_path / "ddp.log").read_text() if (tmp_path / "ddp.log").exists() else ""
    assert result.returncode == 0, result.stderr[-3000:] + log[-3000:]
    ranks = [json.loads(line) for line in (tmp_path / "ranks.json").read_text().splitlines()]
    assert [r["rank"] for r in ranks] == [0, 1]
    for rank in ranks:
        assert rank["world"] == 2 and rank["steps"] == 2
        assert rank["environment"] == "SLURMEnvironment" and rank["requeue"] is False
        assert rank["gpus"] == "0,1"  # SLURM's allocation, both ranks see both devices
