"""Proxy training throughput: tokens/s, model FLOP/s, fraction of matmul peak, Lightning overhead.

For each case (preset, vocabulary, batch, sequence length) the same model, optimizer,
schedule, gradient clipping and batches (regmix.loader.MixedBatches over random token shards)
are trained by a plain PyTorch loop and by regmix's Lightning module and Trainer, in
alternating trials; the speed ratio is given in wall time and in user CPU time (see `stamp`).
Model FLOP/s counts 6·N·tokens + causal attention (ModelConfig.flops_per_token) and is set
against this machine's fp32 matmul peak, measured in the same run.

The deployment setting is one single-threaded worker per core, so it measures one thread.
Hold the CPU lock while it runs:

    flock /tmp/regmix-cpu.lock python benchmarks/proxy_throughput.py
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning as L
import numpy as np
import torch

from regmix.loader import MixedBatches
from regmix.model import next_token_loss
from regmix.train import LanguageModeling, TrainConfig, build_trainer

CASES = [
    # preset, vocabulary, batch size, sequence length
    ("demo_proxy", 257, 32, 128),  # the demo's proxy setting (config/config.yaml)
    ("demo_proxy", 257, 16, 256),
    ("tinyllama_1M", 257, 16, 256),
    ("tinyllama_1M", 50432, 4, 256),
]


def matmul_peak(sizes=(512, 1024, 2048), repeats: int = 5) -> float:
    """Best fp32 FLOP/s of square matmuls on this thread count."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def random_shards(vocab: int, domains: int = 4, tokens: int = 2_000_000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    dtype = np.uint16 if vocab < 65536 else np.uint32
    return {f"d{i}": rng.integers(0, vocab, tokens).astype(dtype) for i in range(domains)}


Stamp = tuple[float, float]


def stamp() -> Stamp:
    """Wall clock and this process's user CPU time.

    User CPU time is what the loops themselves spend; wall time also carries the kernel's
    page-fault work, which at a 50k vocabulary (~1 GB of logits mapped and unmapped per step)
    drifts upwards over a process's life and would favour whichever loop ran first.
    """
    return time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_utime


def plain_loop(module: LanguageModeling, config: TrainConfig, steps: int) -> list[Stamp]:
    """The training step Lightning runs, written out: a stamp at the start and after each step."""
    module.configure_model()
    model = module.model
    optimizers = module.configure_optimizers()  # the very optimizer and schedule Lightning uses
    optimizer, schedule = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]

    def train_step(step: int) -> None:
        # A function, so the loss and its graph are released before the next step (as in
        # Lightning); a loop variable holding the last loss costs ~2% at a 50k vocabulary.
        loss = next_token_loss(model, module.batches(step))
        if not torch.isfinite(loss):
            raise RuntimeError("diverged")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)

    stamps = [stamp()]
    for step in range(steps):
        train_step(step)
        stamps.append(stamp())
    return stamps


class StepClock(L.Callback):
    def __init__(self) -> None:
        self.stamps: list[Stamp] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.stamps.append(stamp())

    def on_train_batch_end(self, trainer, *args) -> None:
        self.stamps.append(stamp())


def lightning_loop(module: LanguageModeling, config: TrainConfig) -> list[Stamp]:
    clock = StepClock()
    build_trainer(config, [clock]).fit(module)
    return clock.stamps


def measure(case, steps: int, warmup: int, trials: int) -> dict:
    """Seconds per step (wall and user CPU) of both loops over their timed steps."""
    preset, vocab, batch, seq_len = case
    config = TrainConfig(model=preset, seq_len=seq_len, batch_size=batch, steps=warmup + steps)
    model_config = config.model_config(vocab)
    batches = MixedBatches(
        random_shards(vocab), {f"d{i}": 0.25 for i in range(4)}, batch, seq_len, 0
    )
    totals = {"plain": np.zeros(2), "lightning": np.zeros(2)}
    for trial in range(trials):
        # Alternate which loop goes first, so that drift over the process's life cancels.
        for name in sorted(totals, reverse=bool(trial % 2)):
            module = LanguageModeling(model_config, config, batches)
            if name == "plain":
                stamps = plain_loop(module, config, warmup + steps)
            else:
                stamps = lightning_loop(module, config)
            totals[name] += np.subtract(stamps[-1], stamps[warmup])
    per_step = {name: total / (steps * trials) for name, total in totals.items()}
    return {
        "case": f"{preset} V={vocab} B={batch} T={seq_len}",
        "tokens_per_s": batch * seq_len / per_step["lightning"][0],
        "wall_ratio": per_step["plain"][0] / per_step["lightning"][0],
        "cpu_ratio": per_step["plain"][1] / per_step["lightning"][1],
        "flops_per_token": model_config.flops_per_token(seq_len),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per trial")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per trial")
    parser.add_argument("--trials", type=int, default=4, help="alternating trials per loop")
    args = parser.parse_args()

    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} thread(s)"
    )
    peak = matmul_peak()
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    header = (
        f"{'case':<34} {'tokens/s':>9} {'GFLOP/s':>8} {'of peak':>8} "
        f"{'Lightning/plain speed: wall':>28} {'user CPU':>9}"
    )
    print(header)
    print("-" * len(header))
    for case in CASES:
        r = measure(case, args.steps, args.warmup, args.trials)
        flops = r["tokens_per_s"] * r["flops_per_token"]
        print(
            f"{r['case']:<34} {r['tokens_per_s']:>9,.0f} {flops / 1e9:>8.1f} "
            f"{flops / peak:>8.2f} {r['wall_ratio']:>28.3f} {r['cpu_ratio']:>9.3f}"
        )
    print(f"fp32 matmul peak after the cases: {matmul_peak() / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
