"""`regmix plan`: what the configured workflow will cost, before anything runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from regmix.cli.args import threads_argument


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def add_plan(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "plan",
        help="print what the configured workflow will cost: jobs, tokens, FLOPs, disk, time",
        description="Reads the config as Snakemake would (config/config.yaml, then each "
        "--configfile merged over it) and prints the jobs per stage; each proxy and final "
        "run's parameters, tokens and training FLOPs; disk for token shards, checkpoints "
        "(their peak) and exported models; and an estimate of the wall time with --cores on "
        "this machine: a few real training steps of the proxy and final shapes are timed "
        "at the rules' thread counts (about ten seconds, half of it importing torch and "
        "Lightning as every training job does) and the jobs are scheduled in a simulation. "
        "Other processes on the cores while it times inflate the estimate. Nothing is "
        "written or cached.",
    )
    p.add_argument(
        "--configfile",
        type=Path,
        nargs="+",
        default=[],
        metavar="FILE",
        help="config files merged over config/config.yaml, as snakemake --configfile",
    )
    p.add_argument(
        "--directory",
        type=Path,
        default=Path("."),
        help="the workflow's working directory, where results/ is (default: here); prepared "
        "data there makes token counts exact",
    )
    p.add_argument(
        "--cores",
        type=threads_argument,
        help="cores Snakemake may use, as snakemake --cores (default: all of this machine's)",
    )
    p.add_argument(
        "--gpu-tokens-per-s",
        type=_positive_float,
        metavar="X",
        help="also print the GPU-hours of training at X training tokens/s per GPU",
    )
    p.add_argument(
        "--no-measure",
        action="store_true",
        help="time no training steps: jobs, tokens, FLOPs and disk only",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(handler=_plan)


def _plan(args: argparse.Namespace) -> None:
    from regmix.observe.plan import plan_workflow
    from regmix.observe.plan_report import plan_dict, render_text

    plan = plan_workflow(
        args.configfile,
        args.directory,
        cores=args.cores,
        gpu_tokens_per_s=args.gpu_tokens_per_s,
        measure=not args.no_measure,
    )
    print(json.dumps(plan_dict(plan), indent=2) if args.json else render_text(plan))
