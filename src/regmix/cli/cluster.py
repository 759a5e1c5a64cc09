"""Commands for running on a cluster."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_install_profile(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "install-profile",
        help="install a Snakemake profile (slurm, local) where `snakemake --profile NAME` finds it",
        description="Copy one of regmix's Snakemake profiles to ~/.config/snakemake/NAME (or "
        "--dest), so that `snakemake --profile NAME` works from any folder; Snakemake does not "
        "look in the repository's profiles/. Edit the installed copy for your cluster "
        "(partition, account). An identical copy is left as it is; a different one is replaced "
        "only with --force.",
    )
    p.add_argument("name", help="profile to install: slurm or local")
    p.add_argument(
        "--dest", type=Path, help="folder to install to (default: ~/.config/snakemake/NAME)"
    )
    p.add_argument("--force", action="store_true", help="replace a different profile at --dest")
    p.set_defaults(handler=_install_profile)


def _install_profile(args: argparse.Namespace) -> None:
    from regmix.workflow.profiles import default_destination, install_profile

    dest = install_profile(args.name, args.dest, args.force)
    use = args.name if dest == default_destination(args.name) else dest
    print(f"profile {args.name!r} is at {dest}; run: snakemake --profile {use}")
