"""`segflow dlq`: show and re-send what was dead-lettered.

Three kinds of dead letters: documents of a collection that failed validation
(`<topic>.dead-letter`), webhook batches an endpoint rejected for good (a webhook
materialization's, or a webhook destination's requests of exports and events, under the name
`destination.<name>`), and records a Postgres table could not hold (all three
`segflow.<materialization>.dead-letter`). Replay re-sends them —
documents to their collection's topic (validated again), batches to the endpoint, and for a
parked Postgres record the *current* document of its key (so a replay never takes a row back to
an older state) to the partition it came from, for the sink to write again — and remembers how
far it got in a consumer group, so a second replay sends only what was parked since.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from materializations.destinations import materialization_name
from pipeline.catalog import Catalog
from pipeline.errors import SegflowError
from pipeline.runtime.topics import Names, read_to_end
from pipeline.tools.read import partitions_of


@dataclass(frozen=True)
class Target:
    """A dead-letter topic and what it belongs to."""

    name: str  # collection or materialization name
    topic: str
    kind: str  # "collection" | "webhook" | "postgres"
    config: Mapping[str, str] = field(default_factory=dict)
    """The endpoint's, for a webhook."""


def targets(catalog: Catalog, names: Names, only: str | None = None) -> list[Target]:
    found = [Target(c, names.dead_letter(c), "collection") for c in catalog.collections]
    found += [
        Target(m.name, names.sink_dead_letter(m.name), m.kind, m.config)
        for m in catalog.materializations.values()
    ]
    for d in catalog.destinations.values():
        name = materialization_name(d.name)
        found.append(Target(name, names.sink_dead_letter(name), d.kind, d.config))
    if only is None:
        return found
    chosen = [t for t in found if t.name == only]
    if not chosen:
        raise SegflowError(
            f"no dead letters named {only!r}; expected a collection or materialization: "
            f"{sorted(t.name for t in found)}"
        )
    return chosen


def describe(target: Target, record: ConsumerRecord) -> dict[str, Any]:
    headers = {k: v.decode(errors="replace") for k, v in record.headers or ()}
    try:
        payload: Any = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        payload = record.value.decode(errors="replace") if record.value else None
    return {
        "dead_letter": target.name,
        "topic": record.topic,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "headers": headers,
        "payload": payload,
    }


async def letters(bootstrap: str, target: Target, start: int = 0) -> AsyncIterator[ConsumerRecord]:
    starts = {tp: start for tp in await partitions_of(bootstrap, target.topic)}
    async for records in read_to_end(bootstrap, starts):
        for record in records:
            yield record


async def list_letters(
    bootstrap: str, catalog: Catalog, names: Names, only: str | None
) -> list[dict[str, Any]]:
    out = []
    for target in targets(catalog, names, only):
        async for record in letters(bootstrap, target):
            out.append(describe(target, record))
    return out


async def replay(bootstrap: str, catalog: Catalog, names: Names, name: str) -> int:
    """Re-send everything parked for `name` since the last replay; returns how many."""
    (target,) = targets(catalog, names, name)
    tp = TopicPartition(target.topic, 0)
    group = names.group(f"dlq-replay.{name}")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([tp])  # only to commit progress; records are read by `letters`
        start = await consumer.committed(tp) or 0
        sent = 0
        if target.kind == "collection":
            sent = await _replay_documents(
                bootstrap, target, names.collection(name), start, consumer
            )
        elif target.kind == "webhook":
            sent = await _replay_batches(bootstrap, target, target.config, start, consumer)
        elif target.kind == "postgres":
            sent = await _replay_records(bootstrap, target, start, consumer)
        return sent
    finally:
        await consumer.stop()


async def _replay_documents(
    bootstrap: str, target: Target, topic: str, start: int, consumer: AIOKafkaConsumer
) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    sent = 0
    try:
        async for record in letters(bootstrap, target, start):
            await producer.send_and_wait(topic, record.value, key=record.key)
            await consumer.commit(
                {TopicPartition(record.topic, record.partition): record.offset + 1}
            )
            sent += 1
    finally:
        await producer.stop()
    return sent


async def _replay_batches(
    bootstrap: str, target: Target, config: Any, start: int, consumer: AIOKafkaConsumer
) -> int:
    from materializations.webhook import sign

    url, secret = config["url"], config.get("secret", "")
    if not url:
        raise SegflowError(f"materialization {target.name!r} has no url configured")
    sent = 0
    timeout = aiohttp.ClientTimeout(total=float(config.get("timeout", "20")))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async for record in letters(bootstrap, target, start):
            parked = {k: v.decode() for k, v in record.headers or ()}
            msg_id = parked.get("webhook-id") or str(uuid.uuid4())
            stamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(stamp),
            }
            if secret:
                headers["webhook-signature"] = sign(secret, msg_id, stamp, record.value)
            async with session.post(
                url, data=record.value, headers=headers, allow_redirects=False
            ) as response:
                if response.status >= 300:
                    body = (await response.text())[:500]
                    raise SegflowError(
                        f"replay stopped: {url} answered {response.status} to parked batch at "
                        f"offset {record.offset} ({body!r}); {sent} re-sent before it"
                    )
            await consumer.commit(
                {TopicPartition(record.topic, record.partition): record.offset + 1}
            )
            sent += 1
    return sent


async def _replay_records(
    bootstrap: str, target: Target, start: int, consumer: AIOKafkaConsumer
) -> int:
    """Each parked record's key, written again with its current document (the last record of
    that key in its partition) to the partition it came from."""
    parked: list[tuple[TopicPartition, bytes | None]] = []
    last = start
    async for record in letters(bootstrap, target, start):
        headers = {k: v.decode() for k, v in record.headers or ()}
        tp = TopicPartition(headers["topic"], int(headers["partition"]))
        parked.append((tp, _key(headers["key"])))
        last = record.offset + 1
    if not parked:
        return 0
    wanted = {tp: {key for t, key in parked if t == tp} for tp, _ in parked}
    current: dict[tuple[TopicPartition, bytes | None], bytes | None] = {}
    async for records in read_to_end(bootstrap, dict.fromkeys(wanted, 0)):
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            if record.key in wanted[tp]:
                current[tp, record.key] = record.value
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for tp, key in dict.fromkeys(parked):  # each key once, in parking order
            value = current.get((tp, key))
            if value is not None:
                await producer.send_and_wait(tp.topic, value, key=key, partition=tp.partition)
    finally:
        await producer.stop()
    await consumer.commit({TopicPartition(target.topic, 0): last})
    return len(parked)


def _key(shown: str) -> bytes | None:
    """A record key as the Postgres sink wrote it into the `key` header."""
    if not shown:
        return None
    if shown.startswith("base64:"):
        return base64.b64decode(shown.removeprefix("base64:"))
    return shown.encode()
