"""Runs a catalog's materializations: a consumer per materialization feeding its sink.

Commit order: apply every fetched record to the sink; as soon as `SEGFLOW_SINK_INTERVAL_MS` has
passed since the previous flush began (or sooner, after a full batch), flush the sink (durable
at the endpoint, with the sink's own checkpoint where it keeps one), then commit the offsets the
flush returned to the consumer group (at most once a second while records keep coming, and at
once when the input goes idle, a partition is revoked or the worker stops: a crash in between
only means some records are flushed a second time, which every sink takes). A sink error that
can be retried (connection lost, Postgres restarting) closes and reopens the sink and flushes
again, without fetching more; nothing is acknowledged before it is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from materializations.base import Sink
from pipeline.catalog import BindingSpec, Catalog, MaterializationSpec
from pipeline.figures import LoopFigures
from pipeline.runtime.settings import Settings
from pipeline.runtime.topics import Commits, Names, group_consumer, hold_fetches

log = logging.getLogger(__name__)

STOP_GRACE = 15.0
"""Seconds a materialization may take to stop (webhooks drain for up to 10 of them)."""

BACKLOG_LIMIT = 50_000
"""Queued webhook toggles above which fetching pauses until the endpoint catches up."""


def make_sink(
    spec: MaterializationSpec,
    topics: Mapping[str, BindingSpec],
    dead_letter: Callable[[bytes, dict[str, str]], Awaitable[None]],
    *,
    catalog: Catalog | None = None,
    settings: Settings | None = None,
) -> Sink:
    """The sink of `spec`'s kind; a destination's (`materializations.destinations`) also needs
    the catalog that declares it and the settings naming Segflow's own Postgres."""
    if spec.kind == "destination":
        from materializations import destinations

        assert catalog is not None and settings is not None, "a destination needs both"
        return destinations.make(
            catalog.destinations[spec.name.removeprefix(destinations.PREFIX)],
            spec,
            topics,
            dead_letter=dead_letter,
            settings_postgres=settings.postgres,
            settings_schema=settings.postgres_schema,
        )
    if spec.kind == "postgres":
        from materializations.postgres import PostgresSink

        return PostgresSink(spec, topics, dead_letter=dead_letter)
    if spec.kind == "webhook":
        from materializations.webhook import WebhookSink

        return WebhookSink(spec, topics, dead_letter=dead_letter)
    raise ValueError(f"unknown materialization kind {spec.kind!r}")


