"""Domain names as identifiers: a corpus's own names (`Pile-CC`, `Wikipedia (en)`) become
`pile_cc` and `wikipedia_en`, which column names (`weight.pile_cc`), file names and the
command line can carry. Config keys may use either spelling."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from regmix.errors import RegmixError

_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def normalise(name: str) -> str:
    """`Pile-CC` → `pile_cc`, `Wikipedia (en)` → `wikipedia_en`, `Gutenberg (PG-19)` →
    `gutenberg_pg_19`; an identifier of lowercase letters, digits and '_' ('' if none)."""
    ident = _NOT_ALNUM.sub("_", name.lower()).strip("_")
    return f"d_{ident}" if ident[:1].isdigit() else ident


def merge_names(mappings: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """Union of raw → identifier mappings; two raw names on one identifier is an error, since
    their documents would silently share a domain."""
    merged: dict[str, str] = {}
    owner: dict[str, str] = {}
    for mapping in mappings:
        for raw, ident in mapping.items():
            if owner.setdefault(ident, raw) != raw:
                raise RegmixError(
                    f"domains {owner[ident]!r} and {raw!r} both normalise to {ident!r}; "
                    "rename one in the corpus or leave one out with corpus.domains"
                )
            merged[raw] = ident
    return dict(sorted(merged.items()))


def resolve(name: str, normalised: bool) -> str:
    """A domain named in the config, as the prepared data names it."""
    return normalise(name) if normalised else name


def resolve_target(target: str, normalised: bool) -> str:
    """`target` with every domain it names resolved: `Wikipedia (en)` or
    `Wikipedia (en):0.5,Pile-CC:0.5` → `wikipedia_en`, `wikipedia_en:0.5,pile_cc:0.5`."""
    if not normalised or target.strip() == "mean":
        return target
    parts = []
    for part in target.split(","):
        name, colon, weight = part.rpartition(":")
        if not colon or not _is_number(weight):
            name, colon, weight = part, "", ""
        parts.append(f"{normalise(name.strip().removeprefix('loss.'))}{colon}{weight.strip()}")
    return ",".join(parts)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
