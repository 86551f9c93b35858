"""Topic names, topic settings and creation, and reading a partition to its true end.

Reading "to the end" never trusts ListOffsets(latest): the embedded broker answers it with the
base offset of the last record batch plus one. We fetch until a fetch brings nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError

from materializations.destinations import materialization_name
from pipeline.catalog import Catalog
from pipeline.catalog.topics import topic_policy
from pipeline.errors import SegflowError
from pipeline.runtime.topic_check import check_existing

log = logging.getLogger(__name__)

TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}
"""Keep every record: the ad-hoc topics of tests and benchmarks."""
SEGMENT_MS = str(86400 * 1000)
"""Kafka rolls a partition's log segment daily (its default is a week, or 1 GiB): neither
compaction nor deletion touches the segment being written, so with a week a compacted topic
stays uncompacted for a week and a topic kept 7 days holds up to 14."""
COMPACTED = {"cleanup.policy": "compact", "segment.ms": SEGMENT_MS}
"""Changelogs and derived collections whose documents replace each other by key."""
DEAD_LETTER_RETENTION = 30 * 86400.0
"""Dead letters wait to be read and replayed (`segflow dlq`), by people: a month."""


def retained(seconds: float) -> dict[str, str]:
    """A topic whose records are deleted `seconds` after their timestamp (math.inf: never)."""
    ms = "-1" if math.isinf(seconds) else str(round(seconds * 1000))
    return {
        "cleanup.policy": "delete",
        "retention.ms": ms,
        "retention.bytes": "-1",
        "segment.ms": SEGMENT_MS,
    }


def collection_config(catalog: Catalog, name: str) -> dict[str, str]:
    """The config of collection `name`'s topic (`pipeline.catalog.topics` says which)."""
    policy = topic_policy(catalog, name)
    return dict(COMPACTED) if policy.retention is None else retained(policy.retention)


@dataclass(frozen=True)
class Names:
    """Every topic and group name of one pipeline namespace."""

    prefix: str = ""

    def collection(self, name: str) -> str:
        return self.prefix + name.replace("/", ".")

    def dead_letter(self, name: str) -> str:
        return self.collection(name) + ".dead-letter"

    def shuffle(self, source: str) -> str:
        return f"{self.prefix}segflow.{source.replace('/', '.')}.shuffle"

    def changelog(self, source: str) -> str:
        return f"{self.prefix}segflow.{source.replace('/', '.')}.changelog"

    def sink_dead_letter(self, materialization: str) -> str:
        """Where a materialization parks what its endpoint permanently rejected."""
        return f"{self.prefix}segflow.{materialization}.dead-letter"

    def group(self, role: str) -> str:
        return f"{self.prefix}segflow.{role}"


def pipeline_topics(catalog: Catalog, names: Names) -> dict[str, tuple[int, dict[str, str]]]:
    """Topic name -> (partitions, config) for everything the catalog's pipeline uses.

    A shuffle topic keeps its records as long as its source does: they carry their source
    records' timestamps, so a shorter retention could delete copies of a backlog (routed after
    a long stop) before their owner has read them. (Kafka Streams deletes what its repartition
    topics' consumers committed, with DeleteRecords; the embedded broker panics on
    DeleteRecords and drops the connection, so Segflow does not.)
    """
    topics: dict[str, tuple[int, dict[str, str]]] = {}
    for spec in catalog.collections.values():
        topics[names.collection(spec.name)] = (
            spec.partitions,
            collection_config(catalog, spec.name),
        )
        topics[names.dead_letter(spec.name)] = (1, retained(DEAD_LETTER_RETENTION))
    for source in {d.source for d in catalog.derivations.values()}:
        partitions = catalog.collections[source].partitions
        topics[names.shuffle(source)] = (partitions, collection_config(catalog, source))
        topics[names.changelog(source)] = (partitions, dict(COMPACTED))
    for m in catalog.materializations.values():
        topics[names.sink_dead_letter(m.name)] = (1, retained(DEAD_LETTER_RETENTION))
    if catalog.profiles is not None:
        for d in catalog.destinations.values():
            topics[names.sink_dead_letter(materialization_name(d.name))] = (
                1,
                retained(DEAD_LETTER_RETENTION),
            )
    return topics


def collection_topics(
    catalog: Catalog, names: Names, name: str
) -> dict[str, tuple[int, dict[str, str]]]:
    """The topic of collection `name` alone (for producers writing it before a worker runs)."""
    spec = catalog.collections[name]
    return {names.collection(name): (spec.partitions, collection_config(catalog, name))}


