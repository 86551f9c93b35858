"""The peers against the reference: same rows in Postgres, same toggles POSTed.

Not collected by `make test` (which runs `pytest tests`); run by hand:

    .venv/bin/python -m pytest bench/peers/test_peers.py -s -p no:cacheprovider
    BENCH_PEERS_EVENTS=50000 .venv/bin/python -m pytest bench/peers/test_peers.py -s

Needs the bench-only packages: pip install faust-streaming quixstreams 'bytewax>=0.21,<0.22'.
Bytewax runs as a cluster of two processes, as in the benchmark.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.harness.procs import free_addresses
from tests.fixtures.events import generate, reference

pytest_plugins = ["tests.fixtures.stack"]
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVENTS = int(os.environ.get("BENCH_PEERS_EVENTS", "5000"))
TIMEOUT = float(os.environ.get("BENCH_PEERS_TIMEOUT", "180"))


def _instant(stamp: str | None) -> datetime | None:
    return None if stamp is None else datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def expected_rows(ref: dict[str, list[dict[str, Any]]]) -> dict[str, set]:
    def j(doc: object) -> bytes:
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    return {
        "segment_memberships": {
            (
                m["segment"]["vendor"],
                m["segment"]["name"],
                m["user"],
                _instant(m.get("first")),
                _instant(m["last"]),
                m["member"],
                m.get("value"),
                j(m),
            )
            for m in ref["segment/memberships"]
        },
        "segment_profiles": {(p["user"], j(p["segments"]), j(p)) for p in ref["segment/profiles"]},
        "segment_toggles": {
            (
                t["event"],
                t["user"],
                t["segment"]["vendor"],
                t["segment"]["name"],
                bool(t.get("remove")),
                _instant(t["timestamp"]),
                t["previous"]["event"],
                j(t),
            )
            for t in ref["segment/toggles"]
        },
    }


def actual_rows(conn: psycopg.Connection, schema: str) -> dict[str, set]:
    def j(doc: object) -> bytes:
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    return {
        "segment_memberships": {
            (v, s, u, f, la, mem, val, j(doc))
            for v, s, u, f, la, mem, val, doc in conn.execute(
                f"select vendor, segment_name, user_id, first, last, member, value, document "
                f"from {schema}.segment_memberships"
            )
        },
        "segment_profiles": {
            (u, j(segs), j(doc))
            for u, segs, doc in conn.execute(
                f"select user_id, segments, document from {schema}.segment_profiles"
            )
        },
        "segment_toggles": {
            (str(e), u, v, s, r, ts, str(p), j(doc))
            for e, u, v, s, r, ts, p, doc in conn.execute(
                f"select event, user_id, vendor, segment_name, remove, timestamp, previous_event, "
                f"document from {schema}.segment_toggles"
            )
        },
    }


def counts(conn: psycopg.Connection, schema: str) -> dict[str, int] | None:
    try:
        return {
            t: conn.execute(f"select count(*) from {schema}.{t}").fetchone()[0]  # type: ignore[index]
            for t in ("segment_memberships", "segment_profiles", "segment_toggles")
        }
    except psycopg.errors.UndefinedTable:
        return None


async def create_and_fill(broker: str, topic: str, events: list[dict[str, Any]]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, 4, 1, topic_configs={"retention.ms": "-1", "retention.bytes": "-1"})]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                orjson.dumps(e),
                key=e["user"].encode(),
                partition=zlib.crc32(e["user"].encode()) % 4,
            )
            for e in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class Receiver:
    """A webhook endpoint that records every toggle POSTed to it."""

    def __init__(self) -> None:
        self.toggles: list[dict[str, Any]] = []
        self.requests = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _post(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        assert isinstance(body, list)
        self.requests += 1
        self.toggles.extend(body)
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/hook", self._post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def cluster_envs(processes: int) -> list[dict[str, str]]:
    """Each process' BENCH_PROCESS / BENCH_PROCESSES / BENCH_ADDRESSES (as bench.run sets)."""
    addresses = ",".join(free_addresses(processes))
    return [
        {"BENCH_PROCESS": str(i), "BENCH_PROCESSES": str(processes), "BENCH_ADDRESSES": addresses}
        for i in range(processes)
    ]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(TIMEOUT + 120)
@pytest.mark.parametrize(("peer", "processes"), [("naive_faust", 1), ("quix", 1), ("bytewax", 2)])
async def test_peer_matches_reference(
    peer: str, processes: int, broker: str, postgres: str, pg_schema: str, tmp_path: Path
) -> None:
    events = generate(EVENTS, seed=3)
    ref = reference(events)
    want = expected_rows(ref)
    want_counts = {t: len(rows) for t, rows in want.items()}
    topic = f"bench-{uuid.uuid4().hex[:10]}"
    await create_and_fill(broker, topic, events)

    receiver = Receiver()
    await receiver.start()
    logs = [tmp_path / f"{peer}-{i}.log" for i in range(processes)]
    env = {
        **os.environ,
        "BENCH_BROKER": broker,
        "BENCH_TOPIC": topic,
        "BENCH_POSTGRES": postgres,
        "BENCH_SCHEMA": pg_schema,
        "BENCH_WEBHOOK_URL": receiver.url,
        "BENCH_GROUP": f"bench-{peer}-{uuid.uuid4().hex[:8]}",
        "BENCH_STATE_DIR": str(tmp_path / "state"),
    }
    started = time.monotonic()
    procs = []
    for log, cluster in zip(logs, cluster_envs(processes), strict=True):
        with log.open("ab") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", f"bench.peers.{peer}"],
                    env={**env, **cluster},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                )
            )

    def tails() -> str:
        return "\n".join(log.read_text()[-5000:] for log in logs)

    first_row = done = None
    try:
        with psycopg.connect(postgres, autocommit=True) as conn:
            while True:
                if exited := [p.returncode for p in procs if p.poll() is not None]:
                    pytest.fail(f"{peer} exited with {exited}:\n{tails()}")
                now = time.monotonic()
                if now - started > TIMEOUT:
                    pytest.fail(
                        f"{peer} did not catch up in {TIMEOUT:.0f}s: {counts(conn, pg_schema)} "
                        f"!= {want_counts}\n{tails()}"
                    )
                have = counts(conn, pg_schema)
                if first_row is None and have and any(have.values()):
                    first_row = now
                if have == want_counts and actual_rows(conn, pg_schema) == want:
                    done = time.monotonic()
                    break
                await asyncio.sleep(0.25)
        # The webhook may lag Postgres by one batch.
        wanted_toggles = {t["event"]: t for t in ref["segment/toggles"]}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if {t["event"] for t in receiver.toggles} >= set(wanted_toggles):
                break
            await asyncio.sleep(0.2)
    finally:
        for proc in procs:
            stop(proc)
        await receiver.stop()

    with psycopg.connect(postgres, autocommit=True) as conn:
        have_rows = actual_rows(conn, pg_schema)
    for table in want:
        assert have_rows[table] == want[table], table
    posted = {t["event"]: t for t in receiver.toggles}
    assert posted == wanted_toggles
    assert len(receiver.toggles) == len(posted), "toggles POSTed more than once"

    total = done - started
    busy = done - (first_row or started)
    print(
        f"\n[{peer}] {EVENTS} events: caught up {total:.1f}s after start "
        f"({EVENTS / total:.0f} events/s), {busy:.1f}s after its first row "
        f"({EVENTS / busy:.0f} events/s); {receiver.requests} webhook request(s), "
        f"{len(posted)} toggles; logs {', '.join(map(str, logs))}"
    )
