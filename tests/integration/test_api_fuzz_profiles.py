"""Hostile input on the profile paths (issue 20, item 5), against the real embedded broker and
Postgres: `POST /ingest/profile/events` and `POST /groups/{name}/members` fuzzed with deep
nesting, huge `data`, NUL bytes, wrong types, `anon:` and integer user ids, invalid UTF-8 and
bodies that are not JSON. Every answer is a 200 for valid documents only (the expectation
computed here from the schema validator) or a 4xx naming the problem, never a 5xx; then a worker
builds the records of everything accepted and stays up."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import psycopg
import pytest
from aiokafka import TopicPartition

from pipeline.documents.validation import Validator
from pipeline.producers.api import UNEXPECTED
from pipeline.runtime.topics import pipeline_topics
from tests.fixtures.hostile_profiles import (
    DEEP,
    GROUP_NAMES,
    VALID_TIMES,
    deep,
    event_body,
    members_body,
    uid,
)
from tests.fixtures.stack import Namespace, topic_ends
from tests.integration.test_api import MAX_BYTES, Api, expected_status, payload, serving
from tests.integration.test_limits import every_record
from tests.integration.test_pipeline import stop

pytestmark = pytest.mark.integration

EVENTS = "profile/events"
MEMBERS = "profile/group-members"
MANUAL = "vip"
"""The shipped catalog's only manual group."""
EVENT_BODIES = 3000
MEMBER_BODIES = 2000
ITEM_KEYS = {"userId", "anonymousId", "id", "occurredAt"}

Doc = dict[str, Any]


def record_id(doc: Doc) -> str:
    """The record of a document's userId (SPEC 8.2): an integer is its decimal string. (1.0 and
    1e2, which JSON Schema counts as integers, are the records '1.0' and '100.0'.)"""
    user = doc["userId"]
    return user if isinstance(user, str) else str(user)


def expected_records(accepted: list[Doc]) -> set[str]:
    """The ids of the records `accepted` builds: every person's, and `anon:A` for each device
    never seen with a userId (one that was is linked, its anonymous record merged away)."""
    users = {record_id(d) for d in accepted if "userId" in d}
    linked = {d["anonymousId"] for d in accepted if "userId" in d and "anonymousId" in d}
    devices = {d["anonymousId"] for d in accepted if "userId" not in d} - linked
    return users | {f"anon:{device}" for device in devices}


class Fuzz(Api):
    statuses: dict[int, int]
    accepted: list[Doc]

    def count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


@pytest.fixture
async def events_api(namespace: Namespace, postgres: str, pg_schema: str) -> AsyncIterator[Fuzz]:
    async with serving(Fuzz, namespace, postgres, pg_schema, "app", EVENTS) as served:
        served.statuses, served.accepted = {}, []
        yield served


@pytest.fixture
async def members_api(namespace: Namespace, postgres: str, pg_schema: str) -> AsyncIterator[Fuzz]:
    async with serving(Fuzz, namespace, postgres, pg_schema, "crm", MEMBERS) as served:
        served.statuses, served.accepted = {}, []
        yield served


async def answered(
    api: Fuzz, method: str, path: str, body: bytes, expected: int
) -> tuple[int, Any]:
    """Send one request; its status must be `expected` and its body JSON naming the problem."""
    response = await api.client.request(method, path, data=payload(body), headers=api.auth())
    answer = await response.read()
    assert response.status == expected, (path[:100], body[:300], response.status, answer[:500])
    parsed = orjson.loads(answer)
    if expected == 200:
        assert parsed["accepted"] >= 0
    else:
        assert parsed.get("error") or all(e["message"] for e in parsed["errors"]), parsed
    api.count(response.status)
    return response.status, parsed


async def send_all(sends: list[Callable[[], Awaitable[object]]]) -> None:
    """Run the sends, 16 at a time."""
    gate = asyncio.Semaphore(16)

    async def one(send: Callable[[], Awaitable[object]]) -> None:
        async with gate:
            await send()

    await asyncio.gather(*(one(send) for send in sends))


# --- POST /ingest/profile/events ---------------------------------------------------------------


