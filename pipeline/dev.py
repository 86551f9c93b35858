"""`segflow dev`: the whole pipeline on embedded defaults, with demo traffic to watch."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import uuid
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from pipeline.catalog import Catalog
from pipeline.embedded import embedded_stack, wipe
from pipeline.read import follow, partitions_of
from pipeline.settings import Settings
from pipeline.topics import Names
from pipeline.worker import Worker

log = logging.getLogger("segflow.dev")


def demo_event(rng: random.Random) -> dict[str, object]:
    """A segmentation event like the demo's generator makes: few segments, many users."""
    vendor = rng.randint(1, 3)
    event: dict[str, object] = {
        "event": str(uuid.UUID(int=rng.getrandbits(128))),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "user": f"usr-{rng.randint(0, 40):06x}",
        "segment": {"vendor": vendor, "name": f"seg-{rng.randint(0, 3)}"},
    }
    if rng.random() < 0.3:
        event["remove"] = True
    elif rng.random() < 0.5:
        event["value"] = f"value-{rng.randint(0, 9)}"
    return event


async def feed(bootstrap: str, topic: str, rate: float, stopping: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    rng = random.Random(7)
    try:
        while not stopping.is_set():
            event = demo_event(rng)
            await producer.send(topic, orjson.dumps(event), key=str(event["event"]).encode())
            await asyncio.sleep(1 / rate)
    finally:
        await producer.stop()


async def show_toggles(bootstrap: str, topic: str) -> None:
    starts = {tp: 0 for tp in await partitions_of(bootstrap, topic)}
    async for toggle in follow(starts, bootstrap):
        seg = toggle["segment"]
        what = "left" if toggle.get("remove") else "joined"
        where = f"{seg['vendor']}/{seg['name']}"
        print(f"toggle: {toggle['user']} {what} {where} at {toggle['timestamp']}", flush=True)


async def _run(settings: Settings, catalog: Catalog, bootstrap: str, rate: float) -> None:
    worker = Worker(settings, catalog, bootstrap=bootstrap)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    names = Names(settings.topic_prefix)
    running = asyncio.create_task(worker.run())
    side: list[asyncio.Task[None]] = []
    await asyncio.sleep(0.5)  # let the worker create the topics
    if rate > 0:
        side.append(
            asyncio.create_task(
                feed(bootstrap, names.collection("segment/events"), rate, worker.stopping)
            )
        )
    if "segment/toggles" in catalog.collections:
        side.append(
            asyncio.create_task(show_toggles(bootstrap, names.collection("segment/toggles")))
        )

    async def stats() -> None:
        while True:
            await asyncio.sleep(5)
            s = worker.stats
            print(
                f"events in {s.events_in}, redeliveries {s.redeliveries}, documents out "
                f"{s.documents_out}, dead letters {s.dead_letters}",
                flush=True,
            )

    side.append(asyncio.create_task(stats()))
    try:
        await running
    finally:
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)


def run_dev(settings: Settings, catalog: Catalog, *, rate: float) -> int:
    """Start what is not configured, run everything until Ctrl-C, then stop it all."""
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    with embedded_stack(data_dir, broker=not settings.broker, postgres=not settings.postgres) as (
        broker,
        postgres,
    ):
        if broker is not None:
            # The embedded broker starts empty: state built from an earlier run is stale.
            wipe(data_dir / "state")
        bootstrap = broker.bootstrap if broker else settings.broker
        assert bootstrap
        dsn = postgres.dsn if postgres else settings.postgres
        settings = settings.with_(broker=bootstrap, postgres=dsn)
        print(
            f"segflow dev: broker {bootstrap}, postgres {dsn}, data {data_dir}; Ctrl-C stops",
            flush=True,
        )
        asyncio.run(_run(settings, catalog, bootstrap, rate))
    return 0
