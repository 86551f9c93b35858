"""Imports (SPEC 10) against a real Postgres source table (its own database on the embedded
server) and the real broker: paging by watermark with ties across pages, a restart between
pages, updates and new rows between runs, `segflow imports run`, typed values, and a source that
cannot be reached.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from pipeline.catalog import Catalog, load_catalog
from pipeline.catalog.profiles import identified
from pipeline.runtime.imports import Checkpoints, ImportRunner, run_schedule
from pipeline.runtime.topics import ensure_topics, pipeline_topics, read_to_end
from pipeline.tools.embedded import free_port
from pipeline.tools.read import current_documents
from tests.fixtures.stack import ROOT, Namespace
from tests.integration.test_pipeline import stop
from tests.integration.test_profiles import settled

pytestmark = pytest.mark.integration

CATALOG = """\
collections:
  profile/events:
    schema: {schemas}/profile-event.schema.yaml
    key: [/id]
    partitions: 2
    dedup: 7d
  profile/records:
    schema: {schemas}/profile-record.schema.yaml
    key: [/id]
    partitions: 2
profiles:
  properties:
    plan:  {{type: string, from: {{import: warehouse, column: plan}}}}
    seats: {{type: integer, from: {{import: warehouse, column: seats}}}}
    visits: {{type: integer, from: {{events: "*", aggregate: count}}}}
    tier:  {{type: string, from: {{import: devices, column: tier}}}}
imports:
  warehouse:
    postgres: {{dsn: "${{WAREHOUSE_DSN}}", table: users}}
    watermark: updated_at
    interval: 1h
    pageSize: 4
    identity: {{userId: id}}
  devices:
    postgres: {{dsn: "${{WAREHOUSE_DSN}}", query: "select device, tier, seen from devices"}}
    watermark: seen
    interval: 1h
    identity: {{anonymousId: device}}
"""

# Ten rows, watermarks 1,1,1 | 2,2,2,2,2 | 3,3: pages of 4 cut through the ties of 1 and of 2.
ROWS = [
    (1, "free", "1", 1),
    (2, "free", "2", 1),
    (3, "pro", "3", 1),
    (4, "pro", "4", 2),
    (5, "team", "5", 2),
    (6, "team", "6", 2),
    (7, "free", "7", 2),
    (8, "pro", "8", 2),
    (9, "team", "9", 3),
    (10, "pro", "many", 3),
]


@pytest.fixture
def warehouse(postgres: str) -> Iterator[str]:
    """A database of the test's own on the embedded server, with its `users` table."""
    name = f"wh_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    dsn = psycopg.conninfo.make_conninfo(postgres, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create table users (id int, plan text, seats text, updated_at int)")
        conn.cursor().executemany("insert into users values (%s, %s, %s, %s)", ROWS)
        conn.execute("create table devices (device text, tier text, seen timestamptz)")
        conn.execute(
            "insert into devices values ('d1', 'gold', '2024-05-01T10:00:00Z'),"
            " ('d2', 'silver', '2024-05-01T11:00:00Z')"
        )
    yield dsn
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"drop database {name} with (force)")


@pytest.fixture
async def ns(
    broker: str, warehouse: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Namespace]:
    directory = tmp_path / "catalog"
    directory.mkdir()
    (directory / "imports.yaml").write_text(CATALOG.format(schemas=ROOT / "schemas"))
    monkeypatch.setenv("WAREHOUSE_DSN", warehouse)
    catalog: Catalog = load_catalog(directory)
    namespace = Namespace(broker, catalog, f"t{uuid.uuid4().hex[:10]}.", tmp_path / "data")
    namespace.catalog_dir = directory  # type: ignore[attr-defined]
    await ensure_topics(broker, pipeline_topics(catalog, namespace.names))
    yield namespace


def env(ns: Namespace, postgres: str, schema: str) -> dict[str, str]:
    return ns.env(
        SEGFLOW_CATALOG=str(ns.catalog_dir),  # type: ignore[attr-defined]
        SEGFLOW_POSTGRES=postgres,
        SEGFLOW_POSTGRES_SCHEMA=schema,
    )


async def runner(ns: Namespace, postgres: str, schema: str) -> tuple[ImportRunner, Any]:
    producer = AIOKafkaProducer(bootstrap_servers=ns.bootstrap, acks="all")
    await producer.start()
    spec = ns.catalog.imports["warehouse"]
    checkpoints = Checkpoints(postgres, schema)
    return ImportRunner(spec, ns.catalog, ns.names, checkpoints, producer), producer


async def written_rows(ns: Namespace) -> list[dict[str, Any]]:
    """The import rows written for the records stage (a userId identity goes straight there):
    every row read, those read twice too."""
    middle = identified("profile/records")
    topic = ns.names.collection(middle)
    partitions = ns.catalog.collections[middle].partitions
    found = []
    starts = {TopicPartition(topic, p): 0 for p in range(partitions)}
    async for batch in read_to_end(ns.bootstrap, starts):
        for record in batch:
            doc = orjson.loads(record.value)
            if "im" in doc:
                found.append(doc["im"])
    return found


