"""The partition owner: the worker's derive loop.

The owner of partition p reads partition p of a derivation source's topic AND of its shuffle
topic (one consumer, range assignment co-partitions them). Source records are routed
(`pipeline.runtime.route`: validation, dead letters, shuffle); records of the shuffle topic, and
source records already in the right partition, are derived at once. So one owner sees all of a
user's events, in arrival order, whatever key the producer used. The owner keeps RocksDB state
per shuffle partition, opened and restored from the changelog on assignment and closed on
revocation, and commits each batch as described in `pipeline.runtime.state`; its markers carry
both input positions.

`Deriver` is owned by the `Worker` (`pipeline.runtime.worker`), which passes in what it shares
explicitly: the producer, the stop event, `fail`, and the figures `segflow test` and the metrics
read (`Stats`, `LoopFigures`, `Progress`). The Deriver owns the rest: the states, the rebalance
generation and the lock that keeps a batch and a rebalance apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from pipeline.catalog import Catalog
from pipeline.catalog.profiles import IDENTITY, MEMBERS, RECORDS, STAGES
from pipeline.errors import BrokerStateLost, SegflowError
from pipeline.figures import LoopFigures, Stats
from pipeline.runtime.batches import BatchWriter
from pipeline.runtime.clock import Clock, wall_clock
from pipeline.runtime.groups import TIMERS_PER_PASS, MembersTask
from pipeline.runtime.identity import IdentityTask
from pipeline.runtime.profiles import RecordsTask
from pipeline.runtime.progress import Progress
from pipeline.runtime.route import Router
from pipeline.runtime.settings import Settings
from pipeline.runtime.state import PartitionState, add_changelog, restore
from pipeline.runtime.task import BatchResult, DerivationTask, Output
from pipeline.runtime.topics import Commits, Names, group_consumer, hold_fetches, partition_for
from pipeline.runtime.unique import UniqueTask

log = logging.getLogger(__name__)

Task = DerivationTask | IdentityTask | RecordsTask | UniqueTask | MembersTask
_Computed = tuple[TopicPartition, PartitionState, BatchResult, list[tuple[str, int]]]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a batch is computed. A batch allocates hundreds of
    thousands of short-lived dicts and lists, none in cycles, that several young collections
    would otherwise traverse; reference counting frees them, and the first collection after
    the batch sees only what survived it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Deriver:
    """The derive loop over every derivation source's topic and shuffle topic."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        names: Names,
        *,
        bootstrap: str,
        group: bool,
        stats: Stats,
        figures: LoopFigures,
        progress: Progress,
        stopping: asyncio.Event,
        fail: Callable[[Exception], None],
        clock: Clock = wall_clock,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.names = names
        self.bootstrap = bootstrap
        self.group = group
        self.stats = stats
        self.figures = figures
        self.progress = progress
        self.stopping = stopping
        self.fail = fail
        self.tasks = {
            source: make_task(catalog, source, names.collection, clock, names.shuffle)
            for source in sorted({d.source for d in catalog.derivations.values()})
        }
        self.routers = {
            names.collection(s): Router(catalog, s, task, names, stats)
            for s, task in self.tasks.items()
        }
        self.source_of_topic = {names.collection(s): s for s in self.tasks}
        self.source_of_shuffle = {names.shuffle(s): s for s in self.tasks}
        self.states: dict[TopicPartition, PartitionState] = {}
        self.generation = 0
        self.lock = asyncio.Lock()
        self.commits: Commits | None = None

    @property
    def topics(self) -> list[str]:
        """The source topics and their shuffle topics, which this loop consumes."""
        return [*self.source_of_topic, *self.source_of_shuffle]

    def close(self) -> None:
        """Close every open state (the loop has stopped)."""
        for state in self.states.values():
            state.close()
        self.states.clear()

    async def run(self, producer: AIOKafkaProducer) -> None:
        """One consumer over each source topic and its shuffle topic, partition p of both
        assigned together (range assignment, equal partition counts) to p's state owner."""
        # Assigned rather than grouped, it commits (lag offsets) outside the group a worker
        # alone holds with its guard (`pipeline.runtime.alone`).
        group = self.names.group("derive" if self.group else "derive.alone")
        consumer = group_consumer(
            self.bootstrap,
            group,
            self.settings.session_timeout_ms,
            co_partitioned=True,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
        )
        topics = self.topics
        commits = self.commits = Commits(consumer)
        self.figures.consumer = consumer
        await consumer.start()
        try:
            if self.group:
                consumer.subscribe(topics, listener=_Listener(self, consumer, producer))
            else:
                tps = [tp for t in topics for tp in await _partitions(producer, t)]
                consumer.assign(tps)
                await self._assigned(consumer, producer, tps)
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
                        await self._derive(producer, batch)
                        self.stats.batch_seconds.observe(loop.time() - fetched)
                    if generation == self.generation:
                        await self._fire(producer)
                if batch:
                    await hold_fetches(consumer, fetched + pace - loop.time(), self.stopping)
        finally:
            async with self.lock:
                with contextlib.suppress(KafkaError):
                    await commits.settle()
            # Not under the lock: stopping waits for the group coordinator, which may be in a
            # rebalance whose listener (`_revoked`, `_assigned`) waits for the lock.
            await consumer.stop()

    # -- ownership: assignment and revocation ------------------------------------------------

    def _shuffle_tp(self, tp: TopicPartition) -> TopicPartition:
        """The shuffle partition whose owner also reads source partition `tp`."""
        source = self.source_of_topic.get(tp.topic)
        return TopicPartition(self.names.shuffle(source), tp.partition) if source else tp

    async def _assigned(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        assigned: list[TopicPartition],
    ) -> None:
        """Open and restore the state of newly assigned partitions, then seek to their markers."""
        self.generation += 1
        owned = {tp for tp in assigned if tp.topic in self.source_of_shuffle}
        stray = [tp for tp in assigned if self._shuffle_tp(tp) not in owned]
        if stray:
            raise SegflowError(
                f"source partitions {stray} were assigned without their shuffle partitions: "
                "every worker must run the same catalog (range assignment co-partitions them)"
            )
        fresh: dict[TopicPartition, TopicPartition] = {}  # changelog partition -> owner
        for tp in sorted(owned):
            if tp not in self.states:
                self.states[tp] = PartitionState(self._state_dir(tp))
                changelog = self.names.changelog(self.source_of_shuffle[tp.topic])
                fresh[TopicPartition(changelog, tp.partition)] = tp
        try:
            await restore(self.bootstrap, producer, {c: self.states[o] for c, o in fresh.items()})
        except BrokerStateLost:
            if self.settings.on_state_lost != "rebuild":
                raise
            log.warning(
                "broker lost its data; rebuilding the local state of %s from scratch",
                ", ".join(f"{tp.topic}[{tp.partition}]" for tp in fresh.values()),
            )
            for tp in fresh.values():
                self.states[tp].wipe()
                self.states[tp] = PartitionState(self._state_dir(tp))
            await restore(self.bootstrap, producer, {c: self.states[o] for c, o in fresh.items()})
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

    # -- a batch -----------------------------------------------------------------------------

    async def _derive(
        self, producer: AIOKafkaProducer, batch: Mapping[TopicPartition, list[ConsumerRecord]]
    ) -> None:
        """Process a fetched batch and commit it (commit order: `pipeline.runtime.state`)."""
        writer = BatchWriter(producer)
        with _collector_paused():
            results, source_next, shuffle_next = self._compute(batch, writer)
        if results:
            await self._commit(writer, results, source_next, shuffle_next)

    async def _fire(self, producer: AIOKafkaProducer) -> None:
        """Fire the timers due by the clock (relative group rules), as a batch of their own
        that advances no input position; a pass fires a bounded number per partition, so a
        cohort flipping at once is spread over loop rounds between event batches."""
        now = self.clock()
        writer = BatchWriter(producer)
        results: list[_Computed] = []
        more = False
        with _collector_paused():
            for owner, state in self.states.items():
                task = self.tasks[self.source_of_shuffle[owner.topic]]
                if not isinstance(task, RecordsTask):
                    continue
                result = task.fire(state, now)
                if result is None:
                    continue
                more = more or result.timers_fired >= TIMERS_PER_PASS
                published = [
                    (output.spec.name, _publish(writer, output, owner.partition, result))
                    for output in task.outputs
                ]
                results.append((owner, state, result, published))
        if results:
            await self._commit(writer, results, {}, {})
        if not more and now > self.progress.timers_through:
            self.progress.timers_through = now
            await self.progress.notify()

    async def _commit(
        self,
        writer: BatchWriter,
        results: list[_Computed],
        source_next: dict[TopicPartition, int],
        shuffle_next: dict[TopicPartition, int],
    ) -> None:
        """Commit computed results whose documents are in `writer` (`pipeline.runtime.state`)."""
        # 1. derived documents, re-routed source records and dead letters, acknowledged
        acked, fed = self.progress.shuffle_acked, self.progress.source_acked
        for tp, end in (await writer.flush()).items():
            if tp.topic in self.source_of_shuffle:
                acked[tp] = max(acked.get(tp, 0), end)
            elif tp.topic in self.source_of_topic:
                fed[tp] = max(fed.get(tp, 0), end)
        # 2. state changes and markers to the changelog, acknowledged
        changelog = BatchWriter(writer.producer)
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
                result.forgotten,
            )
            source_tp = TopicPartition(
                self.names.collection(self.source_of_shuffle[owner.topic]), owner.partition
            )
            offsets[owner] = self.progress.derived[owner] = state.input_next
            offsets[source_tp] = self.progress.shuffled[source_tp] = state.source_next
            self.stats.derived_events += result.events
            self.stats.redeliveries += result.redeliveries
            self.stats.dedup_expired += result.expired
            self.stats.identity_conflicts += result.conflicts
            self.stats.records_merged += result.merges
            self.stats.group_changes += result.group_changes
            self.stats.group_evaluations += result.evaluations
            self.stats.timers_fired += result.timers_fired
            self.stats.import_rows_applied += result.rows
            self.stats.documents_out += len(result.documents)
            for collection, n in published:
                by_collection[collection] += n
        self.stats.batches += 1
        # 4. consumer offsets, for lag figures only: at most once a second while busy
        assert self.commits is not None
        await self.commits.add(offsets)
        await self.progress.notify()

    def _compute(
        self, batch: Mapping[TopicPartition, list[ConsumerRecord]], writer: BatchWriter
    ) -> tuple[list[_Computed], dict[TopicPartition, int], dict[TopicPartition, int]]:
        """Route and derive a fetched batch into `writer`: each owner's result, and the next
        input offsets of the partitions it read (source and shuffle)."""
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
                self.routers[tp.topic].route(tp.partition, records, writer, here)
                if records:
                    source_next[owner] = records[-1].offset + 1
        if self.stats.first_event_at is None and source_next:
            self.stats.first_event_at = time.monotonic()
        results: list[_Computed] = []
        for owner, items in work.items():
            if owner not in source_next and owner not in shuffle_next:
                continue
            state = self.states[owner]
            task = self.tasks[self.source_of_shuffle[owner.topic]]
            result = task.process_documents(items, state)
            published = [
                (output.spec.name, _publish(writer, output, owner.partition, result))
                for output in task.outputs
            ]
            results.append((owner, state, result, published))
        return results, source_next, shuffle_next


