"""Poison documents never stop the pipeline: what the door refuses is a dead letter, what a
table cannot hold is parked, and the worker stops promptly whatever its sinks are doing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from aiokafka import TopicPartition
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pipeline.runtime.topics import read_to_end
from tests.fixtures.events import generate, reference
from tests.fixtures.stack import Namespace
from tests.fixtures.webhooks import Endpoint
from tests.integration.test_cli import segflow
from tests.integration.test_materialize import (
    assert_tables_equal_reference,
    materialize_env,
    materialized,
)
from tests.integration.test_pipeline import by_user, stop

pytestmark = pytest.mark.integration

STOP_BOUND = 12.0
"""Seconds within which SIGTERM ends a worker, whatever its sinks are doing: usually well under
a second, more while a consumer group is rebalancing (the embedded broker holds a join for half
the session timeout), and webhooks drain for up to 10 s by design."""


def hostile_events(like: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Source documents no table could hold, each with the path the door names."""

    def event(**changes: Any) -> dict[str, Any]:
        doc = {**like, "event": str(uuid.uuid4()), **changes}
        doc.pop("remove", None)  # an add, so that `value` is allowed
        return doc

    segment = like["segment"]
    return [
        ("/user", event(user="nul\u0000user")),
        ("/value", event(value="a\u0000b")),
        ("/segment/name", event(segment={**segment, "name": "n\u0000"})),
        ("/user", event(user=os.urandom(4500).hex())),
        ("/segment/vendor", event(segment={**segment, "vendor": 2**31})),
        ("/timestamp", event(timestamp="0000-01-01T00:00:00Z")),
        ("/timestamp", event(timestamp="2021-01-16T12:00:00Z\n")),  # broke the reducer
        ("/timestamp", event(timestamp="2021-01-16T12:00:00+16:00")),  # timestamptz refuses
        ("/segment/vendor", event(segment={**segment, "vendor": 3.0})),
    ]


def hostile_memberships() -> list[dict[str, Any]]:
    """Derived documents no membership row can hold, written straight to the derived topic
    (as a laxer older schema, or another writer, may have left them)."""
    last = "2021-01-16T17:09:34Z"
    return [
        {"segment": {"vendor": 1, "name": "x"}, "user": "nul\u0000", "last": last, "member": True},
        {"segment": {"vendor": 2**31, "name": "x"}, "user": "v", "last": last, "member": True},
        {"segment": {"vendor": 1, "name": "x"}, "user": os.urandom(4500).hex(), "last": last},
    ]


async def dead_letters(ns: Namespace, topic: str) -> list[Any]:
    found = []
    async for records in read_to_end(ns.bootstrap, {TopicPartition(topic, 0): 0}):
        found += records
    return found


async def until(check: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout:.0f}s")
        await asyncio.sleep(0.2)


def timed_stop(worker: Any) -> float:
    began = time.monotonic()
    stop(worker)
    return time.monotonic() - began


async def test_hostile_documents_end_as_dead_letters_and_everything_else_lands(
    namespace: Namespace, postgres: str, pg_schema: str, endpoint: Endpoint, tmp_path: Path
) -> None:
    good = generate(2000, seed=71, redeliveries=0.05)
    expected = reference(good)
    hostile = hostile_events(good[0])
    log = tmp_path / "worker.log"
    worker = namespace.worker(log, **materialize_env(namespace, postgres, pg_schema, endpoint))
    try:
        docs = [*good[:1000], *(doc for _, doc in hostile), *good[1000:]]
        await namespace.produce("segment/events", docs, partition_of=lambda d: by_user(good[0]))
        sent = dict(namespace.sent)  # the derive loop does not read this topic: not waited on
        await namespace.produce(
            "segment/memberships", hostile_memberships(), partition_of=lambda d: 0
        )
        namespace.sent = sent
        await materialized(
            namespace, postgres, pg_schema, endpoint, len(expected["segment/toggles"])
        )
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        took = timed_stop(worker)
    assert worker.returncode == 0, log.read_text()[-3000:]
    assert took < STOP_BOUND

    # Everything valid landed, exactly.
    await assert_tables_equal_reference(postgres, pg_schema, expected)
    # The door's rejects: one dead letter each, naming the place.
    letters = await dead_letters(namespace, namespace.names.dead_letter("segment/events"))
    assert len(letters) == len(hostile)
    for letter, (path, doc) in zip(letters, hostile, strict=True):
        headers = {k: v.decode() for k, v in letter.headers}
        assert orjson.loads(letter.value) == doc
        assert headers["segflow.error"].startswith(path), headers["segflow.error"]
    # What the table could not hold: parked with the reason and where it came from.
    listed = segflow("dlq", "list", "postgres", env=namespace.env())
    assert listed.returncode == 0, listed.stderr
    parked = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert [p["payload"] for p in parked] == [*hostile_memberships()[:2], parked[2]["payload"]]
    topic = namespace.names.collection("segment/memberships")
    for p in parked:
        assert p["headers"]["topic"] == topic
        assert p["headers"]["table"] == "segment_memberships"
        assert p["headers"]["sqlstate"][:2] in ("22", "23", "54")
    assert "UntranslatableCharacter" in parked[0]["headers"]["error"]
    assert "NumericValueOutOfRange" in parked[1]["headers"]["error"]
    assert "ProgramLimitExceeded" in parked[2]["headers"]["error"]
    assert "parking the record at" in log.read_text()


