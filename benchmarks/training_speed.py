"""Training speed of one configured shape, through regmix's own Lightning module and Trainer.

Trains `--steps` optimizer steps of the workflow config's `proxy` or `final` section (the
embedded default unless `--configfile`), with `--set KEY=VALUE` overrides of its training
settings, on random token shards of the demo's vocabulary, in this process with one thread
(as a training job runs), and prints:

- the first step's seconds (with `compile: true`, the compilation: cold on an empty inductor
  cache, warm on a filled one) and the process's seconds up to it (imports included);
- the steady step: tokens/s, model GFLOP/s (6·N·tokens + causal attention,
  ModelConfig.flops_per_token) and its fraction of a nominal fp32 peak (`--peak`, 110 GFLOP/s
  per core on the demo machine) and of this run's own measured matmul peak.

Before/after pairs are whole processes, e.g. the demo's settings against eager full batches:

    python benchmarks/training_speed.py final
    python benchmarks/training_speed.py final --set compile=false micro_batch_size=null

`--profile` adds where a steady step's time goes, by kernel (torch.profiler's self CPU time):
matrix products, attention, element-wise and the rest.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time

STARTED = time.perf_counter()
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from proxy_throughput import matmul_peak, random_shards  # noqa: E402

from regmix.data.loader import MixedBatches  # noqa: E402
from regmix.training.language_modeling import LanguageModeling  # noqa: E402
from regmix.training.train import build_trainer  # noqa: E402
from regmix.training.train_config import TrainConfig, training_settings  # noqa: E402
from regmix.workflow.config import load_config  # noqa: E402


class OptimizerStepClock(L.Callback):
    """A wall-clock stamp at the start and after every optimizer step (not micro-batch)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.stamps.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            self.stamps.append(time.perf_counter())


def parse_value(text: str):
    """A --set value as JSON (numbers, true/false, null), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("section", choices=("proxy", "final"))
    parser.add_argument("--configfile", nargs="*", default=[], help="merged over the default")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps to train")
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the steady rate")
    parser.add_argument("--vocab", type=int, default=257, help="the demo's byte tokenizer: 257")
    parser.add_argument("--peak", type=float, default=110e9, help="nominal fp32 FLOP/s per core")
    parser.add_argument("--profile", action="store_true", help="also print the time by kernel")
    args = parser.parse_args()
    if args.steps <= args.warmup + 1:
        parser.error("--steps must exceed --warmup + 1")

    torch.set_num_threads(1)
    settings = training_settings(load_config(args.configfile)[args.section])
    settings.update(
        (key, parse_value(value)) for key, value in (item.split("=", 1) for item in args.set)
    )
    settings.update(steps=args.steps, checkpoint_every=0, eval_every=0, accelerator="cpu")
    config = TrainConfig(**settings)
    model_config = config.model_config(args.vocab)
    domains = {f"d{i}": 0.25 for i in range(4)}
    batches = MixedBatches(
        random_shards(args.vocab), domains, config.batch_size, config.seq_len, config.seed
    )
    clock = OptimizerStepClock()
    build_trainer(config, [clock]).fit(LanguageModeling(model_config, config, batches))

    stamps = clock.stamps
    first = stamps[1] - stamps[0]
    steady = statistics.median(b - a for a, b in itertools.pairwise(stamps[args.warmup :]))
    tokens_per_s = config.tokens_per_step / steady
    flops = tokens_per_s * model_config.flops_per_token(config.seq_len)
    measured_peak = matmul_peak()
    changed = " ".join(args.set) or "as configured"
    print(
        f"{args.section} ({config.model}, batch {config.batch_size}x{config.seq_len}, "
        f"micro-batch {config.micro_batch_size}, compile {config.compile}; {changed}): "
        f"first step {first:.2f} s (process {stamps[1] - STARTED:.1f} s in); steady "
        f"{steady * 1e3:.1f} ms/step, {tokens_per_s:,.0f} tokens/s, {flops / 1e9:.1f} GFLOP/s, "
        f"{flops / args.peak:.2f} of {args.peak / 1e9:.0f} GFLOP/s, "
        f"{flops / measured_peak:.2f} of the {measured_peak / 1e9:.0f} GFLOP/s measured here",
        file=sys.stdout,
        flush=True,
    )
    if args.profile:
        print(kernel_shares(model_config, config), flush=True)


KERNELS = {
    "matmul": ("aten::mm", "aten::bmm", "aten::addmm"),
    "attention": (
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    ),
}


def kernel_shares(model_config, config, steps: int = 4) -> str:
    """Self CPU time of a few full-batch training steps (forward, backward, AdamW), by kernel."""
    from torch.profiler import ProfilerActivity, profile

    from regmix.training.model import Transformer, next_token_loss

    model = Transformer(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    tokens = torch.randint(0, model_config.vocab_size, (config.batch_size, config.seq_len + 1))

    def step() -> None:
        next_token_loss(model, tokens).backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    seconds = {name: 0.0 for name in (*KERNELS, "other")}
    for event in prof.key_averages():
        kind = next((k for k, ops in KERNELS.items() if event.key in ops), "other")
        seconds[kind] += event.self_cpu_time_total / 1e6
    total = sum(seconds.values())
    matmul_flops = (
        6
        * config.tokens_per_step
        * (model_config.non_embedding_params + model_config.vocab_size * model_config.n_embd)
    )
    shares = ", ".join(f"{kind} {s / total:.0%}" for kind, s in seconds.items())
    matmul_rate = matmul_flops * steps / seconds["matmul"] if seconds["matmul"] else 0.0
    return (
        f"profile: {total / steps * 1e3:.0f} ms/step: {shares}; "
        f"matrix products at {matmul_rate / 1e9:.0f} GFLOP/s"
    )


if __name__ == "__main__":
    main()
