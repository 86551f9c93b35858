"""`segflow dev`: the whole pipeline on embedded defaults, with demo traffic to watch."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import signal
import uuid
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from pipeline.catalog import Catalog, load_catalog
from pipeline.embedded import embedded_stack, free_port, wipe
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


async def _run(
    settings: Settings, catalog: Catalog, bootstrap: str, rate: float, receiver_port: int | None
) -> None:
    worker = Worker(settings, catalog, bootstrap=bootstrap)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    names = Names(settings.topic_prefix)
    running = asyncio.create_task(worker.run())
    side: list[asyncio.Task[None]] = []
    if receiver_port is not None:
        from materializations.receiver import serve

        side.append(asyncio.create_task(serve(receiver_port, settings.webhook_secret, 0)))
    await asyncio.sleep(0.5)  # let the worker create the topics
    if rate > 0:
        topic = names.collection("segment/events")
        side.append(asyncio.create_task(feed(bootstrap, topic, rate, worker.stopping)))

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


def run_dev(settings: Settings, *, rate: float) -> int:
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
        receiver_port = None
        url, secret = settings.webhook_url, settings.webhook_secret
        if not url:  # the demo receiver, printing what it gets
            receiver_port = free_port()
            url = f"http://127.0.0.1:{receiver_port}/"
            secret = secret or "whsec_" + base64.b64encode(os.urandom(24)).decode()
        # The catalog reads these through ${...}; what was started here fills them in.
        os.environ.update(
            SEGFLOW_POSTGRES=dsn or "", SEGFLOW_WEBHOOK_URL=url, SEGFLOW_WEBHOOK_SECRET=secret or ""
        )
        catalog = load_catalog(settings.catalog)
        settings = settings.with_(
            broker=bootstrap, postgres=dsn, webhook_url=url, webhook_secret=secret
        )
        print(
            f"segflow dev: broker {bootstrap}, postgres {dsn}, webhooks to {url}, "
            f"data {data_dir}; Ctrl-C stops",
            flush=True,
        )
        asyncio.run(_run(settings, catalog, bootstrap, rate, receiver_port))
    return 0
