"""Commands that train: proxies (several per process), final models, and the fan-in.

They fix the thread count and the granted devices before torch is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from regmix.cli.args import dataclass_from, json_object
from regmix.errors import RegmixError


def add_train_proxy(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train-proxy",
        help="train one small LM per listed mixture, back to back in one process",
        description="Train each run of --runs on its mixture from --mixtures and write "
        "<out>/<run>/losses.parquet (run, step, tokens, domain, loss) and <out>/<run>/run.json. "
        "Checkpoints and the kept results live in <work>/<run>/, outside the outputs, so a "
        "killed run resumes and a finished one is re-published instead of retrained.",
    )
    p.add_argument("--data", type=Path, required=True, help="token shards from `prepare`")
    p.add_argument("--mixtures", type=Path, required=True, help="mixture table (.parquet)")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="runs to train")
    p.add_argument("--settings", type=json_object, default={}, help="TrainConfig fields (JSON)")
    add_tracking_argument(p)
    add_reuse_argument(p)
    p.add_argument("--out", type=Path, required=True, help="folder of per-run outputs")
    p.add_argument("--work", type=Path, required=True, help="folder of per-run checkpoints")
    p.add_argument(
        "--table",
        type=Path,
        help="also write the trained runs' rows of the runs table here, once all are done",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for this process (default 1: one single-threaded worker per core "
        "beats multi-threaded workers sharing cores)",
    )
    add_gpus_argument(p)
    p.set_defaults(handler=_train_proxy)


def add_tracking_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tracking",
        type=json_object,
        default={},
        help="experiment tracker (JSON, the workflow's `tracking` section): backend "
        "none|csv|tensorboard|mlflow|wandb, log_every, dir, group, mlflow {tracking_uri}, "
        "wandb {project, entity, mode}. It never changes what a run computes, nor its "
        "fingerprint: a finished run is not retrained when it changes (default: none)",
    )


def add_reuse_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reuse",
        type=json_object,
        default={},
        help="how far a run trained before is kept after its data changed (JSON, the "
        "workflow's `reuse` section): max_change, the share of a domain's tokens that may "
        "change under a run before it re-trains (default 0: any change)",
    )


def _reuse_policy(args: argparse.Namespace):
    from regmix.training.reuse import ReusePolicy

    return dataclass_from(ReusePolicy, args.reuse, "--reuse")


def _tracking_config(args: argparse.Namespace):
    """The tracker settings, checked (and the backend's package found) before training starts."""
    from regmix.training.tracking import TrackingConfig, check_installed

    tracking = TrackingConfig.from_dict(args.tracking, "--tracking")
    check_installed(tracking.backend)
    return tracking


def add_gpus_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gpus",
        type=int,
        help="GPUs this job was granted (the workflow passes its rule's gpu resource): 0 trains "
        "on CPU even where GPUs exist; k > 0 takes k free GPU ids (locally from a lease shared "
        "by your jobs, under SLURM the job's own). Absent: whatever Lightning finds",
    )


def _train_proxy(args: argparse.Namespace) -> None:
    _use_threads(args.threads)
    # torch and Lightning are imported only if a run must be measured or trained: a job
    # whose every run is kept decides and re-publishes in a fraction of a second.
    from regmix.training.jobs import train_runs
    from regmix.training.train_config import TrainConfig

    config = dataclass_from(TrainConfig, args.settings, "--settings")
    tracking = _tracking_config(args)
    policy = _reuse_policy(args)
    with _granted_devices(args.gpus, config) as config:
        results = train_runs(
            args.data,
            args.mixtures,
            args.runs,
            config,
            args.out,
            args.work,
            tracking=tracking,
            policy=policy,
        )
    if args.table is not None:
        from regmix.workflow.collect import write_batch_table

        # A dropped run (it weights a domain gone from the corpus and must re-train) is left out.
        published = [r.record["run"] for r in results]
        write_batch_table(args.mixtures, published, args.out, args.table)


