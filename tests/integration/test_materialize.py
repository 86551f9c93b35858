"""End to end: `segflow worker` processes → Postgres tables and a real webhook endpoint."""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from pipeline.tools.embedded import free_port
from tests.fixtures.events import generate, reference
from tests.fixtures.stack import Namespace, topic_ends
from tests.fixtures.webhooks import SECRET, Endpoint
from tests.integration.test_pipeline import by_user, stop

pytestmark = pytest.mark.integration

TABLES = {
    "segment/memberships": "segment_memberships",
    "segment/profiles": "segment_profiles",
    "segment/toggles": "segment_toggles",
}


def materialize_env(
    ns: Namespace, postgres: str, schema: str, endpoint: Endpoint
) -> dict[str, str]:
    return {
        "SEGFLOW_POSTGRES": postgres,
        "SEGFLOW_POSTGRES_SCHEMA": schema,
        "SEGFLOW_WEBHOOK_URL": endpoint.url,
        "SEGFLOW_WEBHOOK_SECRET": SECRET,
    }


async def materialized(
    ns: Namespace,
    postgres: str,
    schema: str,
    endpoint: Endpoint,
    toggles: int,
    timeout: float = 180.0,
) -> None:
    """Wait until Postgres checkpoints reach every derived topic's end and all toggles arrived."""
    await ns.processed(timeout)
    ends = {}
    for name in TABLES:
        topic = ns.names.collection(name)
        ends.update(await topic_ends(ns.bootstrap, topic, ns.catalog.collections[name].partitions))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with await psycopg.AsyncConnection.connect(postgres) as conn:
            rows = await (
                await conn.execute(
                    f'select topic, partition, next_offset from "{schema}".segflow_checkpoints'
                )
            ).fetchall()
        done = {(t, p): o for t, p, o in rows}
        caught_up = all(done.get((tp.topic, tp.partition), 0) >= end for tp, end in ends.items())
        delivered = {t["event"] for t in endpoint.toggles()}
        if caught_up and len(delivered) >= toggles:
            return
        if loop.time() > deadline:
            raise TimeoutError(
                f"not materialized: checkpoints {done}, toggles {len(delivered)}/{toggles}"
            )
        await asyncio.sleep(0.3)


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def assert_tables_equal_reference(
    postgres: str, schema: str, expected: dict[str, list[Any]]
) -> None:
    async with await psycopg.AsyncConnection.connect(postgres) as conn:
        memberships = await (
            await conn.execute(
                f"select vendor, segment_name, user_id, first, last, member, value, document "
                f'from "{schema}".segment_memberships order by vendor, segment_name, user_id'
            )
        ).fetchall()
        profiles = await (
            await conn.execute(
                f"select user_id, segments, document "
                f'from "{schema}".segment_profiles order by user_id'
            )
        ).fetchall()
        toggles = await (
            await conn.execute(
                "select event::text, user_id, vendor, segment_name, remove, timestamp, "
                f'previous_event::text, document from "{schema}".segment_toggles order by event'
            )
        ).fetchall()
    want = expected["segment/memberships"]
    assert len(memberships) == len(want)
    for row, doc in zip(memberships, want, strict=True):
        vendor, name, user, first, last, member, value, document = row
        assert (vendor, name, user) == (
            doc["segment"]["vendor"],
            doc["segment"]["name"],
            doc["user"],
        )
        assert first == (_instant(doc["first"]) if "first" in doc else None)
        assert last == _instant(doc["last"])
        assert member is doc["member"]
        assert value == doc.get("value")
        assert document == doc
    want = expected["segment/profiles"]
    assert [(u, s, d) for u, s, d in profiles] == [(p["user"], p["segments"], p) for p in want]
    want = expected["segment/toggles"]
    assert len(toggles) == len(want)
    for row, doc in zip(toggles, want, strict=True):
        event, user, vendor, name, remove, timestamp, previous, document = row
        assert (event, user, vendor, name) == (
            doc["event"],
            doc["user"],
            doc["segment"]["vendor"],
            doc["segment"]["name"],
        )
        assert remove is bool(doc.get("remove"))
        assert timestamp == _instant(doc["timestamp"])
        assert previous == doc["previous"]["event"]
        assert document == doc


def assert_webhook_toggles(endpoint: Endpoint, expected: dict[str, list[Any]]) -> int:
    """Every expected toggle arrived, right `previous`, in order per (segment, user); returns
    how many arrived more than once (redeliveries carry the same event id)."""
    received = endpoint.toggles()
    first_seen: dict[str, dict[str, Any]] = {}
    for t in received:
        first_seen.setdefault(t["event"], t)
    assert sorted(first_seen) == [t["event"] for t in expected["segment/toggles"]]
    for t in expected["segment/toggles"]:
        assert first_seen[t["event"]] == t

    def per_pair(toggles: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[str]]:
        pairs: dict[tuple[Any, ...], list[str]] = {}
        for t in toggles:
            pair = (t["segment"]["vendor"], t["segment"]["name"], t["user"])
            pairs.setdefault(pair, []).append(t["event"])
        return pairs

    assert per_pair(list(first_seen.values())) == per_pair(expected["toggles in arrival order"])
    return len(received) - len(first_seen)


