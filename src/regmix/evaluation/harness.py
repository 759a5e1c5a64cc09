"""Run lm-eval-harness on an exported model folder and keep what it says.

lm-eval is called through its Python API (`simple_evaluate` with a `TaskManager` over the
include paths), with its `hf` model on the folder exactly as exported: nothing is added by hand.
The job runs offline: every task's data is local or already cached (preflight checked it). It
runs on the GPU it leases as training jobs do (regmix.training.devices), or on the CPU.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from regmix.errors import RegmixError
from regmix.evaluation.tasks import select_tasks
from regmix.files import atomic_path, write_json

RESULTS = "results.json"
SAMPLES = "samples.jsonl"


@dataclass(frozen=True)
class EvalSettings:
    """The `evaluation` section's fields that change a score (all of them re-run evaluation)."""

    tasks: tuple[str, ...] = ()
    """lm-eval task/group/tag names and paths of local task YAML files or folders."""
    num_fewshot: int | None = None
    """Examples shown before each question (None: each task's own default)."""
    limit: int | None = None
    """At most this many examples per task (None: all of them)."""
    batch_size: int = 16
    """Requests scored together."""
    seed: int = 0
    """lm-eval's seeds (few-shot sampling, any sampling in generation)."""


@contextmanager
def granted_device(gpus: int) -> Iterator[str]:
    """The torch device an evaluation job scores on, held for the block: with `gpus` >= 1 the
    GPU it takes from the lease training jobs share (so jobs on one machine never share a GPU:
    Snakemake's `--resources gpu=N` only counts), else the CPU, with every GPU hidden.

    Enter it before anything initialises CUDA (lm-eval's import does not).
    """
    from regmix.training.devices import VISIBLE, gpu_lease

    if gpus == 0:
        os.environ[VISIBLE] = ""  # a CPU job on a GPU machine must not wander onto GPU 0
        yield "cpu"
        return
    with gpu_lease(gpus) as ids:
        import torch

        if torch.cuda.is_available():
            yield "cuda"  # the first (only) GPU left visible: the leased one
        else:  # a cluster's GPU count without CUDA here: score on the CPU, and say so
            granted = ",".join(ids)
            print(
                f"regmix: granted GPU {granted} but CUDA is not available; scoring on CPU",
                file=sys.stderr,
            )
            yield "cpu"


def evaluate_model(
    model_dir: str | os.PathLike,
    settings: EvalSettings,
    out_dir: str | os.PathLike,
    threads: int | None = None,
    device: str | None = None,
) -> dict:
    """Score one model folder on the tasks; write lm-eval's results (`results.json`) and its
    per-example records (`samples.jsonl`, one line per task and example) under `out_dir`."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager

    if threads:
        torch.set_num_threads(threads)
    if not settings.tasks:
        raise RegmixError("evaluation.tasks: no task to run")
    selection = select_tasks(list(settings.tasks))
    manager = TaskManager(
        include_path=selection.include_paths or None, include_defaults=selection.defaults
    )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(Path(model_dir).resolve()), "dtype": "float32"},
        tasks=selection.names,
        num_fewshot=settings.num_fewshot,
        limit=settings.limit,
        batch_size=settings.batch_size,
        device=device,
        task_manager=manager,
        log_samples=True,
        bootstrap_iters=1000,
        random_seed=settings.seed,
        numpy_random_seed=settings.seed,
        torch_random_seed=settings.seed,
        fewshot_random_seed=settings.seed,
    )
    if results is None:  # only on a non-zero rank of a distributed run
        return {}
    write_results(results, Path(out_dir))
    return results


def write_results(results: dict, out_dir: Path) -> None:
    """lm-eval's results without the samples, then the samples as JSON lines (written first:
    results.json marks a finished evaluation)."""
    from lm_eval.utils import handle_non_serializable

    out_dir.mkdir(parents=True, exist_ok=True)
    samples = results.pop("samples", {})
    with atomic_path(out_dir / SAMPLES) as tmp, tmp.open("w") as f:
        for task, records in samples.items():
            for record in records:
                line = {"task": task, **record}
                f.write(json.dumps(line, default=handle_non_serializable) + "\n")
    clean = json.loads(json.dumps(results, default=handle_non_serializable))
    write_json(clean, out_dir / RESULTS)
