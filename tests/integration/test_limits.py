"""The door and the sinks agree: what segment/events lets in lands as Postgres rows, and what it
refuses is named the same way from Kafka (dead letters) and `segflow ingest` (the API's answers
are in test_api)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from pipeline.runtime.topics import read_to_end
from pipeline.tools.read import current_documents
from tests.fixtures.edges import EDGES, FOUR, HOSTILE, SURROGATE, event
from tests.fixtures.events import generate, reference
from tests.fixtures.stack import Namespace
from tests.integration.test_ingest_generate import segflow
from tests.integration.test_pipeline import assert_equal_state, derived_state, stop

pytestmark = pytest.mark.integration

EVENTS = "segment/events"
TABLES = {
    "segment/memberships": "segment_memberships",
    "segment/profiles": "segment_profiles",
    "segment/toggles": "segment_toggles",
}


def reasons(errors: list[tuple[str, str]]) -> str:
    """The errors as the worker's `segflow.error` header and `segflow ingest` write them."""
    return "; ".join(f"{path or '/'}: {message}" for path, message in errors)


async def every_record(ns: Namespace, topic: str) -> list[ConsumerRecord]:
    found: list[ConsumerRecord] = []
    async for records in read_to_end(ns.bootstrap, {TopicPartition(topic, 0): 0}):
        found += records
    return found


def canonical(docs: list[Any]) -> list[bytes]:
    return sorted(orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in docs)


async def assert_rows_are_the_documents(ns: Namespace, dsn: str, schema: str) -> dict[str, int]:
    """Each table holds exactly the current documents of its collection; returns row counts."""
    counts = {}
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        for name, table in TABLES.items():
            rows = await (await conn.execute(f'select document from "{schema}".{table}')).fetchall()
            spec = ns.catalog.collections[name]
            documents = await current_documents(ns.bootstrap, ns.names.collection(name), spec)
            assert canonical([r[0] for r in rows]) == canonical(documents), table
            counts[table] = len(rows)
    return counts


async def test_documents_at_every_edge_the_door_allows_land_as_rows(
    namespace: Namespace, postgres: str, pg_schema: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    worker = namespace.worker(log, SEGFLOW_POSTGRES=postgres, SEGFLOW_POSTGRES_SCHEMA=pg_schema)
    try:
        await namespace.produce(EVENTS, list(EDGES), partition_of=lambda doc: 0)
        await namespace.in_postgres(postgres, pg_schema)
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        stop(worker)
    assert worker.returncode == 0, log.read_text()[-3000:]
    assert await every_record(namespace, namespace.names.dead_letter(EVENTS)) == []
    assert await every_record(namespace, namespace.names.sink_dead_letter("postgres")) == []
    users = {doc["user"] for doc in EDGES}
    counts = await assert_rows_are_the_documents(namespace, postgres, pg_schema)
    assert counts == {
        "segment_memberships": len(users),  # one segment per user
        "segment_profiles": len(users),
        "segment_toggles": sum(1 for doc in EDGES if doc.get("remove")),
    }
    # The columns hold the instants, at the ends of what timestamptz and int take.
    async with await psycopg.AsyncConnection.connect(postgres) as conn:
        await conn.execute("set time zone 'UTC'")
        row = await (
            await conn.execute(
                f"select vendor, first::text, last::text, length(value), member"
                f' from "{pg_schema}".segment_memberships where user_id = %s',
                (FOUR * 256,),
            )
        ).fetchone()
        # 0001-01-01T00:00:00+15:59 is in 1 BC in UTC; .999…-15:59 rounds up into year 10000.
        assert row == (
            2147483647,
            "0001-12-31 08:01:00+00 BC",
            "10000-01-01 15:59:00+00",
            1024,
            False,
        )
        missing = await (
            await conn.execute(
                f'select count(*) from "{pg_schema}".segment_toggles'
                " where timestamp is null or previous_event is null"
            )
        ).fetchone()
        assert missing == (0,)


async def test_refused_documents_written_to_the_topic_are_dead_letters_with_their_reasons(
    namespace: Namespace, tmp_path: Path
) -> None:
    good = generate(40, seed=17, redeliveries=0)
    refused: list[Any] = [h.doc for h in HOSTILE] + [SURROGATE]
    log = tmp_path / "worker.log"
    worker = namespace.worker(log)
    try:
        await namespace.produce(
            EVENTS, [*good[:20], *refused, *good[20:]], partition_of=lambda doc: 0
        )
        await namespace.processed()
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        stop(worker)
    assert worker.returncode == 0, log.read_text()[-3000:]
    letters = await every_record(namespace, namespace.names.dead_letter(EVENTS))
    headers = [dict(letter.headers) for letter in letters]
    assert [h["segflow.source.offset"] for h in headers] == [
        str(20 + i).encode() for i in range(len(refused))
    ]
    errors = [h["segflow.error"].decode() for h in headers]
    assert errors[:-1] == [reasons(h.errors) for h in HOSTILE]
    assert errors[-1].startswith("not JSON: ")  # the lone surrogate
    assert [letter.value for letter in letters[:-1]] == [orjson.dumps(h.doc) for h in HOSTILE]
    assert_equal_state(await derived_state(namespace), reference(good))


def test_ingest_names_each_refused_line(namespace: Namespace, tmp_path: Path) -> None:
    lines = [
        orjson.dumps(event(1)),
        *(orjson.dumps(h.doc) for h in HOSTILE),
        SURROGATE,
        *(orjson.dumps(doc) for doc in EDGES),
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = segflow("ingest", EVENTS, str(path), env=namespace.env())
    assert result.returncode == 1, result.stderr
    expected = [
        f"line {n}: {path or '/'}: {message}"
        for n, h in enumerate(HOSTILE, start=2)
        for path, message in h.errors
    ]
    got = result.stderr.splitlines()
    assert got[: len(expected)] == expected
    assert got[len(expected)].startswith(f"line {len(HOSTILE) + 2}: /: not valid JSON (")
    assert got[len(expected) + 1 :] == [
        f"sent {1 + len(EDGES)} document(s), {len(HOSTILE) + 1} invalid line(s)"
    ]
