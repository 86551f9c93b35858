"""`segflow dev`: the whole pipeline on embedded defaults, with demo traffic to watch."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import logging
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from derivations.profiles.uniqueness import duplicate_reason
from pipeline.catalog import Catalog, load_catalog
from pipeline.producers.generate import BrokerSink, EventGenerator, Mix, pace
from pipeline.producers.product_events import ProductEventGenerator, ProductMix
from pipeline.producers.progress import Progress
from pipeline.runtime.metrics import serve_metrics
from pipeline.runtime.produce import CollectionWriter, make_producer
from pipeline.runtime.settings import Settings
from pipeline.runtime.topics import Names
from pipeline.runtime.worker import Worker, tune_gc
from pipeline.tools import devenv
from pipeline.tools.console import console_app
from pipeline.tools.embedded import embedded_stack, free_port, port_free, wipe

log = logging.getLogger("segflow.dev")


async def feed(settings: Settings, catalog: Catalog, rate: float, stopping: asyncio.Event) -> None:
    """Demo traffic like the demo's generator: few segments and users, so toggles come often;
    and, with a profile layer in the catalog, product events at a third of the rate, from few
    people, so records merge often."""
    assert settings.broker
    events = EventGenerator(
        Mix(segments=12, users=60, vendors=3, repeat_ratio=0.05, timezones=True), rate=rate
    )
    producer = make_producer(settings.broker, settings.linger_ms)
    await producer.start()
    try:
        names = Names(settings.topic_prefix)

        async def send(collection: str, events: Iterator[dict[str, Any]], rate: float) -> None:
            writer = CollectionWriter(catalog, collection, names, producer, "segflow-dev")
            quiet = Progress(io.StringIO())
            await pace(
                events,
                BrokerSink(writer),
                rate=rate,
                count=None,
                duration=None,
                stopping=stopping,
                progress=quiet,
            )

        feeds = [send("segment/events", events, rate)]
        if catalog.profiles is not None:
            products = ProductEventGenerator(ProductMix(users=120, repeat_ratio=0.02), rate=rate)
            feeds.append(send(catalog.profiles.events, products, rate / 3))
        await asyncio.gather(*feeds)
    finally:
        await producer.stop()


async def dev_key(settings: Settings) -> tuple[str, str]:
    """A fresh key of the ingestion API for the newcomer to try: (name, key)."""
    from pipeline.producers.keys import create_key

    assert settings.postgres
    name = f"dev-{int(time.time())}"
    key = await create_key(
        settings.postgres,
        settings.postgres_schema,
        name,
        ["segment/events", "profile/events", "profile/group-members"],
    )
    return name, key


async def api(settings: Settings, port: int, name: str, key: str) -> None:
    """The ingestion API, with the curl lines to try it."""
    from pipeline.producers.api import serve

    event = (
        '{"event": "6f1c2d3e-4b5a-4c6d-8e7f-001122334455", "timestamp": '
        '"2024-05-01T12:00:00Z", "user": "you", "segment": {"vendor": 1, "name": "seg-0"}}'
    )
    product = (
        '{"id": "6f1c2d3e-4b5a-4c6d-8e7f-001122334466", "type": "purchase", "userId": "you", '
        '"data": {"total": 42.5}}'
    )
    print(
        f"ingestion API on http://127.0.0.1:{port}/ingest/segment/events, key {name!r}:\n"
        f"  curl -H 'Authorization: Bearer {key}' -d '{event}' "
        f"http://127.0.0.1:{port}/ingest/segment/events\n"
        f"  curl -H 'Authorization: Bearer {key}' -d '{product}' "
        f"http://127.0.0.1:{port}/ingest/profile/events\n"
        f'  curl -H \'Authorization: Bearer {key}\' -d \'{{"add": [{{"userId": "you"}}]}}\' '
        f"http://127.0.0.1:{port}/groups/vip/members",
        flush=True,
    )
    await serve(settings, "127.0.0.1", port)


WAREHOUSE_PLANS = ("free", "starter", "pro", "enterprise")


def create_warehouse(dsn: str, people: int = 120) -> str:
    """The demo's "warehouse": a database `warehouse` beside Segflow's on the embedded server,
    with a table `warehouse_users(user_id, plan, seats, updated_at)` holding a plan for each
    person of the demo's product events. Its DSN (the catalog's import reads it)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute("select 1 from pg_database where datname = 'warehouse'").fetchone()
        if found is None:
            conn.execute("create database warehouse")
    warehouse = psycopg.conninfo.make_conninfo(dsn, dbname="warehouse")
    with psycopg.connect(warehouse, autocommit=True) as conn:
        conn.execute(
            "create table if not exists warehouse_users (user_id text primary key, plan text,"
            " seats integer, updated_at timestamptz not null default now())"
        )
        conn.cursor().executemany(
            "insert into warehouse_users (user_id, plan, seats) values (%s, %s, %s)"
            " on conflict (user_id) do nothing",
            [
                (f"user-{p:06d}", WAREHOUSE_PLANS[p % len(WAREHOUSE_PLANS)], 1 + p % 7)
                for p in range(people)
            ],
        )
    return warehouse


