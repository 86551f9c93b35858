"""The generators' clock: the wall clock, or for seeded runs a simulated one, so the same seed
gives the same timestamps byte for byte.

The simulated clock starts at `SIMULATED_START` and advances 1/rate per event (rate 0 counts as
100/s): event i happened at `SIMULATED_START + i/rate`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

SIMULATED_START = datetime(2024, 1, 1, tzinfo=UTC)
"""Where the simulated clock of seeded runs starts."""


class Clock:
    """When event `index` of a generated stream happened."""

    def __init__(self, *, simulated: bool, rate: float) -> None:
        self.simulated = simulated
        self.step_us = 1e6 / (rate if rate > 0 else 100.0)

    def at(self, index: int) -> datetime:
        if self.simulated:
            return SIMULATED_START + timedelta(microseconds=round(index * self.step_us))
        return datetime.now(UTC)
