"""Argument types and helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json

from regmix.errors import RegmixError


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def name_list(text: str) -> list[str] | None:
    names = [name.strip() for name in text.split(",") if name.strip()]
    return names or None


def threads_argument(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def dataclass_from(cls: type, values: dict, source: str):
    """Build a config dataclass, naming the unknown key instead of raising a TypeError."""
    fields = cls.__dataclass_fields__
    unknown = sorted(set(values) - set(fields))
    if unknown:
        expected = ", ".join(sorted(fields))
        raise RegmixError(f"{source}: unknown key {unknown[0]!r} (expected one of: {expected})")
    return cls(**values)


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads", type=threads_argument, help="threads (default: all available cores)"
    )
