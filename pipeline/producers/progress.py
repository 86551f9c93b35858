"""A progress line for long-running commands (`segflow ingest`, `segflow generate`)."""

from __future__ import annotations

import time
from typing import TextIO


class Progress:
    """One line of progress on a terminal's stderr, redrawn at most 4 times a second.

    Silent when the stream is not a terminal, so logs and pipes only get the final summary.
    """

    def __init__(self, stream: TextIO, *, total: float | None = None, unit: str = "") -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.total = total
        self.unit = unit
        self._drawn_at = 0.0
        self._shown = False
        self.restart()

    def restart(self) -> None:
        """Measure the rate from now on (when the real work starts, after connecting)."""
        self.started = time.monotonic()

    def rate(self, done: int) -> float:
        elapsed = time.monotonic() - self.started
        return done / elapsed if elapsed > 0 else 0.0

    def update(self, done: int, extra: str = "") -> None:
        now = time.monotonic()
        if not self.enabled or now - self._drawn_at < 0.25:
            return
        self._drawn_at = now
        bar = ""
        if self.total:
            share = min(1.0, done / self.total)
            filled = int(share * 30)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {share:4.0%} "
        line = f"{bar}{done:,} {self.unit}, {self.rate(done):,.0f}/s{extra}"
        self.stream.write(f"\r\x1b[K{line}")
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Erase the progress line (before printing something else, or at the end)."""
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False