async def test_hostile_product_events_are_4xx_and_what_is_accepted_builds_records(
    events_api: Fuzz, tmp_path: Path
) -> None:
    api, rng = events_api, random.Random(20240620)
    validator = Validator(api.ns.catalog.collections[EVENTS].schema)
    path = api.url(EVENTS)

    async def post(body: bytes) -> int:
        expected = expected_status(body, validator)
        status, answer = await answered(api, "POST", path, body, expected)
        if status == 200:
            parsed = orjson.loads(body)
            docs = parsed if isinstance(parsed, list) else [parsed]
            assert answer == {"accepted": len(docs)}
            api.accepted += docs
        return status

    bodies = [event_body(rng, i) for i in range(EVENT_BODIES)]
    await send_all([lambda b=body: post(b) for body in bodies])
    # Each edge of occurredAt on a purchase, which relative groups time from: year 9999 with
    # -15:59 is past 2**64 ns, where a timer once stopped the worker.
    for at in VALID_TIMES:
        doc = {"id": uid(rng), "type": "purchase", "userId": f"at-{at}", "occurredAt": at}
        assert await post(orjson.dumps(doc)) == 200
    # The deepest `data` the API lets in, objects and arrays, must not stop the worker either.
    for array in (False, True):
        low, high = 1, 1100  # accepted, refused
        while high - low > 1:
            depth = (low + high) // 2
            doc = {"id": uid(rng), "type": "deep", "userId": f"deep-{array}", "data": {"k": DEEP}}
            response = await api.client.post(path, data=deep(doc, depth, array), headers=api.auth())
            assert response.status in (200, 400), await response.text()
            api.count(response.status)
            if response.status == 200:
                api.accepted.append(doc)
                low = depth
            else:
                high = depth
        print(f"\ndeepest {'array' if array else 'object'} in data accepted: {low} levels")

    print(f"fuzz: {sum(api.statuses.values())} requests, statuses {sorted(api.statuses.items())}")
    assert set(api.statuses) == {200, 400, 413}
    assert api.statuses[400] > EVENT_BODIES // 2 and api.statuses[200] > EVENT_BODIES // 10
    assert api.app[UNEXPECTED] == []
    await assert_records_are_built(api, expected_records(api.accepted), tmp_path / "worker.log")


# --- POST /groups/{name}/members ---------------------------------------------------------------


def expected_members(body: bytes, validator: Validator) -> int:
    """The answer `/groups/vip/members` owes `body` (README, Manual groups)."""
    if len(body) > MAX_BYTES:
        return 413
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 400
    lists = ("add", "remove")
    if not isinstance(parsed, dict) or not parsed or set(parsed) - set(lists):
        return 400
    people = {name: parsed.get(name, []) for name in lists}
    if not all(isinstance(p, list) for p in people.values()):
        return 400
    if sum(len(p) for p in people.values()) > 1000:
        return 413
    for name, items in people.items():
        for item in items:
            if not isinstance(item, dict) or set(item) - ITEM_KEYS:
                return 400
            doc = {"id": str(uuid.uuid4()), "group": MANUAL, "occurredAt": VALID_TIMES[0], **item}
            try:
                if not validator.is_valid(doc | ({"remove": True} if name == "remove" else {})):
                    return 400
            except RecursionError:
                return 400
    return 200


