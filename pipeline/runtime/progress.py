"""How far the derive loop got, so that `segflow test` waits exactly until input is processed.

The derive loop (`pipeline.runtime.derive`) records positions here after each commit and on
assignment; `caught_up` is the barrier `pipeline.tools.testing` awaits instead of sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiokafka import TopicPartition


@dataclass
class Progress:
    """How far each stage got; lets `segflow test` wait exactly until input is processed."""

    shuffled: dict[TopicPartition, int] = field(default_factory=dict)
    shuffle_acked: dict[TopicPartition, int] = field(default_factory=dict)
    derived: dict[TopicPartition, int] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with self.changed:
            await self.changed.wait_for(predicate)

    async def caught_up(self, targets: Mapping[TopicPartition, int]) -> None:
        """Wait until every source record before `targets` is fully processed and published:
        first routed (source positions), then derived up to what routing put in the shuffle
        topics by then."""
        await self.wait_for(lambda: all(self.shuffled.get(tp, 0) >= o for tp, o in targets.items()))
        shuffled = dict(self.shuffle_acked)
        await self.wait_for(lambda: all(self.derived.get(tp, 0) >= o for tp, o in shuffled.items()))