async def upgrade_plans(warehouse: str, every: float = 20.0, people: int = 120) -> None:
    """Every `every` seconds, a few demo people change plan in the warehouse (the import picks
    the rows up by their new `updated_at`)."""
    step = 0
    while True:
        await asyncio.sleep(every)
        step += 1
        chosen = [f"user-{(step * 7 + i * 31) % people:06d}" for i in range(3)]
        plan = WAREHOUSE_PLANS[step % len(WAREHOUSE_PLANS)]
        try:
            async with await psycopg.AsyncConnection.connect(warehouse, autocommit=True) as conn:
                await conn.execute(
                    "update warehouse_users set plan = %s, updated_at = now()"
                    " where user_id = any(%s)",
                    (plan, chosen),
                )
        except psycopg.Error as exc:
            log.warning("demo warehouse: %s", exc)


async def _rows(settings: Settings, sql: str, params: tuple[Any, ...]) -> list[Any] | str:
    """The rows of a query on the demo's Postgres, or why there are none yet (the tables are
    not created yet, or Postgres is busy: the caller says so and the demo keeps going)."""
    assert settings.postgres
    try:
        async with await psycopg.AsyncConnection.connect(settings.postgres) as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()
    except psycopg.Error as exc:
        return f"not readable yet ({type(exc).__name__})"


async def records_line(settings: Settings, merged: int, conflicts: int) -> str:
    """What `profile_records` holds now: the records being built and merged."""
    rows = await _rows(
        settings,
        "select count(*), count(user_id), coalesce(sum(cardinality(anonymous_ids))"
        " filter (where user_id is not null), 0),"
        " count(*) filter (where cardinality(anonymous_ids) > 1),"
        " coalesce(sum((properties ->> 'purchases')::int), 0),"
        " count(*) filter (where invalid::text like %s)"
        f' from "{settings.postgres_schema}".profile_records',
        (f'%"{duplicate_reason("")}%',),  # the reason's wording, whoever holds it
    )
    if isinstance(rows, str):
        return f"records: {rows}"
    ((records, identified, devices, several, purchases, duplicates),) = rows
    return (
        f"records {records} in profile_records ({identified} people with {devices} devices,"
        f" {several} on several; {records - identified} anonymous), {purchases} purchases;"
        f" merged {merged}, identity conflicts {conflicts}; {duplicates} lost a unique value"
        " to an older record"
    )


async def groups_line(settings: Settings, vendor: int, changes: int, timers: int) -> str:
    """Who is in each group now (segment_memberships rows of the groups' vendor), and how many
    changes there were, how many of them on the clock with no event."""
    rows = await _rows(
        settings,
        "select segment_name, count(*) filter (where member), count(*)"
        f' from "{settings.postgres_schema}".segment_memberships'
        " where vendor = %s group by segment_name order by segment_name",
        (vendor,),
    )
    if isinstance(rows, str):
        return f"groups: {rows}"
    sizes = ", ".join(f"{name} {members} (of {ever})" for name, members, ever in rows)
    return (
        f"groups (segment_memberships, vendor {vendor}): {sizes or 'none yet'};"
        f" {changes} joins and leaves, records fired by the clock {timers}"
    )


def flows_line(worker: Worker) -> str:
    """Imports and destinations: rows read per import, exports delivered per destination."""
    parts = [
        f"import {r.spec.name}: {r.stats.rows} rows read in {r.stats.runs} runs"
        + (f", {r.stats.errors} errors" if r.stats.errors else "")
        for r in worker.imports
    ]
    for m in worker.destinations:
        figures = {f.name: f.value for f in m.sink.figures()}
        name = m.spec.name.removeprefix("destination.")
        if "destination_exports_delivered_total" in figures:
            exports = figures["destination_exports_delivered_total"]
            events = figures.get("destination_events_delivered_total", 0)
            parts.append(f"destination {name}: {exports} exports, {events} events delivered")
        else:
            upserted = figures.get("destination_postgres_rows_upserted_total", 0)
            parts.append(f"destination {name}: {upserted} rows written")
    return "; ".join(parts)