async def test_hostile_members_requests_are_4xx_and_the_accepted_ones_build_records(
    members_api: Fuzz, tmp_path: Path
) -> None:
    api, rng = members_api, random.Random(20240621)
    validator = Validator(api.ns.catalog.collections[MEMBERS].schema)
    changes: list[tuple[Doc, bool]] = []

    async def post(name: str, body: bytes) -> None:
        path = f"/groups/{quote(name, safe='')}/members"
        if len(path) > 8000:  # aiohttp itself answers a request line over 8,190 bytes
            response = await api.client.post(path, data=body, headers=api.auth())
            assert response.status == 400
            api.count(response.status)
            return
        expected = 404 if name != MANUAL else expected_members(body, validator)
        status, answer = await answered(api, "POST", path, body, expected)
        if status == 404:  # the manual groups named, or (a path of dot segments) no route
            assert "manual groups are ['vip']" in answer["error"] or answer["error"].startswith(
                "Not Found: POST /"
            ), (name, answer)
        if status == 200:
            parsed = orjson.loads(body)
            adds, removes = parsed.get("add", []), parsed.get("remove", [])
            assert answer == {"accepted": len(adds) + len(removes)}
            changes.extend([(p, False) for p in adds] + [(p, True) for p in removes])

    names = [
        rng.choice(GROUP_NAMES) if rng.random() < 0.15 else MANUAL for _ in range(MEMBER_BODIES)
    ]
    bodies = [members_body(rng, i) for i in range(MEMBER_BODIES)]
    await send_all([lambda n=n, b=b: post(n, b) for n, b in zip(names, bodies, strict=True)])
    # No other method: 405, in the API's JSON form too.
    for method in ("DELETE", "PUT", "GET", "PATCH"):
        path = f"/groups/{MANUAL}/members"
        response = await api.client.request(method, path, headers=api.auth())
        assert (response.status, response.headers["Allow"]) == (405, "POST")
        assert await response.json() == {"error": f"Method Not Allowed: {method} {path}"}
        api.count(response.status)

    print(f"\nfuzz: {sum(api.statuses.values())} requests, statuses {sorted(api.statuses.items())}")
    assert set(api.statuses) == {200, 400, 404, 405, 413}
    assert api.statuses[200] > MEMBER_BODIES // 10
    assert api.app[UNEXPECTED] == []
    people = [p for p, _ in changes]
    records = await assert_records_are_built(api, expected_records(people), tmp_path / "worker.log")
    # Whatever the order, a record only ever added to vip is in it, one only ever taken out not.
    for record in records:
        mine = [
            remove
            for p, remove in changes
            if ("userId" in p and record_id(p) == record["id"])
            or ("userId" not in p and p["anonymousId"] in record["anonymousIds"])
        ]
        if mine and not any(mine):
            assert MANUAL in record["groups"], (record, mine)
        if mine and all(mine):
            assert MANUAL not in record["groups"], (record, mine)


# --- The worker --------------------------------------------------------------------------------


async def settled(ns: Namespace, timeout: float = 240.0) -> None:
    """Until the worker has consumed every record of every stage's source and shuffle topics,
    twice over with nothing new (stages write into each other's sources)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    sources = {d.source for d in ns.catalog.derivations.values()}
    previous: dict[TopicPartition, int] | None = None
    while True:
        ends: dict[TopicPartition, int] = {}
        for source in sorted(sources):
            partitions = ns.catalog.collections[source].partitions
            for topic in (ns.names.collection(source), ns.names.shuffle(source)):
                ends.update(await topic_ends(ns.bootstrap, topic, partitions))
        done = await ns.committed("derive", list(ends))
        if all(done.get(tp, 0) >= end for tp, end in ends.items()):
            if ends == previous:
                return
            previous = ends
        assert loop.time() < deadline, f"the worker did not settle: {done}, ends {ends}"
        await asyncio.sleep(1.2)  # consumer offsets are committed about once a second


async def assert_records_are_built(api: Fuzz, expected: set[str], log: Path) -> list[Doc]:
    """A worker with the Postgres sinks builds exactly the `expected` records from everything
    the API accepted, sends nothing to a dead-letter topic and stays up; returns the rows."""
    assert expected
    worker = api.ns.worker(log, SEGFLOW_POSTGRES=api.dsn, SEGFLOW_POSTGRES_SCHEMA=api.schema)
    try:
        await settled(api.ns)
        await api.ns.checkpointed(api.dsn, api.schema, timeout=240.0)
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        stop(worker)
    assert worker.returncode == 0, log.read_text()[-3000:]
    for topic in pipeline_topics(api.ns.catalog, api.ns.names):
        if topic.endswith(".dead-letter"):
            assert await every_record(api.ns, topic) == [], topic
    rows = await profile_records(api.dsn, api.schema)
    assert {row["id"] for row in rows} == expected
    print(f"{len(rows)} records in profile_records")
    return rows


async def profile_records(dsn: str, schema: str) -> list[Doc]:
    """The documents of profile_records, each row's columns checked against its document
    (times as text: Python's datetime cannot hold 1 BC, which 0001-01-01T00:00:00+15:59 is)."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(
            "select id, user_id, anonymous_ids, groups, created_at::text, document"
            f" from {schema}.profile_records"
        )
        rows = await cursor.fetchall()
    for id_, user_id, devices, groups, created, doc in rows:
        assert (id_, user_id, devices, groups) == (
            doc["id"], doc.get("userId"), doc["anonymousIds"], doc["groups"]
        )  # fmt: skip
        assert created
    return [doc for *_, doc in rows]