@contextmanager
def _granted_devices(gpus: int | None, config):
    """Train on exactly the GPUs the job was granted (none: CPU), holding their lease."""
    from dataclasses import replace

    from regmix.training.devices import VISIBLE, gpu_lease

    if gpus is None:
        yield config
    elif gpus == 0:
        os.environ[VISIBLE] = ""  # a CPU job on a GPU machine must not wander onto GPU 0
        yield replace(config, accelerator="cpu")
    else:
        with gpu_lease(gpus):
            import torch

            if torch.cuda.is_available():
                yield replace(config, accelerator="gpu", devices=gpus)
            else:  # e.g. a cluster's GPU count without CUDA here: still one process per device
                print(
                    f"regmix: granted {gpus} GPU(s) but CUDA is not available; training on CPU",
                    file=sys.stderr,
                )
                yield replace(config, accelerator="cpu", devices=gpus)


def _use_threads(threads: int) -> None:
    """Fix the thread count before torch starts its thread pools (its import reads the env),
    whenever torch is imported."""
    if threads < 1:
        raise RegmixError(f"--threads: must be >= 1, got {threads}")
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def add_collect_proxies(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "collect-proxies",
        help="fan the proxy runs in to the runs table",
        description="Either join the batch tables that `train-proxy --table` wrote (--batches), "
        "or read every run of --mixtures from <proxy-dir>/<run>/: one row per run with run, "
        "round, weight.<domain>..., loss.<domain>... (at the last evaluation), status, settings "
        "fingerprint, tokens, params and timings. Runs trained under different settings are "
        "refused.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--batches", type=Path, nargs="+", help="batch tables to join")
    source.add_argument("--mixtures", type=Path, nargs="+", help="mixture tables (.parquet)")
    p.add_argument("--proxy-dir", type=Path, help="train-proxy's --out folder (with --mixtures)")
    p.add_argument("--out", type=Path, required=True, help="runs table (.parquet)")
    p.set_defaults(handler=_collect_proxies)


def _collect_proxies(args: argparse.Namespace) -> None:
    from regmix.workflow.collect import collect_proxies, join_batches

    if args.batches:
        join_batches(args.batches, args.out)
    elif args.proxy_dir is None:
        raise RegmixError("collect-proxies: --mixtures needs --proxy-dir")
    else:
        collect_proxies(args.mixtures, args.proxy_dir, args.out)


def add_train_final(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train-final",
        help="train the final (large) model on one mixture and export it for Hugging Face",
        description="Train --run on its mixture from --mixtures with the final model's "
        "settings and write <out>/<run>/losses.parquet, run.json and hf/ (a LlamaForCausalLM "
        "folder: config.json, model.safetensors, tokenizer.json). Resumes from its checkpoint "
        "in <work>/<run>/ after an interruption.",
    )
    p.add_argument("--data", type=Path, required=True, help="token shards from `prepare`")
    p.add_argument("--mixtures", type=Path, required=True, help="mixture table (.parquet)")
    p.add_argument("--run", required=True, help="the row of --mixtures to train")
    p.add_argument("--settings", type=json_object, default={}, help="TrainConfig fields (JSON)")
    add_tracking_argument(p)
    add_reuse_argument(p)
    p.add_argument("--out", type=Path, required=True, help="folder of per-run outputs")
    p.add_argument("--work", type=Path, required=True, help="folder of per-run checkpoints")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for this process")
    add_gpus_argument(p)
    p.set_defaults(handler=_train_final)


def _train_final(args: argparse.Namespace) -> None:
    from regmix.training.devices import relaunch_under_srun

    # Under SLURM a multi-GPU job starts one task per GPU with srun, as Lightning expects;
    # this returns only in the process that should train.
    relaunch_under_srun(args.gpus or 0, args.threads)
    _use_threads(args.threads)
    from regmix.training.jobs import train_runs
    from regmix.training.train_config import TrainConfig

    config = dataclass_from(TrainConfig, args.settings, "--settings")
    tracking = _tracking_config(args)
    policy = _reuse_policy(args)
    with _granted_devices(args.gpus, config) as config:
        trained = train_runs(
            args.data,
            args.mixtures,
            [args.run],
            config,
            args.out,
            args.work,
            keep_model=True,
            tracking=tracking,
            kind="final",
            policy=policy,
        )
    if not trained:
        raise RegmixError(f"final model {args.run}: dropped (see above); it cannot be trained")