class Materializer:
    """One materialization of the catalog, run inside a worker."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        spec: MaterializationSpec,
        *,
        bootstrap: str,
        producer: AIOKafkaProducer,
        group: bool = True,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.bootstrap = bootstrap
        self.producer = producer
        self.group = group
        self.names = Names(settings.topic_prefix)
        self.topics = {self.names.collection(b.source): b for b in spec.bindings}
        self.sink = make_sink(
            spec, self.topics, self._dead_letter, catalog=catalog, settings=settings
        )
        self.commits: Commits | None = None
        self.records = 0
        """Records applied to the sink so far."""
        self.flushes = 0
        """Flushes that made something durable."""
        self.home: asyncio.AbstractEventLoop | None = None
        """The event loop `producer` belongs to, when this runs on another one."""
        self.figures = LoopFigures(f"materialize.{spec.name}")
        """Lag and last round of this materialization's loop, for `pipeline.runtime.metrics`."""

    async def _dead_letter(self, body: bytes, headers: dict[str, str]) -> None:
        sent = self.producer.send_and_wait(
            self.names.sink_dead_letter(self.spec.name),
            body,
            headers=[(k, v.encode()) for k, v in headers.items()],
        )
        if self.home is None or self.home is asyncio.get_running_loop():
            await sent
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(sent, self.home))

    async def run(self, stopping: asyncio.Event) -> None:
        group = self.names.group(f"materialize.{self.spec.name}")
        # A destination reads partition p of the records and of the forwarded events together.
        consumer = group_consumer(
            self.bootstrap,
            group,
            self.settings.session_timeout_ms,
            co_partitioned=self.spec.kind == "destination",
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
        )
        commits = self.commits = Commits(consumer)
        self.figures.consumer = consumer
        if not await self._open(stopping):
            return
        await consumer.start()
        try:
            if self.group:
                consumer.subscribe(list(self.topics), listener=_Seek(self, consumer))
            else:
                partitions = [
                    TopicPartition(topic, p)
                    for topic in self.topics
                    for p in sorted(await self.producer.partitions_for(topic))
                ]
                consumer.assign(partitions)
                await self.seek(consumer, partitions)
            loop = asyncio.get_running_loop()
            interval = self.settings.sink_interval_ms / 1000
            most = self.settings.batch_max_records
            applied, due = 0, math.inf  # records applied since the last flush; when it is due
            began = -math.inf  # when the last flush with records began
            held = False  # whether fetching was just held back until `due`
            while not stopping.is_set():
                wait = min(0.2, max(0.02 if held else 0.0, due - loop.time()))
                batch = await consumer.getmany(timeout_ms=int(wait * 1000), max_records=most)
                self.figures.fetched(batch)
                held = False
                for tp, records in batch.items():
                    await self.sink.apply(self.topics[tp.topic], records)
                    applied += len(records)
                    self.records += len(records)
                if applied and due == math.inf:
                    # One write per interval, start to start: records that came in while a
                    # slow write ran (or after a quiet spell) have waited long enough.
                    due = max(loop.time(), began + interval)
                # An idle round flushes too: the webhook sink reports deliveries there.
                if applied >= most or loop.time() >= due or not (applied or batch):
                    if applied:
                        began = loop.time()
                    await self._flush(stopping)
                    applied, due = 0, math.inf
                elif batch:
                    # Nothing is written before `due`: fetch what comes until then at once.
                    await hold_fetches(consumer, due - loop.time(), stopping)
                    held = True
                if not batch:
                    await commits.settle()
                self._backpressure(consumer)
            drain = getattr(self.sink, "drain", None)
            if drain is not None:
                await drain(10.0)
            await self._flush(stopping)
            await commits.settle()
        finally:
            await consumer.stop()
            await self.sink.close()

    async def seek(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        """Resume where the sink's own checkpoint says, where it keeps one."""
        for tp, offset in (await self.sink.positions(partitions)).items():
            if offset is not None:
                consumer.seek(tp, offset)

    async def _open(self, stopping: asyncio.Event) -> bool:
        """Open the sink, retrying what can be retried until it opens (True) or the worker
        stops (False)."""
        delay = 0.5
        while True:
            try:
                await self.sink.open()
                return True
            except Exception as exc:
                if not _retriable(exc):
                    raise
                if stopping.is_set():
                    log.warning("%s: cannot open (%s); stopping", self.spec.name, exc)
                    return False
                log.warning("%s: cannot open (%s); retrying in %.1fs", self.spec.name, exc, delay)
                await _wait(stopping, delay)
                delay = min(delay * 2, 30.0)

    async def _flush(self, stopping: asyncio.Event) -> None:
        """Flush the sink, then commit what it made durable. A retriable failure is tried
        again with backoff until it lands or the worker stops: then the flush is given up,
        and what it held is read and written again by whoever owns the partitions next."""
        delay = 0.5
        while True:
            try:
                offsets = await self.sink.flush()
                break
            except Exception as exc:
                if not _retriable(exc):
                    raise
                if stopping.is_set():
                    log.warning(
                        "%s: write failed (%s); stopping without it (not committed: read again"
                        " at the next start)",
                        self.spec.name,
                        exc,
                    )
                    return
                log.warning("%s: write failed (%s); retrying in %.1fs", self.spec.name, exc, delay)
                await _wait(stopping, delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 30.0)
                await self.sink.close()
                if not await self._open(stopping):
                    return
        if offsets:
            self.flushes += 1
            assert self.commits is not None
            await self.commits.add(offsets)

    def _backpressure(self, consumer: AIOKafkaConsumer) -> None:
        backlog = getattr(self.sink, "backlog", 0)
        assigned = list(consumer.assignment())
        if backlog > BACKLOG_LIMIT:
            consumer.pause(*assigned)
        elif consumer.paused():
            consumer.resume(*assigned)


async def run_in_thread(materializers: Sequence[Materializer], stopping: asyncio.Event) -> None:
    """Run `materializers` on a thread of their own, with its own event loop, until `stopping`
    is set or this is cancelled (either way they finish their last flush first), or one of them
    fails (which is raised here).

    The derivation keeps its event loop busy for up to a few hundred milliseconds per batch; a
    sink sharing that loop would see each Postgres round trip and fetch wait that long, so a
    write took 0.5-2 s of which Postgres needed 0.2 s. On their own loop, the sinks' I/O is
    served within the interpreter's switch interval (5 ms) instead.
    """
    if not materializers:
        return
    home = asyncio.get_running_loop()
    for materializer in materializers:
        materializer.home = home
    stop_asked = threading.Event()
    stoppers: list[Callable[[], object]] = []  # how to stop them, once their loop runs

    async def main() -> None:
        stop = asyncio.Event()
        here = asyncio.get_running_loop()
        stoppers.append(lambda: here.call_soon_threadsafe(stop.set))
        if stop_asked.is_set():  # asked before the line above (else the asker uses it)
            stop.set()
        runs = [
            asyncio.create_task(m.run(stop), name=f"materialize {m.spec.name}")
            for m in materializers
        ]
        watchdog = asyncio.create_task(_cancel_late(runs, stop))
        await asyncio.wait(runs, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()  # one failed: stop the others (a clean return only happens once stopping)
        await asyncio.wait(runs)
        watchdog.cancel()
        for result in await asyncio.gather(*runs, return_exceptions=True):
            # Cancelled means stopped late by `_cancel_late`: not a failure.
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result

    thread = asyncio.create_task(asyncio.to_thread(asyncio.run, main()))
    stopped = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait([thread, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        stop_asked.set()
        for stopper in stoppers:
            with contextlib.suppress(RuntimeError):  # its loop already closed
                stopper()
        await asyncio.shield(thread)


async def _cancel_late(runs: Sequence[asyncio.Task[None]], stop: asyncio.Event) -> None:
    """Cancel what has not finished `STOP_GRACE` seconds after `stop` (a write that hangs)."""
    await stop.wait()
    _, late = await asyncio.wait(runs, timeout=STOP_GRACE)
    for task in late:
        log.warning("%s: still busy %.0fs after the stop; cancelled", task.get_name(), STOP_GRACE)
        task.cancel()


async def _wait(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if the worker stops meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


def _retriable(exc: BaseException) -> bool:
    """Whether a sink error is the endpoint's, not the data's: the write is tried again."""
    if getattr(exc, "retriable", False):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return isinstance(exc, OSError)
    if isinstance(exc, psycopg.errors.ProgramLimitExceeded):  # about a row's data
        return False
    return isinstance(exc, OSError | psycopg.OperationalError | psycopg.InterfaceError)


class _Seek(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, materializer: Materializer, consumer: AIOKafkaConsumer) -> None:
        self.materializer = materializer
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self.materializer.commits is not None:  # else the new owner flushes them again
            await self.materializer.commits.release(revoked, self.materializer.spec.name)
        await self.materializer.sink.revoke(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.materializer.seek(self.consumer, list(assigned))