async def applied(port: int) -> int:
    """Import rows the worker applied to records (`/metrics`): each row once."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as answer,
    ):
        text = await answer.text()
    for line in text.splitlines():
        if line.startswith("segflow_profile_import_rows_applied_total "):
            return int(float(line.split()[1]))
    return 0


async def records(ns: Namespace) -> dict[str, dict[str, Any]]:
    spec = ns.catalog.collections["profile/records"]
    topic = ns.names.collection("profile/records")
    return {d["id"]: d for d in await current_documents(ns.bootstrap, topic, spec)}


def segflow(ns: Namespace, postgres: str, schema: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.tools.cli", *args],
        env=env(ns, postgres, schema),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_pages_ties_restart_updates_and_new_rows(
    ns: Namespace, warehouse: str, postgres: str, pg_schema: str, tmp_path: Path
) -> None:
    # A first run stops after its first page, as a crash between pages would: the page is
    # acknowledged by the broker and checkpointed, the rest is not read.
    first, producer = await runner(ns, postgres, pg_schema)
    pages = iter(range(2))
    try:
        await first.run_once(lambda: next(pages) > 0)
    finally:
        await producer.stop()
    assert first.stats.pages == 1 and first.stats.rows == 4
    # Device d1 signed in as person 3: its rows (an anonymousId identity) go to 3's record.
    signin = {"id": str(uuid.uuid4()), "type": "signin", "userId": 3, "anonymousId": "d1"}
    await ns.produce("profile/events", [signin])
    # The worker's schedule resumes at that page and reads to the end.
    port = free_port()
    with (tmp_path / "worker.log").open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline.tools.cli", "worker"],
            env={**env(ns, postgres, pg_schema), "SEGFLOW_METRICS_ADDR": f"127.0.0.1:{port}"},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        await _until(lambda: _applied(port, 12))
        await settled(ns)
        rows = [r for r in await written_rows(ns) if r["import"] == "warehouse"]
        assert sorted({r["userId"] for r in rows}) == list(range(1, 11))
        assert len(rows) > 10  # rows at page boundaries were read twice ...
        assert await applied(port) == 12  # ... and applied once (+ the two devices)
        got = await records(ns)
        assert {k: v["properties"].get("plan") for k, v in got.items()} == {
            **{str(i): plan for i, plan, _, _ in ROWS},
            "anon:d2": None,
        }
        assert got["3"]["properties"]["tier"] == "gold" and got["3"]["anonymousIds"] == ["d1"]
        assert got["anon:d2"]["properties"] == {"tier": "silver", "visits": 0}
        assert got["3"]["properties"]["seats"] == 3
        assert "seats" not in got["10"]["properties"]
        assert "integer" in got["10"]["invalid"]["seats"]
        # An import row is not an event: `events: "*"` properties do not count it.
        assert got["1"]["properties"] == {"plan": "free", "seats": 1, "visits": 0}

        # Between runs: two rows change (their watermark moves on), two are new; one of them
        # shares the new top watermark with a changed one.
        with psycopg.connect(warehouse, autocommit=True) as conn:
            conn.execute("update users set plan = 'enterprise', updated_at = 4 where id in (2, 9)")
            conn.execute("insert into users values (11, 'free', '1', 4), (12, 'pro', '2', 5)")
        out = segflow(ns, postgres, pg_schema, "imports", "run", "warehouse")
        assert out.startswith("import warehouse: ") and "rows written" in out
        await _until(lambda: _applied(port, 16))
        await settled(ns)
        assert await applied(port) == 16  # the boundary rows read again changed nothing
        got = await records(ns)
        assert got["2"]["properties"]["plan"] == "enterprise"
        assert got["9"]["properties"]["plan"] == "enterprise"
        assert got["12"]["properties"] == {"plan": "pro", "seats": 2, "visits": 0}
        assert got["1"]["properties"]["plan"] == "free"
        listed = segflow(ns, postgres, pg_schema, "imports", "list")
        assert "warehouse: users, watermark 5" in listed
    finally:
        stop(worker)


async def _applied(port: int, wanted: int) -> bool:
    try:
        return await applied(port) >= wanted
    except aiohttp.ClientError:
        return False  # not serving yet


async def _until(check: Any, timeout: float = 90.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("the import's rows did not reach the records stage")
        await asyncio.sleep(0.5)


async def test_an_unreachable_source_is_retried_and_skips_nothing(
    ns: Namespace, postgres: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    import dataclasses

    spec = dataclasses.replace(
        ns.catalog.imports["warehouse"],
        dsn=f"postgresql://nobody@127.0.0.1:{free_port()}/none?connect_timeout=2",
    )
    checkpoints = Checkpoints(postgres, pg_schema)
    producer = AIOKafkaProducer(bootstrap_servers=ns.bootstrap, acks="all")
    await producer.start()
    try:
        unreachable = ImportRunner(spec, ns.catalog, ns.names, checkpoints, producer)
        stopping = asyncio.Event()
        task = asyncio.create_task(run_schedule(unreachable, stopping))
        await asyncio.sleep(4)
        stopping.set()
        await task
    finally:
        await producer.stop()
    assert unreachable.stats.errors >= 2  # retried, with backoff (1 s, then 2 s)
    assert unreachable.stats.runs == 0 and unreachable.stats.rows == 0
    assert "import warehouse:" in caplog.text and "retrying in" in caplog.text
    async with await checkpoints.connect() as conn:
        at = await checkpoints.load(conn, "warehouse")
    assert at.watermark is None  # nothing skipped: the next run starts from the beginning
