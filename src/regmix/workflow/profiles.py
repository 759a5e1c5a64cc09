"""The Snakemake profiles that ship with regmix, and installing one where Snakemake finds it.

`snakemake --profile slurm` looks for a folder `slurm` in the working directory,
in `~/.config/snakemake/` and in `/etc/xdg/snakemake/`, never in the repository's `profiles/`.
`install_profile` copies one there, so that the command works as users type it.

The canonical copies live in the repository's `profiles/`; the wheel carries them as
`regmix/_profiles/` (see pyproject.toml). A source checkout (editable install) reads
`profiles/` directly, so an edit there is what gets installed.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
from pathlib import Path

from regmix.errors import RegmixError

_PACKAGE = Path(__file__).resolve().parents[1]


def profile_roots() -> list[Path]:
    """Where profiles are looked for: in the installed package, then in the source checkout."""
    return [_PACKAGE / "_profiles", _PACKAGE.parent.parent / "profiles"]


WORKFLOW_PROFILE = "default"


def available_profiles() -> dict[str, Path]:
    """Profile name → folder holding its config.yaml (the first root that has the name wins)."""
    found: dict[str, Path] = {}
    for root in profile_roots():
        if root.is_dir():
            for folder in sorted(root.iterdir()):
                # `default` is the workflow profile Snakemake applies itself: not for installing.
                if folder.name != WORKFLOW_PROFILE and (folder / "config.yaml").is_file():
                    found.setdefault(folder.name, folder)
    return found


def profile_source(name: str) -> Path:
    profiles = available_profiles()
    if name not in profiles:
        known = ", ".join(profiles) or "none found"
        raise RegmixError(f"profile {name!r}: no such profile (available: {known})")
    return profiles[name]


def default_destination(name: str) -> Path:
    """`~/.config/snakemake/<name>`, computed as Snakemake computes it (XDG_CONFIG_HOME counts)."""
    from platformdirs import user_config_dir

    return Path(user_config_dir("snakemake", "snakemake")) / name


def install_profile(name: str, dest: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Copy profile `name` to `dest` (default: where `snakemake --profile <name>` finds it).

    Installing over an identical copy changes nothing; over a different one (the user's own
    edits, or another profile of that name) it refuses unless `force`, which replaces the
    folder as a whole. The new folder is assembled beside the old one and swapped in, so an
    interrupted install never leaves a half-written profile.
    """
    source = profile_source(name)
    dest = Path(dest).expanduser() if dest is not None else default_destination(name)
    if dest.exists() and not dest.is_dir():
        raise RegmixError(f"{dest}: exists and is not a folder (expected a Snakemake profile)")
    if dest.is_dir() and same_files(source, dest):
        return dest
    if dest.is_dir() and not force:
        raise RegmixError(
            f"{dest}: a different profile is installed there; pass --force to replace it "
            f"with regmix's {name!r} profile"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        shutil.copytree(source, staged, dirs_exist_ok=True)
        _swap_in(staged, dest)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return dest


def same_files(a: Path, b: Path) -> bool:
    """Both folders hold the same files with the same bytes."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def _swap_in(staged: Path, dest: Path) -> None:
    if not dest.exists():
        staged.rename(dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
    old.rmdir()
    dest.rename(old)
    try:
        staged.rename(dest)
    except OSError:
        old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
