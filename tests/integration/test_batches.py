"""BatchWriter against the embedded broker: what is added arrives, in order, with true ends."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from pipeline.runtime.batches import BatchWriter
from pipeline.runtime.produce import make_producer
from pipeline.runtime.topics import TOPIC_CONFIG, ensure_topics, read_to_end

pytestmark = pytest.mark.integration


async def test_add_and_add_many_arrive_in_order_across_full_batches(broker: str) -> None:
    topic = f"batches-{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker, {topic: (2, dict(TOPIC_CONFIG))})
    producer = make_producer(broker)
    await producer.start()
    try:
        writer = BatchWriter(producer)
        writer.add(topic, 0, b"first", b"0")
        # ~3 MiB: more than one 1 MiB batch, so add_many must start new batches on its own.
        big = [(b"k%d" % i, b"%d" % i + b"x" * 1000) for i in range(3000)]
        writer.add_many(topic, 0, big)
        writer.add_many(topic, 1, [])  # nothing: no empty batch is sent
        writer.add(topic, 1, None, b"only")
        ends = await writer.flush()
    finally:
        await producer.stop()
    assert ends == {TopicPartition(topic, 0): 3001, TopicPartition(topic, 1): 1}
    got: dict[int, list[tuple[bytes | None, bytes]]] = {0: [], 1: []}
    starts = {TopicPartition(topic, 0): 0, TopicPartition(topic, 1): 0}
    async for records in read_to_end(broker, starts):
        for r in records:
            got[r.partition].append((r.key, r.value))
    assert got[0] == [(b"first", b"0"), *big]
    assert got[1] == [(None, b"only")]


async def test_many_concurrent_flushes_to_one_partition_all_arrive(broker: str) -> None:
    """aiokafka's send_batch shrinks its timeout by the whole wait at every wake-up when several
    wait on one partition; flushes must not fail that way (here: within a 1 s timeout)."""
    topic = f"batches-{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker, {topic: (1, dict(TOPIC_CONFIG))})
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", request_timeout_ms=1000)
    await producer.start()
    try:

        async def one(n: int) -> dict[TopicPartition, int]:
            writer = BatchWriter(producer)
            writer.add(topic, 0, None, b"%d" % n + b"x" * 10_000)
            return await writer.flush()

        ends = await asyncio.gather(*(one(n) for n in range(300)))
    finally:
        await producer.stop()
    assert sorted(e[TopicPartition(topic, 0)] for e in ends) == list(range(1, 301))
