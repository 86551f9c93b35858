"""Read a collection from its topic: the current document per key, ordered by key."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient

from pipeline.catalog import CollectionSpec
from pipeline.documents import pointers
from pipeline.errors import SegflowError
from pipeline.runtime.topics import read_to_end

_RANKS = {type(None): 0, bool: 1, int: 2, float: 2, str: 3, list: 4, dict: 5}


def sort_key(value: Any) -> Any:
    """A total order over JSON values: null < booleans < numbers < strings < arrays < objects."""
    rank = _RANKS.get(type(value), 6)
    if rank == 4:
        return (rank, [sort_key(v) for v in value])
    if rank == 5:
        return (rank, sorted((k, sort_key(v)) for k, v in value.items()))
    if rank == 6:
        return (rank, None)
    return (rank, value)


def key_of(spec: CollectionSpec) -> Callable[[Any], Any]:
    getter = pointers.key_getter(spec.key)
    return lambda doc: [sort_key(None if v is pointers.MISSING else v) for v in getter(doc)]


async def topic_partitions(bootstrap: str, topics: list[str]) -> list[TopicPartition]:
    """The partitions of those of `topics` that exist, from one metadata request."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        metadata = await client.fetch_all_metadata()
        return [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(metadata.partitions_for_topic(topic) or ())
        ]
    finally:
        await client.close()


async def partitions_of(bootstrap: str, topic: str) -> list[TopicPartition]:
    """The topic's partitions (waiting briefly for a topic that is being created)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        for _ in range(50):
            metadata = await client.fetch_all_metadata()
            parts = metadata.partitions_for_topic(topic)
            if parts:
                return [TopicPartition(topic, p) for p in sorted(parts)]
            await asyncio.sleep(0.1)
    finally:
        await client.close()
    raise SegflowError(f"topic {topic!r} does not exist on {bootstrap}")


async def current_documents(
    bootstrap: str, topic: str, spec: CollectionSpec, ends: dict[TopicPartition, int] | None = None
) -> list[Any]:
    """Every key's last document in the topic, read to its true end, ordered by key; a key
    whose last record is a tombstone (value null, as a merged profile record's) is absent.

    `ends`, when given, receives the offset after the last record read from each partition.
    """
    key = key_of(spec)
    latest: dict[str, tuple[Any, Any]] = {}
    starts = {tp: 0 for tp in await partitions_of(bootstrap, topic)}
    if ends is not None:
        ends.update(starts)
    async for records in read_to_end(bootstrap, starts):
        for record in records:
            if ends is not None:
                ends[TopicPartition(record.topic, record.partition)] = record.offset + 1
            if record.value is None:  # a tombstone: the document with that key is deleted
                with contextlib.suppress(orjson.JSONDecodeError, TypeError):
                    k = [sort_key(v) for v in orjson.loads(record.key)]
                    latest.pop(orjson.dumps(k, default=str).decode(), None)
                continue
            try:
                doc = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                continue
            k = key(doc)
            latest[orjson.dumps(k, default=str).decode()] = (k, doc)
    return [doc for _, doc in sorted(latest.values(), key=lambda kv: kv[0])]


async def follow(starts: dict[TopicPartition, int], bootstrap: str) -> AsyncIterator[Any]:
    """Every document written to these partitions from the given offsets on, as it arrives."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    yield orjson.loads(record.value)
    finally:
        await consumer.stop()