async def test_a_parked_record_lands_when_replayed_after_the_table_is_fixed(
    namespace: Namespace, postgres: str, pg_schema: str, endpoint: Endpoint, tmp_path: Path
) -> None:
    with psycopg.connect(postgres, autocommit=True) as conn:  # a table with a rule of its own
        conn.execute(
            f'create table "{pg_schema}".segment_memberships (vendor int, segment_name text,'
            " user_id text, first timestamptz, last timestamptz, member boolean, value text,"
            " document jsonb, primary key (vendor, segment_name, user_id),"
            " constraint no_forbidden check (value is distinct from 'forbidden'))"
        )
    good = generate(300, seed=72, redeliveries=0)
    forbidden = {**good[0], "event": str(uuid.uuid4()), "user": "zed", "value": "forbidden"}
    forbidden.pop("remove", None)
    events = [*good, forbidden]
    expected = reference(events)
    log = tmp_path / "worker.log"
    worker = namespace.worker(log, **materialize_env(namespace, postgres, pg_schema, endpoint))
    try:
        await namespace.produce("segment/events", events, partition_of=by_user)
        await materialized(
            namespace, postgres, pg_schema, endpoint, len(expected["segment/toggles"])
        )
        parked = segflow("dlq", "list", "postgres", env=namespace.env()).stdout.splitlines()
        assert len(parked) == 1
        assert orjson.loads(parked[0])["headers"]["sqlstate"] == "23514"  # check_violation

        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(
                f'alter table "{pg_schema}".segment_memberships drop constraint no_forbidden'
            )
        replay = segflow("dlq", "replay", "postgres", env=namespace.env())
        assert "re-sent 1 dead letter(s)" in replay.stdout, replay.stderr

        async def landed() -> bool:
            async with await psycopg.AsyncConnection.connect(postgres) as conn:
                cur = await conn.execute(
                    f'select value from "{pg_schema}".segment_memberships where user_id = %s',
                    ("zed",),
                )
                return await cur.fetchone() == ("forbidden",)

        await until(landed, what="the replayed row")
        again = segflow("dlq", "replay", "postgres", env=namespace.env())
        assert "re-sent 0 dead letter(s)" in again.stdout, again.stderr
        await materialized(
            namespace, postgres, pg_schema, endpoint, len(expected["segment/toggles"])
        )
    finally:
        stop(worker)
    assert worker.returncode == 0, log.read_text()[-3000:]
    await assert_tables_equal_reference(postgres, pg_schema, expected)


class Proxy:
    """A TCP relay to Postgres that a test can cut (connections dropped, new ones refused)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.links):
            writer.transport.abort()
        await self.server.wait_closed()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.target
        if host.startswith("/"):  # a Unix socket directory, as embedded Postgres uses
            up_reader, up_writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        else:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@contextlib.asynccontextmanager
async def proxied(dsn: str) -> AsyncIterator[tuple[Proxy, str]]:
    params = conninfo_to_dict(dsn)
    proxy = Proxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    await proxy.start()
    try:
        yield proxy, make_conninfo(dsn, host="127.0.0.1", port=str(proxy.port))
    finally:
        if proxy.server is not None and proxy.server.is_serving():
            await proxy.cut()


async def test_sigterm_ends_a_worker_whose_writes_keep_failing_and_nothing_is_lost(
    namespace: Namespace, postgres: str, pg_schema: str, endpoint: Endpoint, tmp_path: Path
) -> None:
    events = generate(600, seed=73, redeliveries=0)
    expected = reference(events)
    log = tmp_path / "worker.log"
    async with proxied(postgres) as (proxy, through_proxy):
        env = materialize_env(namespace, through_proxy, pg_schema, endpoint)
        worker = namespace.worker(log, **env)
        try:
            await namespace.produce("segment/events", events[:300], partition_of=by_user)
            await namespace.processed()
            await proxy.cut()  # Postgres is gone for the worker, mid-stream
            await namespace.produce("segment/events", events[300:], partition_of=by_user)

            async def retrying() -> bool:
                return "write failed" in log.read_text()

            await until(retrying, what="a failed write")
        finally:
            worker.send_signal(signal.SIGTERM)
            began = time.monotonic()
            worker.wait(30)
            took = time.monotonic() - began
    text = log.read_text()
    assert worker.returncode == 0, text[-3000:]
    assert took < STOP_BOUND, text[-3000:]
    assert "stopping without it" in text

    # A new worker, with Postgres reachable, writes everything the stopped one could not.
    worker = namespace.worker(log, **materialize_env(namespace, postgres, pg_schema, endpoint))
    try:
        await materialized(
            namespace, postgres, pg_schema, endpoint, len(expected["segment/toggles"])
        )
    finally:
        stop(worker)
    await assert_tables_equal_reference(postgres, pg_schema, expected)
