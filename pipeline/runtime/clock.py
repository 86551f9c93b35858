"""The time the profile stages evaluate groups at: the wall clock, or a test's (SPEC 8.7).

A `Clock` is a callable returning nanoseconds since the epoch. The derive loop reads it once per
batch and once per timer pass; `segflow test` runs the worker in its own process with a
`TestClock` that only `clock:` and `advance:` steps move, so timers fire on `advance` exactly as
they would when the wall clock passed the same instant.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]

wall_clock: Clock = time.time_ns


class TestClock:
    """A clock that stands still until set."""

    __test__ = False

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns

    def set(self, now_ns: int) -> None:
        self.now_ns = now_ns
