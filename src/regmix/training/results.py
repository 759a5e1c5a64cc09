"""A run's results as a training job keeps and publishes them: its loss table and its record
(run.json), and the model it keeps (a proxy's final weights, a final model's Hugging Face
export). Free of torch, so that a job whose runs are all kept never imports it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from regmix.files import read_table, write_json, write_table
from regmix.search.runs import RUN_LOSSES, RUN_RECORD

MODEL = "hf"
"""A kept model's folder (Hugging Face LlamaForCausalLM format) beside a run's results."""


@dataclass
class RunResult:
    """What one run produced: its loss table and its record (run.json)."""

    losses: pd.DataFrame
    record: dict = field(default_factory=dict)
    reused: bool = False
    """True when the run had finished before and its kept results were returned."""
    folder: Path | None = None
    """The work folder holding the kept results (and the exported model, if kept)."""
    is_global_zero: bool = True
    """False in the other processes of a multi-device run: only rank 0 writes outputs."""


def save_result(result: RunResult, folder: str | os.PathLike) -> None:
    folder = Path(folder)
    write_table(result.losses, folder / RUN_LOSSES)
    write_json(result.record, folder / RUN_RECORD)  # written last: its presence marks "finished"


def load_result(folder: str | os.PathLike, is_global_zero: bool = True) -> RunResult | None:
    """A finished run's results, or None if the run has not finished."""
    folder = Path(folder)
    if not (folder / RUN_RECORD).is_file() or not (folder / RUN_LOSSES).is_file():
        return None
    record = json.loads((folder / RUN_RECORD).read_text())
    return RunResult(
        read_table(folder / RUN_LOSSES),
        record,
        reused=True,
        folder=folder,
        is_global_zero=is_global_zero,
    )


def publish(result: RunResult, out_dir: str | os.PathLike) -> None:
    """Write a run's declared outputs (`<out_dir>/losses.parquet`, `run.json`, and the kept
    model in `<out_dir>/hf/`) atomically: the model folder is copied aside and renamed."""
    out_dir = Path(out_dir)
    kept = result.folder / MODEL if result.folder is not None else None
    if kept is not None and kept.is_dir():
        staging = out_dir / f".{MODEL}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(kept, staging)
        shutil.rmtree(out_dir / MODEL, ignore_errors=True)
        os.replace(staging, out_dir / MODEL)
    save_result(result, out_dir)
