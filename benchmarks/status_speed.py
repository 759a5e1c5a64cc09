"""How long one `regmix status` takes: on a fabricated 512-run sweep mid-run, or on a folder.

The fabricated sweep is the paper's size (512 proxies, one job each: the most files), 300 runs
published, 8 running, 4 failed, the rest pending, in the file shapes the workflow writes
(run.json, logs, Snakemake's in-progress marks and locks). Prints the median of in-process
`gather` + `render` and of the whole command (`python -m regmix.cli status`, start-up and
imports included), and the imports alone.

    python benchmarks/status_speed.py [--runs 512] [--per-job 1] [--repeat 10]
    python benchmarks/status_speed.py --directory /path/to/workflow --configfile my.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from base64 import urlsafe_b64encode
from pathlib import Path

import yaml

from regmix.observe.status import gather, render
from regmix.workflow.config import load_config
from regmix.workflow.sweep import Sweep, batch_log, batch_table, proxy_dir


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fabricate(root: Path, runs: int, per_job: int) -> Path:
    """A sweep of `runs` proxies mid-run; returns its config file."""
    config = root / "sweep.yaml"
    rounds = {"mixtures": {"rounds": [runs]}, "proxy": {"proxies_per_job": per_job}}
    config.write_text(yaml.safe_dump(rounds))
    plan = Sweep.from_config(load_config([config]), planted=True)
    write(root / ".snakemake/locks/0.output.lock", "")
    names = plan.runs()
    published, running, failed = names[:300], names[300:308], names[308:312]
    for run in published:
        record = {"run": run, "status": "ok", "steps": 80, "tokens": 327680,
                  "tokens_per_s": 21974.0, "train_seconds": 14.9, "wall_seconds": 15.5,
                  "device": "cpu", "fingerprint": "9610485612f3b8a9",
                  "weights": {"web": 0.5, "code": 0.5}}  # fmt: skip
        write(root / proxy_dir(run) / "run.json", json.dumps(record, indent=2))
    for batch in plan.batches():
        lines = [f"{r}: ok, 80 steps, 327,680 tokens, 21,974 tokens/s, 15.5 s" for r in batch.runs]
        lines = [line for line, r in zip(lines, batch.runs, strict=True) if r in published]
        if batch.runs[len(lines) :] and batch.runs[len(lines)] in running:
            mark = urlsafe_b64encode(batch_table(batch.round, batch.name).encode()).decode()
            write(root / ".snakemake/incomplete" / mark, '{"external_jobid": null}')
            lines.append(f"{batch.runs[len(lines)]}: step 40/80, 163,840 tokens, 21,974 tokens/s")
        elif batch.runs[len(lines) :] and batch.runs[len(lines)] in failed:
            lines.append("regmix: error: run stopped at step 40 of 80")
        if lines:
            write(root / batch_log(batch.round, batch.name), "\n".join(lines) + "\n")
    return config


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=512)
    parser.add_argument("--per-job", type=int, default=1, help="proxies_per_job")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--directory", type=Path, help="time this workflow folder instead")
    parser.add_argument("--configfile", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.directory:
            root, configs = args.directory, args.configfile
        else:
            root = Path(tmp)
            configs = [fabricate(root, args.runs, args.per_job)]
        config = load_config(configs)
        print(render(gather(config, root)), end="\n\n")
        in_process = median_seconds(lambda: render(gather(config, root)), args.repeat)
        command = [sys.executable, "-m", "regmix.cli", "status", "-d", str(root)]
        command += ["--configfile", *map(str, configs)] if configs else []
        imports = [
            sys.executable,
            "-c",
            "import regmix.workflow.config, regmix.observe.status, regmix.observe.eta",
        ]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        run = lambda cmd: subprocess.run(cmd, env=env, check=True, capture_output=True)  # noqa: E731
        whole = median_seconds(lambda: run(command), args.repeat)
        start_up = median_seconds(lambda: run(imports), args.repeat)
    print(f"gather + render, in process: {in_process * 1000:7.1f} ms (median of {args.repeat})")
    print(f"regmix status, whole process: {whole * 1000:6.1f} ms")
    print(f"  of which python + imports:  {start_up * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
