"""How long training steps take on this machine: a few real steps of each configured shape.

`regmix plan` turns FLOPs into wall time with these. Each group of shapes that share a thread
count is timed in a fresh subprocess whose thread pools are fixed before torch is imported, as
a training job's are (`regmix.cli.training._use_threads`): the real `regmix.model.Transformer`,
`next_token_loss` and AdamW, on random tokens of the right vocabulary, with the configured
batch, sequence length and micro-batches, after one warm-up step. The subprocess also times
what every training process pays before its first step: importing `regmix.train` (torch,
Lightning, pandas).

A shape too large to step here in about a second is timed on fewer windows and scaled, or
extrapolated from its FLOPs at the rate a smaller shape reached; the result says which. Timing
while other processes compete for the cores inflates every figure.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from regmix.costs import RunCost
from regmix.errors import RegmixError

STEP_BUDGET_SECONDS = 1.0
"""About how long one timed step (or fraction of a step) may take."""
TIMED_SECONDS = 0.6
"""Time at least this much of steady-state steps (at least 2, at most 5 steps)."""
MAX_BUILD_BYTES = 4 * 2**30
"""Larger models (weights, gradients, AdamW state) are extrapolated, not built."""


@dataclass(frozen=True)
class Shape:
    """A training configuration to time: the model and how one optimizer step is cut."""

    label: str
    model: dict
    """`ModelConfig` fields, vocabulary included."""
    batch_size: int
    seq_len: int
    micro_batch_size: int | None
    eval_batch_size: int
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    grad_clip: float
    flops_per_token: float
    total_params: int
    threads: int
    gpus: int
    """GPUs the rule grants: a GPU shape is timed on one GPU where this machine has one."""

    @classmethod
    def of(cls, label: str, run: RunCost) -> Shape:
        t = run.train
        return cls(
            label=label,
            model=asdict(run.model),
            batch_size=t.batch_size,
            seq_len=t.seq_len,
            micro_batch_size=t.micro_batch_size,
            eval_batch_size=run.eval_batch_size,
            lr=t.lr,
            betas=(t.beta1, t.beta2),
            weight_decay=t.weight_decay,
            grad_clip=t.grad_clip,
            flops_per_token=run.flops_per_token,
            total_params=run.model.total_params,
            threads=run.threads,
            gpus=run.gpus,
        )

    @property
    def flops_per_step(self) -> float:
        return self.flops_per_token * self.batch_size * self.seq_len


@dataclass(frozen=True)
class StepTiming:
    """What one shape's steps cost here."""

    label: str
    step_seconds: float
    """A steady-state optimizer step (all micro-batches, clipping, AdamW)."""
    first_step_seconds: float
    """The first step of a fresh process (allocations, kernel selection)."""
    eval_window_seconds: float
    """The forward pass of one validation window."""
    checkpoint_seconds: float
    """Writing one checkpoint (weights and AdamW state) to a file."""
    import_seconds: float
    """Importing `regmix.train` in a fresh process (0 where not timed in this group)."""
    how: str
    """'measured: ...', 'scaled from ...' or 'extrapolated from FLOPs ...'."""

    @property
    def first_step_extra(self) -> float:
        return max(0.0, self.first_step_seconds - self.step_seconds)


