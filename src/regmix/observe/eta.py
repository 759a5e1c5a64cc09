"""How long a sweep has left: an estimate from the pace of the runs that have finished.

The training dominates a sweep, so the estimate counts training only (the small stages
between rounds and after them take seconds to minutes). It follows the workflow's order:

- proxy rounds run one after another (round r's mixtures need the runs of rounds < r); the
  batches of a round run side by side, each its runs back to back, as many at once as a local
  Snakemake's cores allow (its log says how many it was given), or on a cluster as many as
  run now (if none, as many as the finished runs' time intervals show at once);
- then the final models and the optimum's proxy check run side by side.

A proxy takes the median wall time of the finished proxies (run.json's `wall_seconds`); a
final model the median of the finished finals or, before any has finished, the proxy time
scaled by the ratio of training FLOPs (`ModelConfig.flops_per_token` × tokens). A running run
counts for what its last progress line says is left, else half. Nothing finished: unknown.
"""

from __future__ import annotations

import heapq
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from regmix.observe.run_state import DONE, RUNNING, Run
from regmix.training.train_config import TrainConfig
from regmix.workflow import sweep as layout
from regmix.workflow.workdir import SnakemakeLog

BYTE_VOCAB = 257
"""The byte tokenizer's vocabulary (256 bytes and EOS), when no shard says otherwise."""


def estimate(runs: list[Run], config: dict, root: Path, snakemake: SnakemakeLog) -> dict:
    """Seconds of training left (None: unknown), how many runs are left, and what the
    seconds rest on."""
    remaining = sum(r.state != DONE for r in runs)
    if not remaining:
        return {"seconds": 0, "runs_left": 0, "basis": "every run has finished"}
    proxy = typical_seconds(r for r in runs if r.stage in ("proxy", "optimum"))
    if proxy is None:
        return {"seconds": None, "runs_left": remaining, "basis": "no proxy run has finished yet"}
    final = typical_seconds(r for r in runs if r.stage == "final")
    final_from = "measured"
    if final is None:
        ratio = flops_ratio(config, vocabulary(config, root))
        final, final_from = proxy * ratio, f"a proxy's time x {ratio:.2g}, their FLOPs' ratio"
    proxies = [r for r in runs if r.stage == "proxy"]
    proxy_slots = local_slots(config["proxy"], snakemake) or seen_slots(proxies, snakemake) or 1
    threads = config["proxy"]["resources"]["threads"] / config["final"]["resources"]["threads"]
    final_slots = (
        local_slots(config["final"], snakemake)
        or seen_slots([r for r in runs if r.stage != "proxy"], snakemake)
        or max(1, round(proxy_slots * threads))
    )

    seconds = 0.0
    for number in sorted({r.round for r in runs if r.stage == "proxy"}):
        batches = job_seconds((r for r in runs if r.stage == "proxy" and r.round == number), proxy)
        seconds += makespan(batches, proxy_slots)
    last = [r for r in runs if r.stage != "proxy"]
    per_run = {"optimum": proxy, "final": final}
    seconds += makespan(
        [
            sum(left(r, per_run[r.stage]) for r in last if r.job == job)
            for job in {r.job for r in last}
        ],
        final_slots,
    )
    basis = (
        f"proxies {proxy:.0f} s each, {proxy_slots} at a time; finals {final:.0f} s each "
        f"({final_from}), {final_slots} at a time"
    )
    return {
        "seconds": round(seconds),
        "runs_left": remaining,
        "basis": basis,
        "proxy_seconds": proxy,
        "final_seconds": final,
        "final_from": final_from,
        "proxy_slots": proxy_slots,
        "final_slots": final_slots,
    }


def typical_seconds(runs: Iterable[Run]) -> float | None:
    """Median wall seconds of the finished runs that trained to the end (diverged ones stop
    early and would make the rest look quick)."""
    times = [r.wall_seconds for r in runs if r.state == DONE and r.outcome == "ok"]
    times = [t for t in times if t]
    return statistics.median(times) if times else None


def left(run: Run, seconds: float) -> float:
    if run.state == DONE:
        return 0.0
    if run.state == RUNNING:
        return seconds * (1 - run.progress) if run.progress is not None else seconds / 2
    return seconds


def job_seconds(runs: Iterable[Run], seconds: float) -> list[float]:
    """Seconds left per job, its runs trained back to back."""
    jobs: dict[str, float] = defaultdict(float)
    for run in runs:
        jobs[run.job] += left(run, seconds)
    return list(jobs.values())


def makespan(jobs: list[float], slots: int) -> float:
    """When the last job ends, longest first onto the least loaded of `slots` workers."""
    workers = [0.0] * max(1, slots)
    for seconds in sorted(jobs, reverse=True):
        heapq.heapreplace(workers, workers[0] + seconds)
    return max(workers)


def local_slots(section: dict, snakemake: SnakemakeLog) -> int | None:
    """Jobs of a section a local Snakemake runs at once: its cores over a job's threads (and
    its GPUs over a job's); None under a cluster executor or before Snakemake has run."""
    if snakemake.cores is None:
        return None
    need = section["resources"]
    slots = snakemake.cores // min(need["threads"], snakemake.cores)  # it scales threads down
    if need["gpu"] and "gpu" in snakemake.resources:
        slots = min(slots, snakemake.resources["gpu"] // need["gpu"])
    return max(1, slots)


def seen_slots(runs: list[Run], snakemake: SnakemakeLog) -> int | None:
    """How many jobs run at once where a cluster's queue decides: as many as run now; when
    none does, as many as ran at once in a round (its finished runs' busy time over the span
    from the first start to the last end); at most Snakemake's `--jobs`. None if unseen.

    Runs re-published from kept results all finish at once and would look parallel, so what
    runs now counts first."""
    slots = len({r.job for r in runs if r.state == RUNNING})
    groups: dict[int | None, list[Run]] = defaultdict(list)
    for run in runs:
        if run.state == DONE and run.wall_seconds and run.finished_at:
            groups[run.round].append(run)
    for group in groups.values() if not slots else ():
        start = min(r.finished_at - r.wall_seconds for r in group)
        span = max(r.finished_at for r in group) - start
        if len(group) > 1 and span > 0:
            at_once = sum(r.wall_seconds for r in group) / span
            slots = max(slots, min(round(at_once), len({r.job for r in group})))
    return min(slots, snakemake.nodes or slots) or None


def flops_ratio(config: dict, vocab: int) -> float:
    """Training FLOPs of one final model over those of one proxy."""
    return run_flops(config["final"], vocab) / run_flops(config["proxy"], vocab)


def run_flops(section: dict, vocab: int) -> float:
    fields = TrainConfig.__dataclass_fields__
    train = TrainConfig(**{k: v for k, v in section.items() if k in fields})
    tokens = train.steps * train.tokens_per_step
    return train.model_config(vocab).flops_per_token(train.seq_len) * tokens


def vocabulary(config: dict, root: Path) -> int:
    """The vocabulary the models are built with: the shards' sidecars say it once `prepare`
    has run; before, `bpe:<n>` says n and the byte tokenizer has 257."""
    for sidecar in sorted((root / layout.RESULTS / "data" / "train").glob("*.json")):
        try:
            return int(json.loads(sidecar.read_text())["vocab_size"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    tokenizer = str(config["corpus"]["tokenizer"])
    if tokenizer.startswith("bpe:") and tokenizer[4:].isdigit():
        return int(tokenizer[4:])
    return BYTE_VOCAB
