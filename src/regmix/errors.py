"""The one exception type that reaches users as a single line instead of a traceback, and the
`did you mean` its messages offer."""

from __future__ import annotations

import difflib
from collections.abc import Mapping


class RegmixError(Exception):
    """Bad input or configuration: the message names the file/key and what was expected."""


def suggestion(name: str, choices: list[str], spelling: Mapping[str, str] | None = None) -> str:
    """`; did you mean 'x'?` naming the closest of `choices` (as the corpus spells them:
    `spelling` maps an identifier to the corpus's own name), or nothing."""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    shown = [repr((spelling or {}).get(c, c)) for c in close]
    return f"; did you mean {' or '.join(shown)}?" if close else ""