def measure_steps(shapes: Sequence[Shape], timeout: float = 300.0) -> dict[str, StepTiming]:
    """Time each shape in subprocesses pinned to its thread count; keyed by label."""
    groups: dict[int, list[Shape]] = {}
    for shape in shapes:
        groups.setdefault(shape.threads, []).append(shape)
    timings: dict[str, StepTiming] = {}
    for index, (threads, group) in enumerate(groups.items()):
        env = dict(os.environ)
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[variable] = str(threads)
        request = {
            "threads": threads,
            "time_imports": index == 0,  # one fresh process's imports is enough
            "shapes": [asdict(s) for s in sorted(group, key=lambda s: s.flops_per_step)],
        }
        try:
            done = subprocess.run(
                [sys.executable, "-m", "regmix.step_timing"],
                input=json.dumps(request),
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RegmixError(f"timing training steps took over {timeout:.0f} s") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RegmixError(f"timing training steps failed: {last}")
        for result in json.loads(done.stdout):
            timings[result["label"]] = StepTiming(**result)
    return timings


# --- the timing subprocess ------------------------------------------------------------------


def _main() -> None:
    request = json.load(sys.stdin)
    started = time.perf_counter()
    import torch

    torch.set_num_threads(request["threads"])
    if request["time_imports"]:
        import regmix.train  # noqa: F401  (what every training process imports)
    import_seconds = time.perf_counter() - started if request["time_imports"] else 0.0
    rate: float | None = None  # FLOP/s of the last fully measured shape
    write_speed: float | None = None  # checkpoint bytes/s
    results = []
    for spec in request["shapes"]:
        spec["betas"] = tuple(spec["betas"])
        shape = Shape(**spec)
        timing, rate, write_speed = _time_shape(shape, rate, write_speed, import_seconds)
        results.append(asdict(timing))
    print(json.dumps(results))


def _time_shape(
    shape: Shape, rate: float | None, write_speed: float | None, import_seconds: float
) -> tuple[StepTiming, float | None, float | None]:
    micro = shape.micro_batch_size or shape.batch_size
    window_flops = shape.flops_per_token * shape.seq_len
    state_bytes = 16 * shape.total_params  # weights, gradients, two AdamW moments
    too_big = rate is not None and window_flops / rate > 5 * STEP_BUDGET_SECONDS
    if too_big or state_bytes > MAX_BUILD_BYTES:
        if rate is None:
            raise RegmixError(
                f"{shape.label}: {shape.total_params:,} parameters are too many to time here "
                "and no smaller shape was timed to extrapolate from"
            )
        step = shape.flops_per_step / rate
        checkpoint = 12 * shape.total_params / write_speed if write_speed else 0.0
        how = f"extrapolated from FLOPs at {rate / 1e9:.1f} GFLOP/s"
        timing = StepTiming(
            shape.label, step, step, window_flops / 3 / rate, checkpoint, import_seconds, how
        )
        return timing, rate, write_speed
    windows = micro
    if rate is not None and shape.flops_per_step / rate > STEP_BUDGET_SECONDS:
        windows = max(1, min(micro, int(STEP_BUDGET_SECONDS * rate / window_flops)))
    timing, measured_rate, speed = _run_steps(shape, windows, import_seconds)
    return timing, measured_rate, speed


def _run_steps(shape: Shape, windows: int, import_seconds: float):
    import torch

    from regmix.model import Transformer, next_token_loss
    from regmix.model_config import ModelConfig

    device = torch.device("cuda" if shape.gpus and torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**shape.model)).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=shape.lr, betas=shape.betas, weight_decay=shape.weight_decay
    )
    vocab = shape.model["vocab_size"]
    micro = shape.micro_batch_size or shape.batch_size
    full = windows == micro
    accumulate = shape.batch_size // micro if full else 1
    tokens = torch.randint(0, vocab, (windows, shape.seq_len + 1), device=device)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step() -> float:
        sync()
        start = time.perf_counter()
        for _ in range(accumulate):
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                loss = next_token_loss(model, tokens) / accumulate
            loss.backward()
        if shape.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), shape.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - start

    first = step()
    times: list[float] = []
    while len(times) < 2 or (sum(times) < TIMED_SECONDS and len(times) < 5):
        times.append(step())
    scale = 1.0 if full else shape.batch_size / windows
    steady = statistics.median(times) * scale

    eval_windows = tokens[: min(windows, shape.eval_batch_size)]
    model.eval()
    forwards = []
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        for _ in range(2):
            sync()
            start = time.perf_counter()
            next_token_loss(model, eval_windows, reduction="sum")
            sync()
            forwards.append(time.perf_counter() - start)
    per_window = forwards[-1] / eval_windows.size(0)

    with tempfile.TemporaryDirectory(prefix="regmix-plan-") as folder:
        path = os.path.join(folder, "step.ckpt")
        start = time.perf_counter()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
        checkpoint = time.perf_counter() - start
        written = os.path.getsize(path)

    threads = f"{torch.get_num_threads()} thread(s)" if device.type == "cpu" else "GPU"
    if full:
        how = f"measured: {len(times)} steps after a warm-up, {threads}, {device.type}"
    else:
        how = f"scaled from {windows} of {shape.batch_size} windows per step, {threads}"
    timing = StepTiming(
        shape.label, steady, first * scale, per_window, checkpoint, import_seconds, how
    )
    return timing, shape.flops_per_step / steady, written / max(checkpoint, 1e-6)


if __name__ == "__main__":
    _main()