async def ensure_topics(bootstrap: str, topics: dict[str, tuple[int, dict[str, str]]]) -> None:
    """Create the topics that do not exist yet; raise TopicMismatch when one that exists
    contradicts its settings here (`pipeline.runtime.topic_check`)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        listed = set(await admin.list_topics())
        existing = [name for name in topics if name in listed]
        missing = [
            NewTopic(name, partitions, 1, topic_configs=config)
            for name, (partitions, config) in topics.items()
            if name not in listed
        ]
        await check_existing(admin, topics, existing)
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile elsewhere
                await admin.create_topics(missing)
            log.info("created %d topic(s)", len(missing))
    finally:
        await admin.close()


def group_consumer(
    bootstrap: str,
    group_id: str,
    session_timeout_ms: int,
    *,
    co_partitioned: bool = False,
    fetch_max_wait_ms: int = 100,
) -> AIOKafkaConsumer:
    """A consumer in `group_id` that commits explicitly, starting from the earliest offset.

    `co_partitioned`: partition p of every subscribed topic goes to the same member (range
    assignment over topics with equal partition counts). `fetch_max_wait_ms`: how long the
    broker may hold a fetch that finds nothing (`Settings.fetch_max_wait_ms` says why 100).
    """
    strategy = (RangePartitionAssignor,) if co_partitioned else (RoundRobinPartitionAssignor,)
    return AIOKafkaConsumer(
        partition_assignment_strategy=strategy,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(100, session_timeout_ms // 4),
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )


async def hold_fetches(consumer: AIOKafkaConsumer, seconds: float, stopping: asyncio.Event) -> None:
    """Fetch nothing for `seconds` (or until `stopping`), so that the next fetch takes what
    arrived meanwhile in one request.

    A consumer otherwise fetches again as soon as its records are taken: under a steady trickle
    every loop turn is a fetch (and a batch, and produce requests) of a handful of records, and
    the broker's cost is per request. Pausing, rather than just sleeping, matters: a fetch
    answered during a sleep would hold the first few records, and the rest would wait one more
    turn. Records a paused partition had buffered are fetched again.
    """
    if seconds <= 0:
        return
    held = consumer.assignment()
    consumer.pause(*held)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)
    finally:
        consumer.resume(*(held & consumer.assignment()))


class Commits:
    """A consumer's offsets, committed at most once per `interval` seconds while records keep
    coming, and at once when `settle()` is called (an idle poll, a revocation, stopping).

    Each commit is a broker round trip and a request the broker pays for; committing once per
    batch (ten or more times a second) bought nothing where offsets are for lag figures or
    the checkpoint is kept elsewhere.
    """

    def __init__(self, consumer: AIOKafkaConsumer, interval: float = 1.0) -> None:
        self.consumer = consumer
        self.interval = interval
        self.pending: dict[TopicPartition, int] = {}
        self._last = 0.0

    async def add(self, offsets: dict[TopicPartition, int]) -> None:
        """Note offsets to commit; commit now if the last commit is `interval` old."""
        self.pending.update(offsets)
        if time.monotonic() - self._last >= self.interval:
            await self.settle()

    async def settle(self, partitions: Collection[TopicPartition] | None = None) -> None:
        """Commit what is pending (only of `partitions`, when given)."""
        offsets = {
            tp: o for tp, o in self.pending.items() if partitions is None or tp in partitions
        }
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced under this member (its session expired while a batch ran, on
            # a loaded machine): these offsets are lag figures, the state's markers and the
            # sinks' checkpoints say where the next owner starts, and the consumer rejoins.
            log.warning("offsets not committed, the group rebalanced (%s)", type(exc).__name__)
            self._last = time.monotonic()
            return
        for tp, offset in offsets.items():
            if self.pending.get(tp) == offset:  # not moved on while the commit was in flight
                del self.pending[tp]
        self._last = time.monotonic()

    async def release(self, partitions: Collection[TopicPartition], owner: str) -> None:
        """Commit what is pending of partitions being revoked. A failure is logged, not raised:
        the next owner then resumes a little earlier, which every consumer here takes."""
        try:
            await self.settle(partitions)
        except KafkaError as exc:
            log.info("%s: offsets of revoked partitions not committed: %s", owner, exc)


class OffsetBeyondEnd(Exception):
    """A partition does not reach an offset we had read up to before."""

    def __init__(self, tp: TopicPartition, offset: int) -> None:
        self.tp = tp
        self.offset = offset
        super().__init__(f"{tp.topic}[{tp.partition}] does not reach offset {offset}")


async def read_to_end(
    bootstrap: str,
    starts: dict[TopicPartition, int],
    *,
    quiet_ms: int = 150,
    max_records: int = 50000,
) -> AsyncIterator[list[ConsumerRecord]]:
    """Yield batches of records from each partition's start offset up to its true end.

    A partition is done when a fetch brings nothing more and we stand at the high watermark
    that fetch responses report. Raises OffsetBeyondEnd when a start lies past the end.
    """
    if not starts:
        return
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="none",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_wait_ms=quiet_ms,
    )
    await consumer.start()
    try:
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        pending = set(starts)
        empty_rounds = 0
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=quiet_ms, max_records=max_records)
            records = [r for tp_records in batch.values() for r in tp_records]
            if records:
                yield records
            empty_rounds = 0 if records else empty_rounds + 1
            for tp in list(pending):
                high = consumer.highwater(tp)
                if high is None:
                    continue
                if high < starts[tp]:
                    raise OffsetBeyondEnd(tp, starts[tp])
                if not batch.get(tp) and await consumer.position(tp) >= high:
                    pending.discard(tp)
            if empty_rounds > 50:
                raise SegflowError(f"no fetch response for {sorted(map(str, pending))}")
    finally:
        await consumer.stop()


def partition_for(key: bytes, partitions: int) -> int:
    """The shuffle's partitioner. Only Segflow writes shuffle topics, so it need not be Kafka's
    murmur2 (pure Python in aiokafka, and on the hot path); CRC-32 is in C."""
    return zlib.crc32(key) % partitions