async def _run(
    settings: Settings,
    catalog: Catalog,
    bootstrap: str,
    rate: float,
    receiver_port: int | None,
    api_port: int,
    warehouse: str | None = None,
) -> None:
    tune_gc()
    # The embedded broker is this process's own: no group to wait for.
    worker = Worker(settings.with_(alone=True), catalog, bootstrap=bootstrap)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    console = functools.partial(console_app, worker, settings, catalog, bootstrap)
    endpoint = await serve_metrics(worker, settings.metrics_addr, console)
    running = asyncio.create_task(worker.run())
    side: list[asyncio.Task[None]] = []
    if receiver_port is not None:
        from materializations.receiver import serve

        side.append(asyncio.create_task(serve(receiver_port, settings.webhook_secret, 0)))
    await asyncio.sleep(0.5)  # let the worker create the topics
    found = {
        "SEGFLOW_BROKER": bootstrap,
        "SEGFLOW_POSTGRES": settings.postgres or "",
        "SEGFLOW_POSTGRES_SCHEMA": settings.postgres_schema,
        "SEGFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "SEGFLOW_CATALOG": str(settings.catalog.resolve()),
        "SEGFLOW_WEBHOOK_URL": settings.webhook_url or "",
        "SEGFLOW_WEBHOOK_SECRET": settings.webhook_secret or "",
    }
    if settings.postgres:
        name, key = await dev_key(settings)
        found |= {"SEGFLOW_API_URL": f"http://127.0.0.1:{api_port}", "SEGFLOW_API_KEY": key}
        side.append(asyncio.create_task(api(settings, api_port, name, key)))
    if endpoint is not None:
        port = endpoint.addresses[0][1]
        found |= {
            "SEGFLOW_METRICS_URL": f"http://127.0.0.1:{port}/metrics",
            "SEGFLOW_CONSOLE_URL": f"http://127.0.0.1:{port}/console/",
        }
        print(f"console on http://127.0.0.1:{port}/console/", flush=True)
    written = devenv.write({k: v for k, v in found.items() if v})
    print(f"segflow read, dlq, keys ... run from here find this stack in {written}", flush=True)
    if rate > 0:
        side.append(asyncio.create_task(feed(settings, catalog, rate, worker.stopping)))

    async def stats() -> None:
        while True:
            await asyncio.sleep(5)
            s = worker.stats
            print(
                f"events in {s.events_in}, redeliveries {s.redeliveries}, documents out "
                f"{s.documents_out}, dead letters {s.dead_letters}",
                flush=True,
            )
            if catalog.profiles is not None and settings.postgres:
                line = await records_line(settings, s.records_merged, s.identity_conflicts)
                print(line, flush=True)
                vendor = catalog.profiles.group_vendor
                if vendor is not None:
                    line = await groups_line(settings, vendor, s.group_changes, s.timers_fired)
                    print(line, flush=True)
            if worker.imports or worker.destinations:
                print(flows_line(worker), flush=True)

    if warehouse is not None:
        side.append(asyncio.create_task(upgrade_plans(warehouse)))
    side.append(asyncio.create_task(stats()))
    try:
        await running
    finally:
        devenv.remove()
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)
        if endpoint is not None:
            await endpoint.cleanup()


def run_dev(settings: Settings, *, rate: float, api_port: int) -> int:
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
        warehouse = None
        if postgres is not None and not os.environ.get("SEGFLOW_WAREHOUSE_DSN"):
            warehouse = create_warehouse(postgres.dsn)  # the demo's import reads it
            os.environ["SEGFLOW_WAREHOUSE_DSN"] = warehouse
        if receiver_port is not None and not os.environ.get("SEGFLOW_DESTINATION_URL"):
            os.environ["SEGFLOW_DESTINATION_URL"] = url + "crm"  # the demo destination's
        catalog = load_catalog(settings.catalog)
        settings = settings.with_(
            broker=bootstrap, postgres=dsn, webhook_url=url, webhook_secret=secret
        )
        print(
            f"segflow dev: broker {bootstrap}, postgres {dsn}, webhooks to {url}, "
            f"data {data_dir}; Ctrl-C stops",
            flush=True,
        )
        if api_port == 0 or not port_free(api_port):  # 0: any free one, named in dev.env
            api_port = free_port()
        metrics = settings.metrics_addr
        if metrics is not None and not os.environ.get("SEGFLOW_METRICS_ADDR"):
            # The console is open on loopback; beyond it, it would ask for a key.
            metrics = ("127.0.0.1", metrics[1])
            settings = settings.with_(metrics_addr=metrics)
        if metrics is not None and metrics[1] and not port_free(metrics[1]):
            settings = settings.with_(metrics_addr=(metrics[0], 0))
        asyncio.run(_run(settings, catalog, bootstrap, rate, receiver_port, api_port, warehouse))
    return 0
