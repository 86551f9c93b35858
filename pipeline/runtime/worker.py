"""The worker: validates source documents, runs derivations, publishes results.

The owner of partition p reads partition p of a derivation source's topic AND of its shuffle
topic (one consumer, range assignment co-partitions them). It validates each source document
(invalid ones go to `<topic>.dead-letter` with the reason as headers) and computes its shuffle
partition from the shuffle key: documents already in the right partition — everything our own
producers write, since they key by the shuffle key with the same partitioner — are processed at
once; the others are re-keyed into the shuffle topic for their owner. So one owner sees all of a
user's events, in arrival order, whatever key the producer used, and well-keyed input skips the
extra hop. The owner keeps RocksDB state per partition (restored from the changelog on
assignment) and commits each batch as described in `pipeline.runtime.state`; its markers carry both
input positions. Materializations run beside it (`pipeline.runtime.materialize`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from pipeline.catalog import Catalog
from pipeline.documents.validation import Validator
from pipeline.errors import BrokerStateLost, SegflowError
from pipeline.figures import LoopFigures, Stats
from pipeline.runtime.batches import BatchWriter
from pipeline.runtime.materialize import Materializer, run_in_thread
from pipeline.runtime.settings import Settings
from pipeline.runtime.state import PartitionState, add_changelog, restore
from pipeline.runtime.task import DerivationTask
from pipeline.runtime.topics import (
    Commits,
    Names,
    ensure_topics,
    group_consumer,
    hold_fetches,
    partition_for,
    pipeline_topics,
)

log = logging.getLogger(__name__)


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


def tune_gc() -> None:
    """Make CPython's cyclic garbage collector fit a worker process; call once at start.

    Each event allocates dozens of short-lived dicts and lists, none of them in reference
    cycles. At the default threshold (a collection every 700 allocations) the collector ran
    every few events and took ~10% of the hot path (measured with bench-like batches). Objects
    built at start-up are frozen so that full collections skip them.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class Worker:
    """One worker process's share of the pipeline."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        *,
        bootstrap: str,
        group: bool = True,
        materialize: bool = True,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.bootstrap = bootstrap
        self.group = group
        self.materialize = materialize
        self.names = Names(settings.topic_prefix)
        self.stats = Stats()
        self.figures = LoopFigures("derive")
        """Lag and last round of the derive loop, for `pipeline.runtime.metrics`."""
        self.progress = Progress()
        self.tasks = {
            source: DerivationTask(catalog, source, self.names.collection)
            for source in sorted({d.source for d in catalog.derivations.values()})
        }
        self.validators = {
            source: Validator(catalog.collections[source].schema) for source in self.tasks
        }
        self.source_of_topic = {self.names.collection(s): s for s in self.tasks}
        self.source_of_shuffle = {self.names.shuffle(s): s for s in self.tasks}
        self.states: dict[TopicPartition, PartitionState] = {}
        self.generation = 0
        self.lock = asyncio.Lock()
        self.stopping = asyncio.Event()
        self.failure: Exception | None = None
        self.sinks: list[Materializer] = []
        self.producer: AIOKafkaProducer | None = None
        self.commits: Commits | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `stop()`; drains the batch in flight and commits before returning."""
        await ensure_topics(self.bootstrap, pipeline_topics(self.catalog, self.names))
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            linger_ms=self.settings.linger_ms,
            acks="all",
            max_batch_size=1024 * 1024,
            max_request_size=8 * 1024 * 1024,
        )
        await self.producer.start()
        try:
            loops = []
            if self.tasks:
                loops.append(asyncio.create_task(self._derive_loop(), name="deriver"))
            if materializers := self.materializers():
                loops.append(
                    asyncio.create_task(
                        run_in_thread(materializers, self.stopping), name="materialize"
                    )
                )
            stop = asyncio.create_task(self.stopping.wait())
            await asyncio.wait([*loops, stop], return_when=asyncio.FIRST_COMPLETED)
            self.stopping.set()
            results = await asyncio.gather(*loops, return_exceptions=True)
            stop.cancel()
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            if self.failure is not None:
                raise self.failure
        finally:
            await self.producer.stop()
            for state in self.states.values():
                state.close()
            self.states.clear()

    def materializers(self) -> list[Materializer]:
        """The catalog's enabled materializations (none when `materialize` is off)."""
        if not self.materialize:
            return []
        assert self.producer is not None
        self.sinks = [
            Materializer(
                self.settings,
                self.catalog,
                spec,
                bootstrap=self.bootstrap,
                producer=self.producer,
                group=self.group,
            )
            for spec in self.catalog.materializations.values()
            if spec.enabled
        ]
        return self.sinks

    def stop(self) -> None:
        self.stopping.set()

    def fail(self, exc: Exception) -> None:
        """Stop because of `exc`, which `run()` then raises."""
        self.failure = self.failure or exc
        self.stopping.set()

    def _consumer(self, role: str) -> AIOKafkaConsumer:
        group = self.names.group(role)
        return group_consumer(self.bootstrap, group, self.settings.session_timeout_ms)

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        assert self.producer is not None
        parts = await self.producer.partitions_for(topic)
        return [TopicPartition(topic, p) for p in sorted(parts)]

    # -- the partition owner ---------------------------------------------------------------

    async def _derive_loop(self) -> None:
        """One consumer over each source topic and its shuffle topic, partition p of both
        assigned together (range assignment, equal partition counts) to p's state owner."""
        group = self.names.group("derive")
        consumer = group_consumer(
            self.bootstrap, group, self.settings.session_timeout_ms, co_partitioned=True
        )
        topics = [*self.source_of_topic, *self.source_of_shuffle]
        commits = self.commits = Commits(consumer)
        self.figures.consumer = consumer
        await consumer.start()
        try:
            if self.group:
                consumer.subscribe(topics, listener=_Listener(self, consumer))
            else:
                tps = [tp for t in topics for tp in await self._partitions(t)]
                consumer.assign(tps)
                await self._assigned(consumer, tps)
            loop = asyncio.get_running_loop()
            pace = self.settings.poll_interval_ms / 1000
            while not self.stopping.is_set():
                generation = self.generation
                batch = await consumer.getmany(
                    timeout_ms=200, max_records=self.settings.batch_max_records
                )
                fetched = loop.time()
                self.figures.fetched(batch)
                async with self.lock:
                    if not batch:
                        await commits.settle()
                    elif generation == self.generation:
                        await self._derive(batch)
                if batch:
                    await hold_fetches(consumer, fetched + pace - loop.time(), self.stopping)
        finally:
            async with self.lock:
                with contextlib.suppress(KafkaError):
                    await commits.settle()
                await consumer.stop()

    def _shuffle_tp(self, tp: TopicPartition) -> TopicPartition:
        """The shuffle partition whose owner also reads source partition `tp`."""
        source = self.source_of_topic.get(tp.topic)
        return TopicPartition(self.names.shuffle(source), tp.partition) if source else tp

    async def _assigned(self, consumer: AIOKafkaConsumer, assigned: list[TopicPartition]) -> None:
        """Open and restore the state of newly assigned partitions, then seek to their markers."""
        assert self.producer is not None
        self.generation += 1
        owned = {tp for tp in assigned if tp.topic in self.source_of_shuffle}
        stray = [tp for tp in assigned if self._shuffle_tp(tp) not in owned]
        if stray:
            raise SegflowError(
                f"source partitions {stray} were assigned without their shuffle partitions: "
                "every worker must run the same catalog (range assignment co-partitions them)"
            )
        fresh: dict[str, dict[int, PartitionState]] = {}
        for tp in sorted(owned):
            if tp not in self.states:
                state = PartitionState(self._state_dir(tp))
                self.states[tp] = state
                fresh.setdefault(tp.topic, {})[tp.partition] = state
        for topic, states in fresh.items():
            source = self.source_of_shuffle[topic]
            changelog = self.names.changelog(source)
            try:
                await restore(self.bootstrap, self.producer, changelog, states)
            except BrokerStateLost:
                if self.settings.on_state_lost != "rebuild":
                    raise
                log.warning(
                    "broker lost its data; rebuilding local state of %s from scratch", topic
                )
                for p, state in states.items():
                    state.wipe()
                    tp = TopicPartition(topic, p)
                    states[p] = self.states[tp] = PartitionState(self._state_dir(tp))
                await restore(self.bootstrap, self.producer, changelog, states)
        log.info(
            "derive: assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(owned))
        )
        for tp in assigned:
            state = self.states[self._shuffle_tp(tp)]
            if tp in owned:
                consumer.seek(tp, state.input_next)
                self.progress.derived[tp] = state.input_next
            else:
                consumer.seek(tp, state.source_next)
                self.progress.shuffled[tp] = state.source_next
        await self.progress.notify()

    async def _revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.lock:
            if self.commits is not None:  # lag figures only; the new owner starts at markers
                await self.commits.release(revoked, "derive")
            self.generation += 1
            for tp in revoked:
                state = self.states.pop(tp, None)
                if state is not None:
                    state.close()

    def _state_dir(self, tp: TopicPartition) -> Path:
        return Path(self.settings.data_dir, "state", tp.topic, str(tp.partition))

    def _route(
        self,
        tp: TopicPartition,
        records: list[ConsumerRecord],
        writer: BatchWriter,
        here: list[tuple[Any, int]],
    ) -> None:
        """Validate source records: invalid ones to the dead-letter topic, those whose shuffle
        partition is this one into `here`, the others to the shuffle topic for their owner."""
        source = self.source_of_topic[tp.topic]
        shuffle_key = self.tasks[source].shuffle_key
        validator = self.validators[source]
        shuffle_topic = self.names.shuffle(source)
        partitions = self.catalog.collections[source].partitions
        # Redeliveries are often byte for byte the same record: decode, validate and key each
        # distinct value once per batch. (Derivations never modify their source documents.)
        known: dict[bytes, tuple[Any, bytes, int]] = {}
        for record in records:
            value = record.value
            hit = known.get(value) if value is not None else None
            if hit is not None:
                doc, key, partition = hit
            else:
                problems: list[str]
                try:
                    doc = orjson.loads(value) if value is not None else None
                    problems = validator.errors(doc)
                except orjson.JSONDecodeError as exc:
                    problems = [f"not JSON: {exc}"]
                if problems:
                    self._dead_letter(writer, source, record, problems)
                    continue
                key = shuffle_key(doc)
                partition = partition_for(key, partitions)
                if value is not None:
                    known[value] = (doc, key, partition)
            if partition == tp.partition:
                here.append((doc, record.timestamp))
            else:
                writer.add(shuffle_topic, partition, key, value, record.timestamp, record.headers)
        self.stats.events_in += len(records)

    def _dead_letter(
        self, writer: BatchWriter, source: str, record: ConsumerRecord, problems: list[str]
    ) -> None:
        self.stats.dead_letters += 1
        error = "; ".join(problems)
        log.warning(
            "dead letter: %s[%d]@%d: %s", record.topic, record.partition, record.offset, error[:500]
        )
        headers = [
            *(record.headers or ()),
            ("segflow.error", error.encode()),
            ("segflow.source.topic", record.topic.encode()),
            ("segflow.source.partition", str(record.partition).encode()),
            ("segflow.source.offset", str(record.offset).encode()),
        ]
        topic = self.names.dead_letter(source)
        writer.add(topic, 0, record.key, record.value, record.timestamp, headers)

    async def _derive(self, batch: Mapping[TopicPartition, list[ConsumerRecord]]) -> None:
        """Process a fetched batch and commit it (commit order: `pipeline.runtime.state`)."""
        assert self.producer is not None
        writer = BatchWriter(self.producer)
        work: dict[TopicPartition, list[tuple[Any, int]]] = {}
        source_next: dict[TopicPartition, int] = {}
        shuffle_next: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            owner = self._shuffle_tp(tp)
            state = self.states[owner]
            here = work.setdefault(owner, [])
            if tp == owner:
                # Records fetched before a seek can overlap what the state already holds.
                records = [r for r in records if r.offset >= state.input_next]
                here += [(orjson.loads(r.value), r.timestamp) for r in records]
                if records:
                    shuffle_next[owner] = records[-1].offset + 1
            else:
                records = [r for r in records if r.offset >= state.source_next]
                self._route(tp, records, writer, here)
                if records:
                    source_next[owner] = records[-1].offset + 1
        if self.stats.first_event_at is None and source_next:
            self.stats.first_event_at = time.monotonic()
        results = []
        for owner, items in work.items():
            if owner not in source_next and owner not in shuffle_next:
                continue
            state = self.states[owner]
            task = self.tasks[self.source_of_shuffle[owner.topic]]
            result = task.process_documents(items, state)
            published = [
                (
                    output.spec.name,
                    writer.add_many(
                        output.topic,
                        owner.partition % output.spec.partitions,
                        ((key, value) for out, key, value in result.documents if out is output),
                    ),
                )
                for output in task.outputs
            ]
            results.append((owner, state, result, published))
        if not results:
            return
        # 1. derived documents, re-routed source records and dead letters, acknowledged
        acked = self.progress.shuffle_acked
        for tp, end in (await writer.flush()).items():
            if tp.topic in self.source_of_shuffle:
                acked[tp] = max(acked.get(tp, 0), end)
        # 2. state changes and markers to the changelog, acknowledged
        changelog = BatchWriter(self.producer)
        changelog_tps = []
        for owner, state, result, _ in results:
            source = self.source_of_shuffle[owner.topic]
            changelog_tp = TopicPartition(self.names.changelog(source), owner.partition)
            add_changelog(
                changelog,
                changelog_tp,
                result.changes,
                shuffle_next.get(owner, state.input_next),
                source_next.get(owner, state.source_next),
            )
            changelog_tps.append(changelog_tp)
        ends = await changelog.flush()
        # 3. local state and positions, atomically per partition
        offsets: dict[TopicPartition, int] = {}
        by_collection = self.stats.documents_by_collection
        for (owner, state, result, published), changelog_tp in zip(
            results, changelog_tps, strict=True
        ):
            state.apply(
                result.changes,
                ends[changelog_tp],
                shuffle_next.get(owner, state.input_next),
                source_next.get(owner, state.source_next),
            )
            source_tp = TopicPartition(
                self.names.collection(self.source_of_shuffle[owner.topic]), owner.partition
            )
            offsets[owner] = self.progress.derived[owner] = state.input_next
            offsets[source_tp] = self.progress.shuffled[source_tp] = state.source_next
            self.stats.derived_events += result.events
            self.stats.redeliveries += result.redeliveries
            self.stats.documents_out += len(result.documents)
            for collection, n in published:
                by_collection[collection] += n
        self.stats.batches += 1
        # 4. consumer offsets, for lag figures only: at most once a second while busy
        assert self.commits is not None
        await self.commits.add(offsets)
        await self.progress.notify()

    # -- barrier -----------------------------------------------------------------------------

    async def caught_up(self, targets: Mapping[TopicPartition, int]) -> None:
        """Wait until every source record before `targets` is fully processed and published."""
        progress = self.progress
        await progress.wait_for(
            lambda: all(progress.shuffled.get(tp, 0) >= o for tp, o in targets.items())
        )
        shuffled = dict(progress.shuffle_acked)
        await progress.wait_for(
            lambda: all(progress.derived.get(tp, 0) >= o for tp, o in shuffled.items())
        )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker, consumer: AIOKafkaConsumer) -> None:
        self.worker = worker
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker._revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        # aiokafka logs and swallows listener errors; the worker must stop on them instead.
        try:
            async with self.worker.lock:
                await self.worker._assigned(self.consumer, list(assigned))
        except Exception as exc:
            self.worker.fail(exc)
