"""How far the derive loop got, so that `segflow test` waits exactly until input is processed.

The derive loop (`pipeline.runtime.derive`) records positions here after each commit and on
assignment; `caught_up` is the barrier `pipeline.tools.testing` awaits instead of sleeping.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiokafka import TopicPartition


@dataclass
class Progress:
    """How far each stage got; lets `segflow test` wait exactly until input is processed."""

    shuffled: dict[TopicPartition, int] = field(default_factory=dict)
    shuffle_acked: dict[TopicPartition, int] = field(default_factory=dict)
    source_acked: dict[TopicPartition, int] = field(default_factory=dict)
    """Ends of what the loop itself wrote into source topics (one stage feeding the next)."""
    derived: dict[TopicPartition, int] = field(default_factory=dict)
    timers_through: int = 0
    """The clock reading (ns) by which every due timer has fired and committed."""
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with self.changed:
            await self.changed.wait_for(predicate)

    def _reached(
        self, shuffled: Mapping[TopicPartition, int], sources: Mapping[TopicPartition, int]
    ) -> bool:
        return all(self.derived.get(tp, 0) >= o for tp, o in shuffled.items()) and all(
            self.shuffled.get(tp, 0) >= o for tp, o in sources.items()
        )

    async def caught_up(self, targets: Mapping[TopicPartition, int]) -> None:
        """Wait until every source record before `targets` is fully processed and published:
        first routed (source positions), then derived up to what routing put in the shuffle
        topics by then; and again for what derivations wrote into other derivations' sources
        (the profile stages), until a round adds nothing."""
        await self.wait_for(lambda: all(self.shuffled.get(tp, 0) >= o for tp, o in targets.items()))
        while True:
            shuffled, sources = dict(self.shuffle_acked), dict(self.source_acked)
            await self.wait_for(functools.partial(self._reached, shuffled, sources))
            # Outputs are acknowledged (and noted here) before positions move past their input.
            if shuffled == self.shuffle_acked and sources == self.source_acked:
                return
