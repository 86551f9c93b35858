"""A worker that runs alone (`SEGFLOW_ALONE=1`, `segflow worker --alone`) and its guard.

A worker in a consumer group waits for the group before its first event: Tansu holds a
JoinGroup for half the session timeout, and any broker needs a JoinGroup and a SyncGroup round
per group. A worker that is the only one of its pipeline needs none of it: its loops assign
themselves every partition and start at once (their state markers and sink checkpoints say
where, as after any assignment).

Two workers that both believe they are alone would both own every partition. The guard keeps
that from lasting: it joins the derive loop's consumer group (in the background, off the path
to the first event) over the same topics, and fetches nothing. It stops the worker

- when its first assignment is not every partition: another worker was already in the group
  (for the moment until then both processed the same partitions, which at-least-once input and
  idempotent state and sinks absorb);
- when a rebalance revokes its partitions: a worker is joining. The guard returns from the
  revocation (which lets the group go on to hand out the partitions) only once this worker's
  loops have stopped and committed, so the newcomer starts where this worker left off — the
  same hand-over as between two grouped workers.

The derive loop of a worker alone commits its lag offsets as `<group>.alone`: on Apache Kafka
a group with a member (the guard) refuses commits from a consumer outside it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from pipeline.errors import SegflowError
from pipeline.runtime.topics import group_consumer

log = logging.getLogger(__name__)


class Guard:
    """Membership of `group` over `partitions` on behalf of a worker that runs alone."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        partitions: list[TopicPartition],
        session_timeout_ms: int,
        *,
        fail: Callable[[Exception], None],
        stopped: asyncio.Event,
    ) -> None:
        self.group = group
        self.partitions = set(partitions)
        self.fail = fail
        self.stopped = stopped
        """Set by the worker once its loops have stopped and committed."""
        self.joined = asyncio.Event()
        """Set once the guard holds every partition in the group."""
        self.consumer = group_consumer(bootstrap, group, session_timeout_ms, co_partitioned=True)

    async def run(self, stopping: asyncio.Event) -> None:
        consumer = self.consumer
        await consumer.start()
        try:
            topics = sorted({tp.topic for tp in self.partitions})
            consumer.subscribe(topics, listener=_Listener(self, consumer))
            while not stopping.is_set():
                # Polled for aiokafka's max_poll_interval; every partition is paused.
                await consumer.getmany(timeout_ms=500)
        finally:
            # Leaving the group hands the partitions over: not before the worker has stopped.
            await self.stopped.wait()
            await consumer.stop()

    def assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned != self.partitions:
            self.fail(
                SegflowError(
                    f"--alone: another worker is in consumer group {self.group} (this one was"
                    f" given {len(assigned)} of its {len(self.partitions)} partitions);"
                    " run every worker of a pipeline without SEGFLOW_ALONE"
                )
            )
            return
        self.joined.set()
        log.info("alone: holding every partition of consumer group %s", self.group)

    async def revoked(self) -> None:
        self.fail(
            SegflowError(
                f"--alone: another worker joined consumer group {self.group}; this worker"
                " stopped and handed its partitions over (run every worker of a pipeline"
                " without SEGFLOW_ALONE)"
            )
        )
        await self.stopped.wait()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, guard: Guard, consumer: AIOKafkaConsumer) -> None:
        self.guard = guard
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            await self.guard.revoked()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.consumer.pause(*assigned)
        self.guard.assigned(set(assigned))
