"""Progress lines for a long data job: documents, MB, tokens/s and an ETA, every 30 s."""

from __future__ import annotations

import sys
import time
from typing import TextIO

EVERY_SECONDS = 30.0


class ProgressLog:
    """Call `update` often (it is cheap); it prints at most once per `every` seconds."""

    def __init__(
        self, label: str, total_bytes: int, every: float = EVERY_SECONDS, out: TextIO = sys.stderr
    ) -> None:
        self.label = label
        self.total_bytes = total_bytes
        self.every = every
        self.out = out
        self.started = self.last = time.monotonic()

    def update(self, documents: int, text_bytes: int, tokens: int, bytes_read: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            print(self.line(documents, text_bytes, tokens, bytes_read, now), file=self.out)
            self.out.flush()

    def line(
        self, documents: int, text_bytes: int, tokens: int, bytes_read: int, now: float
    ) -> str:
        seconds = max(now - self.started, 1e-9)
        share = min(bytes_read / self.total_bytes, 1.0) if self.total_bytes else 0.0
        eta = seconds * (1 - share) / share if share > 0 else float("nan")
        return (
            f"{self.label}: {documents:,} documents, {text_bytes / 1e6:,.1f} MB of text "
            f"({text_bytes / 1e6 / seconds:.2f} MB/s), {tokens:,} tokens "
            f"({tokens / seconds:,.0f} tokens/s), {share:.1%} of "
            f"{self.total_bytes / 1e6:,.1f} MB on disk read, ETA {_duration(eta)}"
        )


def _duration(seconds: float) -> str:
    if seconds != seconds:  # nan: nothing read yet
        return "unknown"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
