"""Proxy training throughput: tokens/s, model FLOP/s, fraction of matmul peak, Lightning overhead.

For each case (preset, vocabulary, batch, sequence length) the same model, optimizer,
schedule, gradient clipping and batches (regmix.data.loader.MixedBatches over random token shards)
are trained by a plain PyTorch loop and by regmix's Lightning module and Trainer, in
alternating trials; the speed ratio is given in wall time and in user CPU time (see `stamp`).
Model FLOP/s counts 6·N·tokens + causal attention (ModelConfig.flops_per_token) and is set
against this machine's fp32 matmul peak, measured in the same run.

A second table gives the same Lightning/plain ratio on the demo proxy setting with each
experiment tracker (`tracking.backend`) on, logging the training loss every `log_every` steps
as training does, beside what one logging call costs and that cost spread over the steps
(backends whose package is not installed are skipped).

The deployment setting is one single-threaded worker per core, so it measures one thread.
Hold the CPU lock while it runs:

    flock /tmp/regmix-cpu.lock python benchmarks/proxy_throughput.py
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning as L
import numpy as np
import torch

from regmix.data.loader import MixedBatches
from regmix.errors import RegmixError
from regmix.training.language_modeling import LanguageModeling, TrackerLogging
from regmix.training.model import next_token_loss
from regmix.training.tracking import (
    BACKENDS,
    TrackingConfig,
    build_logger,
    check_installed,
    finish_logger,
    hyperparameters,
)
from regmix.training.train import TrainConfig, build_trainer

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


def lightning_loop(
    module: LanguageModeling, config: TrainConfig, tracking: TrackingConfig | None = None
) -> list[Stamp]:
    """regmix's Trainer, reporting to `tracking`'s tracker as training does (none: no logger)."""
    clock = StepClock()
    if tracking is None or not tracking.enabled:
        build_trainer(config, [clock]).fit(module)
        return clock.stamps
    with tempfile.TemporaryDirectory() as state:
        logger = build_logger(tracking, "run0001", "proxy", state)
        weights = {f"d{i}": 0.25 for i in range(4)}
        params = hyperparameters("run0001", "proxy", tracking.group, "-", weights, asdict(config))
        # The tracker's callback first, as in training: the clock's stamp includes its logging.
        reporter = TrackerLogging(params, tracking.log_every, config.steps)
        build_trainer(config, [reporter, clock], logger).fit(module)
        finish_logger(logger)
    return clock.stamps


def measure(
    case, steps: int, warmup: int, trials: int, tracking: TrackingConfig | None = None
) -> dict:
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
                stamps = lightning_loop(module, config, tracking)
            totals[name] += np.subtract(stamps[-1], stamps[warmup])
    per_step = {name: total / (steps * trials) for name, total in totals.items()}
    return {
        "case": f"{preset} V={vocab} B={batch} T={seq_len}",
        "tokens_per_s": batch * seq_len / per_step["lightning"][0],
        "wall_ratio": per_step["plain"][0] / per_step["lightning"][0],
        "cpu_ratio": per_step["plain"][1] / per_step["lightning"][1],
        "flops_per_token": model_config.flops_per_token(seq_len),
        "seconds_per_step": per_step["lightning"][0],
    }


def logging_call_seconds(tracking: TrackingConfig, calls: int = 200) -> float:
    """Wall seconds of one training-loss logging call (what a logged step adds)."""
    with tempfile.TemporaryDirectory() as state:
        logger = build_logger(tracking, "calls", "proxy", state)
        logger.log_metrics({"train/loss": 1.0}, step=0)  # opens the run, file or writer
        start = time.perf_counter()
        for step in range(1, calls + 1):
            logger.log_metrics({"train/loss": 1.0 / step}, step=step)
        seconds = (time.perf_counter() - start) / calls
        logger.finalize("success")
        finish_logger(logger)
    return seconds


def tracker_table(steps: int, warmup: int, trials: int) -> None:
    """Lightning/plain speed with each tracker on, on the demo's proxy setting."""
    case = CASES[0]
    every = TrackingConfig().log_every
    print(
        f"\nExperiment trackers on {case[0]} V={case[1]} B={case[2]} T={case[3]}: training "
        f"loss logged every {every} steps; {steps} timed steps x {trials} trials per loop"
    )
    header = (
        f"{'tracking.backend':<17} {'Lightning/plain speed: wall':>28} {'user CPU':>9} "
        f"{'ms per log call':>16} {'per step':>9}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as root:
        for backend in BACKENDS:
            try:
                check_installed(backend)
            except RegmixError:
                print(f'{backend:<17} (not installed: pip install "regmix[{backend}]")')
                continue
            tracking = TrackingConfig(
                backend=backend, dir=str(Path(root) / "tracking"), group="benchmark"
            )
            r = measure(case, steps, warmup, trials, tracking)
            if tracking.enabled:
                call = logging_call_seconds(tracking)
                cost = f"{call * 1e3:>16.3f} {call / (every * r['seconds_per_step']):>9.2%}"
            else:
                cost = f"{'-':>16} {'-':>9}"
            print(f"{backend:<17} {r['wall_ratio']:>28.3f} {r['cpu_ratio']:>9.3f} {cost}")


def case_table(peak: float, steps: int, warmup: int, trials: int) -> None:
    """Speed, FLOP/s and the Lightning/plain ratio of each case, without a tracker."""
    header = (
        f"{'case':<34} {'tokens/s':>9} {'GFLOP/s':>8} {'of peak':>8} "
        f"{'Lightning/plain speed: wall':>28} {'user CPU':>9}"
    )
    print(header)
    print("-" * len(header))
    for case in CASES:
        r = measure(case, steps, warmup, trials)
        flops = r["tokens_per_s"] * r["flops_per_token"]
        print(
            f"{r['case']:<34} {r['tokens_per_s']:>9,.0f} {flops / 1e9:>8.1f} "
            f"{flops / peak:>8.2f} {r['wall_ratio']:>28.3f} {r['cpu_ratio']:>9.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per trial")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per trial")
    parser.add_argument("--trials", type=int, default=4, help="alternating trials per loop")
    parser.add_argument(
        "--tracker-steps", type=int, default=40, help="timed steps per trial with a tracker on"
    )
    parser.add_argument("--tracker-trials", type=int, default=2, help="trials per tracker")
    parser.add_argument(
        "--trackers-only", action="store_true", help="only the experiment trackers' table"
    )
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")

    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} thread(s)"
    )
    peak = matmul_peak()
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    if not args.trackers_only:
        case_table(peak, args.steps, args.warmup, args.trials)
    tracker_table(args.tracker_steps, args.warmup, args.tracker_trials)
    print(f"fp32 matmul peak after the cases: {matmul_peak() / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
