"""What the console's charts show: a worker's counters sampled into a window of 15 minutes, and
segment and group sizes sampled from Postgres while someone looks at them.

Counters, not rates: the page divides the difference of two samples by their interval, so a
sample lost or late never makes a spike.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.figures import Histogram
from pipeline.runtime.metrics import Observed

WINDOW_S = 15 * 60


def sample(worker: Observed) -> dict[str, Any]:
    """One sample of the worker's counters (plain numbers, JSON-ready)."""
    s = worker.stats
    loops = [worker.figures, *(m.figures for m in worker.sinks)]
    sinks: dict[str, dict[str, float]] = {}
    for m in worker.sinks:
        figures = {f.name: f.value for f in m.sink.figures() if not isinstance(f.value, Histogram)}
        figures["records_total"] = m.records
        figures["writes_total"] = m.flushes
        sinks[m.spec.name] = figures
    return {
        "t": round(time.time(), 3),
        "events_in": s.events_in,
        "redeliveries": s.redeliveries,
        "dead_letters": s.dead_letters,
        "documents_out": dict(s.documents_by_collection),
        "lag": {f.name: sum(f.current_lag().values()) for f in loops},
        "sinks": sinks,
        "kinds": {m.spec.name: getattr(m.spec, "kind", "") for m in worker.sinks},
        "group_changes": s.group_changes,
        "timers_fired": s.timers_fired,
    }


class Window:
    """Samples every `every` seconds, the last `WINDOW_S` seconds of them."""

    def __init__(self, take: Callable[[], Any], every: float) -> None:
        self.take = take
        self.every = every
        self.samples: deque[Any] = deque(maxlen=max(2, int(WINDOW_S / every)))

    def add(self) -> None:
        self.samples.append(self.take())

    def since(self, t: float) -> list[Any]:
        return [s for s in self.samples if s["t"] > t]

    async def run(self) -> None:
        while True:
            self.add()
            await asyncio.sleep(self.every)


class Lazy:
    """A sampler of something costly (a query), running only while it is asked for: it stops
    `idle` seconds after the last request and starts again at the next."""

    def __init__(self, take: Callable[[], Any], every: float, idle: float = WINDOW_S) -> None:
        self.take = take
        self.every = every
        self.idle = idle
        self.samples: deque[dict[str, Any]] = deque(maxlen=max(2, int(WINDOW_S / every)))
        self._asked = 0.0
        self._task: asyncio.Task[None] | None = None

    async def get(self) -> Sequence[dict[str, Any]]:
        """The samples so far; the first request waits for the first sample."""
        self._asked = time.monotonic()
        if self._task is None or self._task.done():
            self.samples.append(await self.take())
            self._task = asyncio.create_task(self._run(), name="console-sampler")
        return list(self.samples)

    async def _run(self) -> None:
        while time.monotonic() - self._asked < self.idle:
            await asyncio.sleep(self.every)
            with contextlib.suppress(Exception):  # Postgres away: the next round tries again
                self.samples.append(await self.take())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
