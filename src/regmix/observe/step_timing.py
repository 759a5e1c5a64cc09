"""How long training steps take on this machine: a few real steps of each configured shape.

`regmix plan` turns FLOPs into wall time with these. Each group of shapes that share a thread
count is timed in a fresh subprocess whose thread pools are fixed before torch is imported, as
a training job's are (`regmix.cli.training._use_threads`): the real `Transformer`,
`next_token_loss` and AdamW, on random tokens of the right vocabulary, with the configured
batch, sequence length and micro-batches, after one warm-up step. The subprocess also times
what every training process pays before its first step: importing `regmix.training.train` (torch,
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

from regmix.errors import RegmixError
from regmix.observe.costs import RunCost

STEP_BUDGET_SECONDS = 2.0
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
    compile: bool = False
    """`compile: true`: steps are timed compiled, and the compilation counts as first-step
    time, paid once per process as a job pays it."""

    @classmethod
    def of(cls, label: str, run: RunCost, cores: int | None = None) -> Shape:
        """The shape of `run`, at its rule's threads (scaled down to `cores`, as Snakemake
        scales a rule that asks for more threads than it was given)."""
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
            threads=min(run.threads, cores or run.threads),
            gpus=run.gpus,
            compile=t.compile,
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
    """Importing `regmix.training.train` in a fresh process (0 where not timed in this group)."""
    how: str
    """'measured: ...', 'scaled from ...' or 'extrapolated from FLOPs ...'."""
    device: str = "cpu"
    """Where the steps ran (or would run): 'cpu' or 'cuda'."""

    @property
    def first_step_extra(self) -> float:
        return max(0.0, self.first_step_seconds - self.step_seconds)


def measure_steps(shapes: Sequence[Shape], timeout: float = 300.0) -> dict[str, StepTiming]:
    """Time each shape in subprocesses pinned to its thread count; keyed by label."""
    groups: dict[int, list[Shape]] = {}
    for shape in sorted(shapes, key=lambda s: s.flops_per_step):
        groups.setdefault(shape.threads, []).append(shape)
    timings: dict[str, StepTiming] = {}
    rate = None  # FLOP/s a smaller shape reached: what a shape too large to time is scaled by
    write_speed = None  # checkpoint bytes/s
    for index, (threads, group) in enumerate(groups.items()):
        env = dict(os.environ)
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[variable] = str(threads)
        request = {
            "threads": threads,
            "time_imports": index == 0,  # one fresh process's imports is enough
            "rate": rate,
            "write_speed": write_speed,
            "shapes": [asdict(s) for s in group],
        }
        try:
            done = subprocess.run(
                [sys.executable, "-m", "regmix.observe.step_timing"],
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
        reply = json.loads(done.stdout)
        timings.update((t["label"], StepTiming(**t)) for t in reply["timings"])
        rate, write_speed = reply["rate"], reply["write_speed"]
    return timings


# --- the timing subprocess ------------------------------------------------------------------


def _main() -> None:
    request = json.load(sys.stdin)
    started = time.perf_counter()
    import torch

    torch.set_num_threads(request["threads"])
    if request["time_imports"]:
        import regmix.training.train  # noqa: F401  (what every training process imports)
    import_seconds = time.perf_counter() - started if request["time_imports"] else 0.0
    rate: float | None = request["rate"]  # FLOP/s of the last shape timed
    write_speed: float | None = request["write_speed"]  # checkpoint bytes/s
    results = []
    for spec in request["shapes"]:
        spec["betas"] = tuple(spec["betas"])
        shape = Shape(**spec)
        timing, rate, write_speed = _time_shape(shape, rate, write_speed, import_seconds)
        results.append(asdict(timing))
    print(json.dumps({"timings": results, "rate": rate, "write_speed": write_speed}))


def _time_shape(
    shape: Shape, rate: float | None, write_speed: float | None, import_seconds: float
) -> tuple[StepTiming, float, float | None]:
    """Time one shape; returns its timing, the FLOP/s it reached and the checkpoint bytes/s."""
    window_flops = shape.flops_per_token * shape.seq_len
    state_bytes = 16 * shape.total_params  # weights, gradients, two AdamW moments
    if state_bytes > MAX_BUILD_BYTES:
        if rate is None:
            raise RegmixError(
                f"{shape.label}: {shape.total_params:,} parameters are too many to time here "
                "and no smaller shape was timed to extrapolate from"
            )
        return _extrapolated(shape, rate, write_speed, import_seconds), rate, write_speed
    steps = _Steps(shape)
    if rate is None:
        rate = steps.probe_rate()
    if window_flops / rate > 5 * STEP_BUDGET_SECONDS:
        return _extrapolated(shape, rate, write_speed, import_seconds), rate, write_speed
    micro = shape.micro_batch_size or shape.batch_size
    windows = micro
    if shape.flops_per_step / rate > STEP_BUDGET_SECONDS:
        windows = max(1, min(micro, int(STEP_BUDGET_SECONDS * rate / window_flops)))
    return steps.measure(windows, import_seconds)


def _extrapolated(
    shape: Shape, rate: float, write_speed: float | None, import_seconds: float
) -> StepTiming:
    step = shape.flops_per_step / rate
    window = shape.flops_per_token * shape.seq_len / 3 / rate  # forward only
    checkpoint = 12 * shape.total_params / write_speed if write_speed else 0.0
    how = f"extrapolated from FLOPs at {rate / 1e9:.1f} GFLOP/s"
    device = "cuda" if shape.gpus and _cuda_available() else "cpu"
    return StepTiming(shape.label, step, step, window, checkpoint, import_seconds, how, device)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class _Steps:
    """One shape's model and optimizer, stepping on random tokens of its vocabulary."""

    PROBE_TOKENS = 128

    def __init__(self, shape: Shape) -> None:
        import torch

        from regmix.training.model import Transformer
        from regmix.training.model_config import ModelConfig

        self.shape = shape
        gpu = shape.gpus and torch.cuda.is_available()
        self.device = torch.device("cuda" if gpu else "cpu")
        self.bf16 = bool(gpu) and torch.cuda.is_bf16_supported()
        torch.manual_seed(0)
        self.model = Transformer(ModelConfig(**shape.model)).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=shape.lr,
            betas=shape.betas,
            weight_decay=shape.weight_decay,
        )

    def tokens(self, windows: int, length: int):
        import torch

        vocab = self.shape.model["vocab_size"]
        return torch.randint(0, vocab, (windows, length + 1), device=self.device)

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def step(self, tokens, accumulate: int) -> float:
        """Seconds of one optimizer step over `accumulate` micro-batches of `tokens`."""
        import torch

        from regmix.training.model import next_token_loss

        self._sync()
        start = time.perf_counter()
        for _ in range(accumulate):
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
                loss = next_token_loss(self.model, tokens) / accumulate
            loss.backward()
        if self.shape.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.shape.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._sync()
        return time.perf_counter() - start

    def probe_rate(self) -> float:
        """FLOP/s on one short window: enough to size the real measurement."""
        length = min(self.shape.seq_len, self.PROBE_TOKENS)
        tokens = self.tokens(1, length)
        self.step(tokens, 1)  # warm-up
        return self.shape.flops_per_token * length / self.step(tokens, 1)

    def measure(self, windows: int, import_seconds: float) -> tuple[StepTiming, float, float]:
        """Steps of `windows` windows per micro-batch; a full step when that is the configured
        micro-batch, else one micro-batch scaled to the whole batch."""
        import torch

        from regmix.training.model import next_token_loss

        shape = self.shape
        micro = shape.micro_batch_size or shape.batch_size
        full = windows == micro
        accumulate = shape.batch_size // micro if full else 1
        tokens = self.tokens(windows, shape.seq_len)
        if shape.compile:
            self.model.compile()  # in place, after the eager probe: the first step compiles
        first = self.step(tokens, accumulate)
        times: list[float] = []
        while len(times) < 2 or (sum(times) < TIMED_SECONDS and len(times) < 5):
            times.append(self.step(tokens, accumulate))
        scale = 1.0 if full else shape.batch_size / windows
        steady = statistics.median(times) * scale
        # Compilation does not grow with the windows a scaled step leaves out.
        first_step = steady + first - statistics.median(times) if shape.compile else first * scale

        block = tokens[: min(windows, shape.eval_batch_size)]
        self.model.eval()
        with torch.no_grad(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            for _ in range(2):  # the second, warm forward counts
                self._sync()
                start = time.perf_counter()
                next_token_loss(self.model, block, reduction="sum")
                self._sync()
                forward = time.perf_counter() - start
        per_window = forward / block.size(0)

        with tempfile.TemporaryDirectory(prefix="regmix-plan-") as folder:
            path = os.path.join(folder, "step.ckpt")
            start = time.perf_counter()
            state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
            torch.save(state, path)
            checkpoint = time.perf_counter() - start
            written = os.path.getsize(path)

        where = f"{torch.get_num_threads()} thread(s)" if self.device.type == "cpu" else "1 GPU"
        if shape.compile:
            where += ", compiled"
        if full:
            how = f"measured: {len(times)} steps after a warm-up, {where}"
        else:
            how = f"scaled from {windows} of {shape.batch_size} windows per step, {where}"
        timing = StepTiming(
            shape.label,
            steady,
            first_step,
            per_window,
            checkpoint,
            import_seconds,
            how,
            self.device.type,
        )
        return timing, shape.flops_per_step / steady, written / max(checkpoint, 1e-6)


if __name__ == "__main__":
    _main()
