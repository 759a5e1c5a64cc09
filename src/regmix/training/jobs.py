"""A training job: several runs back to back in one process (RegMix's proxies, `proxies_per_job`;
a final model is a job of one), each kept, measured again or trained as regmix.training.reuse
decides, and published.

A run's results are kept in its work folder (`<work>/<run>/<fingerprint>/`: run.json,
losses.parquet, and its final weights or Hugging Face export), outside the workflow's declared
outputs, and copied to `<out>/<run>/` when the job publishes it. A job whose every run is kept
imports neither torch nor Lightning: it decides, copies and is done in a fraction of a second.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from regmix.data.content import Contents, read_contents
from regmix.errors import RegmixError
from regmix.files import read_table
from regmix.search.mixtures import WEIGHT, check_weights, mixture_domains
from regmix.search.runs import RUN_LOSSES, STATUS_OK
from regmix.training.results import RunResult, load_result, publish, save_result
from regmix.training.reuse import (
    DROPPED,
    KEEP,
    REEVALUATE,
    Decision,
    Kept,
    ReusePolicy,
    corpus_fingerprint,
    decide,
    kept_run,
)
from regmix.training.train_config import TrainConfig


def read_mixture_weights(mixtures_path: str | os.PathLike, runs: Sequence[str]) -> dict[str, dict]:
    """Each requested run's mixture, {run: {domain: weight}}, from a mixture table."""
    table = read_table(mixtures_path, ["run"])
    check_weights(table, str(mixtures_path))
    table = table.set_index(table["run"].astype(str))
    missing = [r for r in runs if r not in table.index]
    if missing:
        raise RegmixError(f"{mixtures_path}: no run named {missing[0]!r}")
    domains = mixture_domains(table)
    return {run: {d: float(table.at[run, WEIGHT + d]) for d in domains} for run in runs}


def train_runs(
    data_dir: str | os.PathLike,
    mixtures_path: str | os.PathLike,
    runs: Sequence[str],
    config: TrainConfig,
    out_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    callbacks: Sequence = (),
    keep_model: bool = False,
    tracking=None,
    kind: str = "proxy",
    policy: ReusePolicy | None = None,
) -> list[RunResult]:
    """Decide, then keep, measure again or train each run, and publish it to `<out_dir>/<run>/`.

    A diverged run is recorded and the job goes on with the next; a dropped run (it must
    re-train but weights a domain gone from the corpus) is named and left out. `keep_model`
    also exports each trained model for Hugging Face; each trained run reports to `tracking`'s
    tracker as a `kind` run.
    """
    if len(set(runs)) != len(runs):
        raise RegmixError("--runs: a run is listed twice")
    policy = policy or ReusePolicy()
    mixtures = read_mixture_weights(mixtures_path, runs)
    contents = read_contents(data_dir)
    results = []
    for run in runs:
        kept = kept_run(Path(work_dir) / run)
        settings = asdict(config)
        decision = decide(
            kept.record if kept else None, settings, mixtures[run], contents, policy, keep_model
        )
        if decision.action == DROPPED:
            print(f"{run}: dropped: {'; '.join(decision.reasons)}", file=sys.stderr, flush=True)
            continue
        if decision.action == KEEP:
            result = load_result(kept.folder, is_global_zero=process_rank() == 0)
        elif decision.action == REEVALUATE:
            result = reevaluate(kept, decision, data_dir, config, contents)
        else:
            from regmix.training.train import train_mixture

            result = train_mixture(
                data_dir,
                run,
                mixtures[run],
                config,
                Path(work_dir) / run,
                callbacks,
                keep_model,
                tracking,
                kind,
                contents,
            )
        if result.is_global_zero:
            result.record = with_decision(result.record, decision, contents)
            publish(result, Path(out_dir) / run)
            print(summary_line(result, decision), file=sys.stderr, flush=True)
        results.append(result)
    return results


def process_rank() -> int:
    """This process's rank in a multi-process run, from the variables Lightning reads (0 when
    alone), known before torch is imported."""
    for variable in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if variable in os.environ:
            return int(os.environ[variable])
    return 0


def reevaluate(
    kept: Kept, decision: Decision, data_dir: str | os.PathLike, config: TrainConfig, contents
) -> RunResult:
    """Measure a kept run on the validation domains whose content is new or changed, from its
    final weights; its kept losses and record are updated in place."""
    record = dict(kept.record)
    losses = read_table(kept.folder / RUN_LOSSES)
    if process_rank() != 0:  # one process measures and writes; the others only follow
        return RunResult(losses, record, reused=True, folder=kept.folder, is_global_zero=False)
    if record["status"] == STATUS_OK:
        from regmix.training.validation import measure_kept, replace_last_losses

        measured = measure_kept(kept.folder, data_dir, decision.measure, config)
        tokens = int(record["steps"]) * config.tokens_per_step
        losses = replace_last_losses(losses, measured, int(record["steps"]), tokens)
    # A diverged run's weights measure nothing: its record takes the new contents all the same.
    record["data"] = {
        **record["data"],
        "valid": {
            **record["data"]["valid"],
            **{d: contents["valid"][d].to_record() for d in decision.measure},
        },
    }
    result = RunResult(losses, record, reused=True, folder=kept.folder)
    save_result(result, kept.folder)
    return result


def with_decision(record: Mapping, decision: Decision, contents: Contents) -> dict:
    """A run's published record: its kept record and what this job decided about it."""
    return {
        **record,
        "decision": decision.category,
        "reasons": list(decision.reasons),
        "stale_domains": dict(decision.stale),
        "earlier_corpus": record.get("corpus") != corpus_fingerprint(contents),
    }


def summary_line(result: RunResult, decision: Decision) -> str:
    r = result.record
    if result.reused:
        why = f": {'; '.join(decision.reasons)}" if decision.reasons else ""
        stale = ", ".join(f"{d} {c:.1%}" for d, c in decision.stale)
        within = f" (within reuse.max_change: {stale})" if stale else ""
        return f"{r['run']}: {r['status']}, {decision.category}{within}{why}; results re-published"
    speed = f"{r['tokens_per_s']:,.0f} tokens/s" if r.get("tokens_per_s") else "no steps"
    return (
        f"{r['run']}: {r['status']}, {r['steps']} steps, {r['tokens']:,} tokens, {speed}, "
        f"{r['wall_seconds']:.1f} s"
    )