async def test_tables_and_webhook_equal_reference(
    namespace: Namespace, postgres: str, pg_schema: str, endpoint: Endpoint, tmp_path: Path
) -> None:
    events = generate(20000, seed=41)
    expected = reference(events)
    env = materialize_env(namespace, postgres, pg_schema, endpoint)
    worker = namespace.worker(tmp_path / "worker.log", **env)
    try:
        await namespace.produce("segment/events", events, partition_of=by_user)
        await materialized(
            namespace, postgres, pg_schema, endpoint, len(expected["segment/toggles"])
        )
    finally:
        stop(worker)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]
    await assert_tables_equal_reference(postgres, pg_schema, expected)
    assert assert_webhook_toggles(endpoint, expected) == 0
    assert endpoint.signatures_valid()


async def test_sigkill_three_times_loses_nothing(
    namespace: Namespace, postgres: str, pg_schema: str, endpoint: Endpoint, tmp_path: Path
) -> None:
    events = generate(20000, seed=43)
    expected = reference(events)
    env = materialize_env(namespace, postgres, pg_schema, endpoint)
    log = tmp_path / "worker.log"
    worker = namespace.worker(log, **env)
    try:
        for i in range(4):
            before = len(endpoint.requests)
            await namespace.produce(
                "segment/events", events[i * 5000 : (i + 1) * 5000], partition_of=by_user
            )
            if i < 3:
                # mid-run: deliveries of this chunk have begun
                while len(endpoint.requests) == before:
                    await asyncio.sleep(0.01)
                worker.kill()
                worker.wait(10)
                worker = namespace.worker(log, **env)
        await materialized(
            namespace, postgres, pg_schema, endpoint, len(expected["segment/toggles"])
        )
    finally:
        stop(worker)
    await assert_tables_equal_reference(postgres, pg_schema, expected)
    redelivered = assert_webhook_toggles(endpoint, expected)
    total = len(expected["segment/toggles"])
    print(f"\n{total} toggles, {redelivered} redelivered to the endpoint after 3 SIGKILLs")


async def test_failing_and_unreachable_endpoint_gets_everything(
    namespace: Namespace, postgres: str, pg_schema: str, tmp_path: Path
) -> None:
    events = generate(3000, seed=47)
    expected = reference(events)
    endpoint = Endpoint(free_port(), fail_every=3)  # not listening yet: unreachable
    env = materialize_env(namespace, postgres, pg_schema, endpoint)
    worker = namespace.worker(tmp_path / "worker.log", **env)
    try:
        await namespace.produce("segment/events", events, partition_of=by_user)
        await asyncio.sleep(30)  # unreachable for 30 s
        await endpoint.start()
        await materialized(
            namespace, postgres, pg_schema, endpoint, len(expected["segment/toggles"])
        )
    finally:
        stop(worker)
        await endpoint.stop()
    assert endpoint.calls > len(endpoint.requests)  # some requests were answered 503
    assert_webhook_toggles(endpoint, expected)
    assert endpoint.signatures_valid()


async def asegflow(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """`segflow` without blocking the event loop (the test's endpoint runs on it)."""
    import sys

    from tests.fixtures.stack import ROOT

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline.tools.cli",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_rejected_batches_are_parked_listed_and_replayed(
    namespace: Namespace, postgres: str, pg_schema: str, endpoint: Endpoint, tmp_path: Path
) -> None:
    events = generate(400, seed=53, users=20, segments=3)
    expected = reference(events)
    endpoint.reject = 400
    env = materialize_env(namespace, postgres, pg_schema, endpoint)
    worker = namespace.worker(tmp_path / "worker.log", **env)
    try:
        await namespace.produce("segment/events", events, partition_of=by_user)
        await namespace.processed()
        listing: list[dict[str, Any]] = []
        while sum(len(x["payload"]) for x in listing) < len(expected["segment/toggles"]):
            await asyncio.sleep(0.5)  # parked after max_attempts with backoff
            code, out, err = await asegflow("dlq", "list", "webhook", env=namespace.env())
            assert code == 0, err
            listing = [orjson.loads(line) for line in out.splitlines()]
    finally:
        stop(worker)
    assert {x["headers"]["status"] for x in listing} == {"400"}
    assert all(x["headers"]["response"] == "unknown segment" for x in listing)
    assert endpoint.requests == []
    endpoint.reject = 0
    replay_env = namespace.env(**env)
    code, out, err = await asegflow("dlq", "replay", "webhook", env=replay_env)
    assert code == 0, err
    assert f"re-sent {len(listing)} dead letter(s) of webhook" in out
    assert_webhook_toggles(endpoint, expected)
    assert endpoint.signatures_valid()
    code, out, err = await asegflow("dlq", "replay", "webhook", env=replay_env)
    assert code == 0, err
    assert "re-sent 0 dead letter(s)" in out


def test_webhook_receiver_checks_signatures(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from materializations.webhook import sign
    from tests.fixtures.stack import ROOT

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.tools.cli",
            "webhook-receiver",
            "--port",
            str(port),
            "--secret",
            SECRET,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        toggle = reference(generate(200, seed=2, users=5, segments=2))["segment/toggles"][0]
        body = orjson.dumps([toggle])

        def post(signature: str) -> int:
            stamp = str(int(time.time()))
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/",
                data=body,
                method="POST",
                headers={
                    "webhook-id": "msg_1",
                    "webhook-timestamp": stamp,
                    "webhook-signature": signature,
                    "content-type": "application/json",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as error:
                return int(error.code)

        for _ in range(100):  # until it listens
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.1)
        assert post("v1,bm90IGEgc2lnbmF0dXJl") == 401
        assert post(sign(SECRET, "msg_1", int(time.time()), body)) == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert f"toggle {toggle['user']}" in out
    assert toggle["event"] in out
