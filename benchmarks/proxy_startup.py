"""What a proxy job pays besides training, and what `proxies_per_job` saves.

Prints, from fresh processes (best of a few, single-threaded):

- the import cost of torch, lightning and regmix.training.train;
- the first optimizer step of a fresh process against a later one;
- `regmix train-proxy` on 1 and on K runs of a few steps: the fixed cost per process (imports,
  first step, data) and the cost per extra run (Trainer, model, evaluation, writes), and what
  training 64 proxies costs on top of their training with 1 or K proxies per job.

Hold the CPU lock while it runs:

    flock /tmp/regmix-cpu.lock python benchmarks/proxy_startup.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from demo_data import prepare_demo_data

FIRST_STEPS = """
import time, json
t0 = time.perf_counter()
import torch
from regmix.training.model import ModelConfig, Transformer, next_token_loss
t1 = time.perf_counter()
model = Transformer(ModelConfig.from_preset("demo_proxy", 257, max_seq_len=256))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
batch = torch.randint(0, 257, (16, 257))
steps = []
for _ in range(3):
    s = time.perf_counter()
    next_token_loss(model, batch).backward()
    optimizer.step()
    optimizer.zero_grad()
    steps.append(time.perf_counter() - s)
print(json.dumps({"import": t1 - t0, "steps": steps}))
"""


def python(*args: str, env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def best_of(repeats: int, *args: str) -> float:
    return min(python(*args) for _ in range(repeats))


def regmix(*args: str) -> float:
    return python("-m", "regmix.cli", *args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=4, help="K: runs in the multi-run job")
    parser.add_argument("--steps", type=int, default=5, help="training steps per run")
    args = parser.parse_args()

    base = best_of(args.repeats, "-c", "pass")
    print(f"python start-up: {base:.2f} s")
    for module in ("torch", "lightning", "regmix.training.train"):
        cost = best_of(args.repeats, "-c", f"import {module}") - base
        print(f"import {module}: {cost:.2f} s")

    out = subprocess.run(
        [sys.executable, "-c", FIRST_STEPS], check=True, capture_output=True, text=True
    ).stdout
    steps = json.loads(out)["steps"]
    print(
        f"demo_proxy step in a fresh process: first {steps[0]:.2f} s, then {steps[2]:.2f} s "
        f"(first-step extra {steps[0] - steps[2]:.2f} s)"
    )

    root = Path(tempfile.mkdtemp(prefix="regmix-startup-"))
    prepare_demo_data(root, final_tokens=819_200, n=args.runs)
    settings = json.dumps({"model": "demo_proxy", "steps": args.steps, "eval_windows": 16})
    runs = [f"run{i:04d}" for i in range(1, args.runs + 1)]

    def job(n: int, trial: int) -> tuple[float, float]:
        out = root / f"out-{n}-{trial}"
        wall = regmix(
            "train-proxy",
            "--threads",
            "1",
            "--data",
            str(root / "data"),
            "--mixtures",
            str(root / "mixtures.parquet"),
            "--runs",
            *runs[:n],
            "--settings",
            settings,
            "--out",
            str(out),
            "--work",
            str(root / f"work-{n}-{trial}"),
        )
        train = sum(
            json.loads((out / r / "run.json").read_text())["train_seconds"] for r in runs[:n]
        )
        return wall, train

    one = min((job(1, t) for t in range(args.repeats)), key=lambda x: x[0])
    many = min((job(args.runs, t) for t in range(args.repeats)), key=lambda x: x[0])
    per_run = (many[0] - one[0]) / (args.runs - 1)
    per_process = one[0] - per_run
    per_run_train = (many[1] - one[1]) / (args.runs - 1)
    print(
        f"train-proxy, {args.steps} steps per run: 1 run {one[0]:.2f} s, "
        f"{args.runs} runs {many[0]:.2f} s"
    )
    print(f"fixed cost per process: {per_process:.2f} s")
    print(
        f"cost per run: {per_run:.2f} s, of which training {per_run_train:.2f} s, "
        f"other (Trainer, model, evaluation, writes) {per_run - per_run_train:.2f} s"
    )
    for per_job in (1, 8):
        jobs = -(-64 // per_job)
        overhead = jobs * per_process + 64 * (per_run - per_run_train)
        print(
            f"64 proxies, {per_job} per job: {jobs} processes, "
            f"{overhead:.0f} s of worker time besides training"
        )


if __name__ == "__main__":
    main()
