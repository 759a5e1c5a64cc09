"""`regmix status`: where a running or finished sweep stands, cheap enough for `watch`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_status(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "status",
        help="runs done, running, failed and pending per stage and round, tokens/s, an ETA",
        description="Read the workflow's results/, logs/ and .snakemake/ folders (locally or "
        "under SLURM, while Snakemake runs or after) and print, for each proxy round, the "
        "optimum's proxy check and the final models, how many runs are done, running, queued, "
        "failed and pending; the state of the small stages; tokens/s of the finished and "
        "running runs; each failed run with the last error line of its log; and an estimate "
        "of the training time left. The planned sweep comes from the config as Snakemake sees "
        "it (config/config.yaml, then each --configfile). Reads small files only: "
        "`watch -n 5 regmix status` is fine.",
    )
    p.add_argument(
        "--configfile",
        type=Path,
        nargs="+",
        action="extend",
        default=[],
        metavar="FILE",
        help="the config file(s) given to Snakemake, in the same order",
    )
    p.add_argument(
        "--directory",
        "-d",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="the workflow's working directory, holding results/ and logs/ (default: .)",
    )
    p.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    p.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> None:
    from regmix.errors import RegmixError
    from regmix.observe.status import gather, render
    from regmix.workflow.config import load_config

    if not args.directory.is_dir():
        raise RegmixError(f"--directory {args.directory}: no such folder")
    snapshot = gather(load_config(args.configfile), args.directory)
    print(json.dumps(snapshot.as_json(), indent=1) if args.json else render(snapshot))
