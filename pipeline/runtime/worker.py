"""The worker: one process's share of the pipeline.

It validates source documents, runs derivations and publishes results in its derive loop
(`pipeline.runtime.derive`, the partition owner, which commits each batch as described in
`pipeline.runtime.state`), and runs the materializations beside it
(`pipeline.runtime.materialize`). The Worker holds the lifecycle: the producer both share, the
loops it starts, stopping and failing. It owns its `Deriver` (composition, not a back-reference)
and passes it what they share explicitly; it also exposes the figures `pipeline.runtime.metrics`
reads (`Observed`) and the `caught_up` barrier (`pipeline.runtime.progress`).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Mapping

from aiokafka import AIOKafkaProducer, TopicPartition

from materializations.destinations import materialization_of
from pipeline.catalog import Catalog
from pipeline.errors import SegflowError
from pipeline.figures import LoopFigures, Stats
from pipeline.runtime.alone import Guard
from pipeline.runtime.clock import Clock, wall_clock
from pipeline.runtime.derive import Deriver
from pipeline.runtime.imports import Checkpoints, ImportRunner, run_schedule
from pipeline.runtime.materialize import Materializer, run_in_thread
from pipeline.runtime.progress import Progress
from pipeline.runtime.settings import Settings
from pipeline.runtime.state import PartitionState
from pipeline.runtime.topics import Names, ensure_topics, pipeline_topics


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
        clock: Clock = wall_clock,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.bootstrap = bootstrap
        self.group = group and not settings.alone
        self.materialize = materialize
        self.names = Names(settings.topic_prefix)
        self.stats = Stats()
        self.figures = LoopFigures("derive")
        """Lag and last round of the derive loop, for `pipeline.runtime.metrics`."""
        self.progress = Progress()
        self.stopping = asyncio.Event()
        self.loops_stopped = asyncio.Event()
        """Set once every loop has stopped and committed (a guard then lets go of the group)."""
        self.failure: Exception | None = None
        self.sinks: list[Materializer] = []
        self.imports: list[ImportRunner] = []
        """The imports this worker schedules (their figures: `pipeline.runtime.metrics`)."""
        self.producer: AIOKafkaProducer | None = None
        self.deriver = Deriver(
            settings,
            catalog,
            self.names,
            bootstrap=bootstrap,
            group=self.group,
            stats=self.stats,
            figures=self.figures,
            progress=self.progress,
            stopping=self.stopping,
            fail=self.fail,
            clock=clock,
        )

    @property
    def states(self) -> Mapping[TopicPartition, PartitionState]:
        """The shuffle partitions this worker owns now (for `/health`)."""
        return self.deriver.states

    @property
    def destinations(self) -> list[Materializer]:
        """The materializations running destinations (SPEC 9), for `segflow dev`'s lines."""
        return [m for m in self.sinks if m.spec.kind == "destination"]

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
        guarding: asyncio.Task[None] | None = None
        try:
            self.imports = self.import_runners()
            loops = []
            if self.deriver.tasks:
                loops.append(asyncio.create_task(self.deriver.run(self.producer), name="deriver"))
            if self.imports:
                loops.append(asyncio.create_task(self._run_imports(), name="imports"))
            if materializers := self.materializers():
                loops.append(
                    asyncio.create_task(
                        run_in_thread(materializers, self.stopping), name="materialize"
                    )
                )
            stop = asyncio.create_task(self.stopping.wait())
            watched = [*loops, stop]
            if self.settings.alone and self.deriver.tasks:
                guard = await self._guard()
                guarding = asyncio.create_task(guard.run(self.stopping), name="alone-guard")
                watched.append(guarding)
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            self.stopping.set()
            results = await asyncio.gather(*loops, return_exceptions=True)
            self.loops_stopped.set()
            if guarding is not None:
                results.append(*await asyncio.gather(guarding, return_exceptions=True))
            stop.cancel()
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            if self.failure is not None:
                raise self.failure
        finally:
            self.loops_stopped.set()
            if guarding is not None and not guarding.done():
                guarding.cancel()
            await self.producer.stop()
            self.deriver.close()

    async def _guard(self) -> Guard:
        """The guard of a worker alone: membership of the derive loop's group."""
        assert self.producer is not None
        partitions = [
            TopicPartition(topic, p)
            for topic in self.deriver.topics
            for p in sorted(await self.producer.partitions_for(topic))
        ]
        return Guard(
            self.bootstrap,
            self.names.group("derive"),
            partitions,
            self.settings.session_timeout_ms,
            fail=self.fail,
            stopped=self.loops_stopped,
        )

    def import_runners(self) -> list[ImportRunner]:
        """The catalog's enabled imports (SPEC 10), each run on its schedule by this worker
        while no other process runs it. Their checkpoints live in Segflow's Postgres."""
        specs = [spec for spec in self.catalog.imports.values() if spec.enabled]
        if not specs:
            return []
        if self.settings.postgres is None:
            names = ", ".join(spec.name for spec in specs)
            raise SegflowError(
                f"imports ({names}) keep their checkpoints in Segflow's Postgres: set"
                " SEGFLOW_POSTGRES"
            )
        checkpoints = Checkpoints(self.settings.postgres, self.settings.postgres_schema)
        assert self.producer is not None
        return [
            ImportRunner(spec, self.catalog, self.names, checkpoints, self.producer)
            for spec in specs
        ]

    async def _run_imports(self) -> None:
        await asyncio.gather(*(run_schedule(runner, self.stopping) for runner in self.imports))

    def materializers(self) -> list[Materializer]:
        """The catalog's enabled materializations and destinations (none when `materialize`
        is off)."""
        if not self.materialize:
            return []
        assert self.producer is not None
        specs = [spec for spec in self.catalog.materializations.values() if spec.enabled]
        if (profiles := self.catalog.profiles) is not None:
            specs += [
                materialization_of(destination, profiles.records)
                for destination in self.catalog.destinations.values()
                if destination.enabled
            ]
        self.sinks = [
            Materializer(
                self.settings,
                self.catalog,
                spec,
                bootstrap=self.bootstrap,
                producer=self.producer,
                group=self.group,
            )
            for spec in specs
        ]
        return self.sinks

    def stop(self) -> None:
        self.stopping.set()

    def fail(self, exc: Exception) -> None:
        """Stop because of `exc`, which `run()` then raises."""
        self.failure = self.failure or exc
        self.stopping.set()

    async def caught_up(self, targets: Mapping[TopicPartition, int]) -> None:
        """Wait until every source record before `targets` is fully processed and published."""
        await self.progress.caught_up(targets)