def make_task(
    catalog: Catalog,
    source: str,
    topic_of: Callable[[str], str],
    clock: Clock = wall_clock,
    shuffle_of: Callable[[str], str] | None = None,
) -> Task:
    """The task of the derivations reading `source`: the profile stages' own, or the generic one."""
    transforms = {d.transform for d in catalog.derivations_from(source)}
    if transforms & set(STAGES):
        if len(transforms) > 1:
            raise SegflowError(
                f"'{source}' feeds the profile stages and other derivations; give those their"
                " own copy of it"
            )
        if IDENTITY in transforms:
            return IdentityTask(catalog, source, topic_of)
        if RECORDS in transforms:
            return RecordsTask(catalog, source, topic_of, clock)
        if MEMBERS in transforms:
            return MembersTask(catalog, source, shuffle_of or topic_of)
        return UniqueTask(catalog, source, topic_of)
    return DerivationTask(catalog, source, topic_of)


def _publish(writer: BatchWriter, output: Output, partition: int, result: BatchResult) -> int:
    """Add `output`'s documents of a batch: to the owner's partition, or each to its key's."""
    documents = ((key, value) for out, key, value in result.documents if out is output)
    partitions = output.spec.partitions
    if not output.by_key:
        return writer.add_many(output.topic, partition % partitions, documents)
    n = 0
    for n, (key, value) in enumerate(documents, 1):  # noqa: B007 - n is the count
        writer.add(output.topic, partition_for(key, partitions), key, value)
    return n


async def _partitions(producer: AIOKafkaProducer, topic: str) -> list[TopicPartition]:
    parts = await producer.partitions_for(topic)
    return [TopicPartition(topic, p) for p in sorted(parts)]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self, deriver: Deriver, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer
    ) -> None:
        self.deriver = deriver
        self.consumer = consumer
        self.producer = producer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.deriver._revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        # aiokafka logs and swallows listener errors; the worker must stop on them instead.
        try:
            async with self.deriver.lock:
                await self.deriver._assigned(self.consumer, self.producer, list(assigned))
        except Exception as exc:
            self.deriver.fail(exc)
