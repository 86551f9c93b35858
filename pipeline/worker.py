"""The worker: validates and shuffles source documents, runs derivations, publishes results.

Two consumer loops share one producer:
- the shuffler reads each derivation source's topic, validates every document (invalid ones go
  to `<topic>.dead-letter` with the reason as headers), and re-keys valid ones by the shuffle key
  into the source's shuffle topic, so one partition owner sees all of a user's events in
  arrival order whatever key the producer used;
- the deriver reads the shuffle topics, owns RocksDB state per partition (restored from the
  changelog on assignment) and commits each batch as described in `pipeline.state`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from materializations.runner import Materializer
from pipeline.batches import BatchWriter
from pipeline.catalog import Catalog
from pipeline.errors import BrokerStateLost
from pipeline.settings import Settings
from pipeline.state import PartitionState, add_changelog, restore
from pipeline.task import DerivationTask, encode_key
from pipeline.topics import (
    Names,
    ensure_topics,
    group_consumer,
    partition_for,
    pipeline_topics,
)
from pipeline.validation import Validator

log = logging.getLogger(__name__)


@dataclass
class Stats:
    events_in: int = 0
    dead_letters: int = 0
    derived_events: int = 0
    redeliveries: int = 0
    documents_out: int = 0
    batches: int = 0
    first_event_at: float | None = None


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
            loops = [asyncio.create_task(self._shuffle_loop(), name="shuffler")]
            if self.tasks:
                loops.append(asyncio.create_task(self._derive_loop(), name="deriver"))
            for materializer in self.materializers():
                name = f"materialize {materializer.spec.name}"
                loops.append(asyncio.create_task(materializer.run(self.stopping), name=name))
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

    # -- shuffler ----------------------------------------------------------------------------

    async def _shuffle_loop(self) -> None:
        consumer = self._consumer("shuffle")
        topics = list(self.source_of_topic)
        await consumer.start()
        try:
            if self.group:
                consumer.subscribe(topics)
            else:
                consumer.assign([tp for t in topics for tp in await self._partitions(t)])
            while not self.stopping.is_set():
                batch = await consumer.getmany(
                    timeout_ms=200, max_records=self.settings.batch_max_records
                )
                if batch:
                    await self._shuffle(consumer, batch)
        finally:
            await consumer.stop()

    async def _shuffle(
        self, consumer: AIOKafkaConsumer, batch: Mapping[TopicPartition, list[ConsumerRecord]]
    ) -> None:
        assert self.producer is not None
        writer = BatchWriter(self.producer)
        for tp, records in batch.items():
            source = self.source_of_topic[tp.topic]
            shuffle_key = self.tasks[source].shuffle_key
            validator = self.validators[source]
            shuffle_topic = self.names.shuffle(source)
            partitions = self.catalog.collections[source].partitions
            for record in records:
                problems: list[str]
                try:
                    doc = orjson.loads(record.value) if record.value is not None else None
                    problems = validator.errors(doc)
                except orjson.JSONDecodeError as exc:
                    problems = [f"not JSON: {exc}"]
                if problems:
                    self._dead_letter(writer, source, record, problems)
                    continue
                key = encode_key(shuffle_key(doc))
                writer.add(
                    shuffle_topic,
                    partition_for(key, partitions),
                    key,
                    record.value,
                    record.timestamp,
                    record.headers,
                )
            self.stats.events_in += len(records)
        if self.stats.first_event_at is None and batch:
            self.stats.first_event_at = time.monotonic()
        acked = self.progress.shuffle_acked
        for tp, end in (await writer.flush()).items():
            acked[tp] = max(acked.get(tp, 0), end)
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        await consumer.commit(offsets)
        self.progress.shuffled.update(offsets)
        await self.progress.notify()

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

    # -- deriver -----------------------------------------------------------------------------

    async def _derive_loop(self) -> None:
        consumer = self._consumer("derive")
        topics = list(self.source_of_shuffle)
        await consumer.start()
        try:
            if self.group:
                consumer.subscribe(topics, listener=_Listener(self, consumer))
            else:
                tps = [tp for t in topics for tp in await self._partitions(t)]
                consumer.assign(tps)
                await self._assigned(consumer, tps)
            while not self.stopping.is_set():
                generation = self.generation
                batch = await consumer.getmany(
                    timeout_ms=200, max_records=self.settings.batch_max_records
                )
                if batch:
                    async with self.lock:
                        if generation == self.generation:
                            await self._derive(consumer, batch)
        finally:
            async with self.lock:
                await consumer.stop()

    async def _assigned(self, consumer: AIOKafkaConsumer, assigned: list[TopicPartition]) -> None:
        """Open and restore the state of newly assigned partitions, then seek to their markers."""
        assert self.producer is not None
        self.generation += 1
        fresh: dict[str, dict[int, PartitionState]] = {}
        for tp in assigned:
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
        log.info("derive: assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in assigned))
        for tp in assigned:
            consumer.seek(tp, self.states[tp].input_next)
            self.progress.derived[tp] = self.states[tp].input_next
        await self.progress.notify()

    async def _revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.lock:
            self.generation += 1
            for tp in revoked:
                state = self.states.pop(tp, None)
                if state is not None:
                    state.close()

    def _state_dir(self, tp: TopicPartition) -> Path:
        return Path(self.settings.data_dir, "state", tp.topic, str(tp.partition))

    async def _derive(
        self, consumer: AIOKafkaConsumer, batch: Mapping[TopicPartition, list[ConsumerRecord]]
    ) -> None:
        assert self.producer is not None
        results = []
        for tp, records in batch.items():
            state = self.states[tp]
            # Records fetched before a seek can overlap what the state already holds.
            records = [r for r in records if r.offset >= state.input_next]
            if not records:
                continue
            task = self.tasks[self.source_of_shuffle[tp.topic]]
            result = task.process(records, state)
            results.append((tp, state, records[-1].offset + 1, result))
        if not results:
            return
        # 1. derived documents, acknowledged
        outputs = BatchWriter(self.producer)
        for tp, _, _, result in results:
            for output, key, value in result.documents:
                outputs.add(output.topic, tp.partition % output.spec.partitions, key, value)
        await outputs.flush()
        # 2. state changes and markers to the changelog, acknowledged
        changelog = BatchWriter(self.producer)
        changelog_tps = []
        for tp, _, input_next, result in results:
            source = self.source_of_shuffle[tp.topic]
            changelog_tp = TopicPartition(self.names.changelog(source), tp.partition)
            add_changelog(changelog, changelog_tp, result.changes, input_next)
            changelog_tps.append(changelog_tp)
        ends = await changelog.flush()
        # 3. local state and positions, atomically per partition
        for (tp, state, input_next, result), changelog_tp in zip(
            results, changelog_tps, strict=True
        ):
            state.apply(result.changes, ends[changelog_tp], input_next)
            self.progress.derived[tp] = input_next
            self.stats.derived_events += result.events
            self.stats.redeliveries += result.redeliveries
            self.stats.documents_out += len(result.documents)
        self.stats.batches += 1
        # 4. consumer offsets, for lag figures only
        await consumer.commit({tp: input_next for tp, _, input_next, _ in results})
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
