"""The ingestion API against the real embedded broker and Postgres: every status code, the keys
CLI, a fuzzer of hostile bodies, and loopback throughput."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psycopg
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from pipeline.documents.pointers import encode_key
from pipeline.documents.validation import Validator
from pipeline.errors import SegflowError
from pipeline.producers.api import UNEXPECTED, make_app, serve
from pipeline.producers.keys import (
    KeyStore,
    add_keys_parser,
    create_key,
    hash_key,
    list_keys,
    revoke_key,
)
from pipeline.runtime.produce import PRODUCER, RECEIVED_AT, make_producer
from pipeline.runtime.settings import Settings
from pipeline.runtime.topics import partition_for, read_to_end
from pipeline.tools.embedded import free_port
from tests.fixtures.edges import EDGES, FOUR, HOSTILE, SURROGATE
from tests.fixtures.events import generate
from tests.fixtures.stack import Namespace, topic_ends
from tests.integration.test_limits import assert_rows_are_the_documents, every_record
from tests.integration.test_pipeline import stop

pytestmark = pytest.mark.integration

EVENTS = "segment/events"
MAX_BYTES = 1 << 20


@dataclass
class Api:
    ns: Namespace
    client: TestClient[web.Request, web.Application]
    app: web.Application
    producer: AIOKafkaProducer
    dsn: str
    schema: str
    key: str

    def url(self, collection: str = EVENTS) -> str:
        return f"/ingest/{collection}"

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    async def post(self, body: Any, key: str | None = None, collection: str = EVENTS) -> Any:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        return await self.client.post(
            self.url(collection), data=payload(data), headers=self.auth(key)
        )

    async def ends(self) -> dict[TopicPartition, int]:
        partitions = self.ns.catalog.collections[EVENTS].partitions
        return await topic_ends(self.ns.bootstrap, self.ns.names.collection(EVENTS), partitions)


A = TypeVar("A", bound=Api)


def payload(data: bytes) -> bytes | io.BytesIO:
    """aiohttp warns (an error here) when sending large raw bytes."""
    return io.BytesIO(data) if len(data) > 512 * 1024 else data


@contextlib.asynccontextmanager
async def serving(
    kind: type[A], namespace: Namespace, postgres: str, schema: str, key_name: str, collection: str
) -> AsyncIterator[A]:
    """The API app on a test server with a key for `collection`; no unexpected error allowed."""
    settings = namespace.settings(postgres=postgres, postgres_schema=schema)
    key = await create_key(postgres, schema, key_name, [collection])
    keys = KeyStore(postgres, schema)
    await keys.open()
    producer = make_producer(namespace.bootstrap)
    await producer.start()
    try:
        app = make_app(settings, namespace.catalog, keys, producer)
        async with TestClient(TestServer(app)) as client:
            yield kind(namespace, client, app, producer, postgres, schema, key)
        assert app[UNEXPECTED] == []
    finally:
        await producer.stop()
        await keys.close()


@pytest.fixture
async def api(namespace: Namespace, postgres: str, pg_schema: str) -> AsyncIterator[Api]:
    async with serving(Api, namespace, postgres, pg_schema, "web", EVENTS) as served:
        yield served


def events(count: int, seed: int = 1) -> list[dict[str, Any]]:
    return generate(count, seed=seed, redeliveries=0)


# --- 200 ---------------------------------------------------------------------------------------


async def test_documents_are_written_keyed_by_user_with_receipt_headers(api: Api) -> None:
    before = await api.ends()
    single, batch = events(1, seed=2)[0], events(20, seed=3)
    started = int(time.time() * 1000)
    response = await api.post(single)
    assert response.status == 200, await response.text()
    assert await response.json() == {"accepted": 1}
    response = await api.post(batch)
    assert (response.status, await response.json()) == (200, {"accepted": 20})
    finished = int(time.time() * 1000)

    producer_id = (await list_keys(api.dsn, api.schema))[0].producer_id
    partitions = api.ns.catalog.collections[EVENTS].partitions
    written = []
    async for records in read_to_end(api.ns.bootstrap, before):
        written.extend(records)
    assert sorted(orjson.loads(r.value)["event"] for r in written) == sorted(
        e["event"] for e in [single, *batch]
    )
    for record in written:
        doc = orjson.loads(record.value)
        assert record.key == encode_key((doc["user"],))
        assert record.partition == partition_for(record.key, partitions)
        headers = dict(record.headers)
        assert started <= int(headers[RECEIVED_AT]) <= finished
        assert headers[PRODUCER].decode() == producer_id
    # A user's documents keep their order.
    batch_order = [e["event"] for e in batch if e["user"] == batch[0]["user"]]
    written_order = [orjson.loads(r.value)["event"] for r in written]
    assert [e for e in written_order if e in batch_order] == batch_order


async def test_any_content_type_is_parsed_as_json_and_an_empty_array_accepts_nothing(
    api: Api,
) -> None:
    body = orjson.dumps(events(1, seed=4)[0])
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "image/png"):
        response = await api.client.post(
            api.url(), data=body, headers={**api.auth(), "Content-Type": content_type}
        )
        assert response.status == 200, await response.text()
    response = await api.post([])
    assert (response.status, await response.json()) == (200, {"accepted": 0})


async def test_health(api: Api) -> None:
    response = await api.client.get("/health")
    assert (response.status, await response.json()) == (200, {"status": "ok"})


# --- 400 ---------------------------------------------------------------------------------------


async def test_invalid_documents_are_all_listed_and_nothing_is_written(api: Api) -> None:
    before = await api.ends()
    docs: list[Any] = events(4, seed=5)
    docs[1] = {**docs[1], "segment": {"vendor": "acme", "name": ""}}
    docs[3] = {k: v for k, v in docs[3].items() if k != "timestamp"}
    response = await api.post(docs)
    assert response.status == 400
    errors = (await response.json())["errors"]
    assert {(e["index"], e["path"]) for e in errors} == {
        (1, "/segment/name"),
        (1, "/segment/vendor"),
        (3, ""),
    }
    assert all(e["message"] for e in errors)
    assert any("timestamp" in e["message"] for e in errors if e["index"] == 3)

    one_bad = events(4, seed=6)
    one_bad[2]["event"] = 42
    response = await api.post(one_bad)
    assert response.status == 400
    assert [(e["index"], e["path"]) for e in (await response.json())["errors"]] == [(2, "/event")]
    assert await api.ends() == before


async def test_documents_no_sink_can_store_are_400_with_their_errors(api: Api) -> None:
    before = await api.ends()
    for hostile in HOSTILE:
        response = await api.post(hostile.doc)
        assert response.status == 400, hostile.name
        assert (await response.json())["errors"] == [
            {"index": 0, "path": path, "message": message} for path, message in hostile.errors
        ], hostile.name
    # All at once between valid ones: each named by its index, and nothing written.
    response = await api.post([EDGES[0], *(h.doc for h in HOSTILE), EDGES[1]])
    assert response.status == 400
    assert (await response.json())["errors"] == [
        {"index": index, "path": path, "message": message}
        for index, hostile in enumerate(HOSTILE, start=1)
        for path, message in hostile.errors
    ]
    response = await api.post(SURROGATE)
    assert response.status == 400
    assert (await response.json())["error"].startswith("request body is not JSON: ")
    assert await api.ends() == before
    # What the door lets in at its edges is accepted.
    response = await api.post(EDGES)
    assert (response.status, await response.json()) == (200, {"accepted": len(EDGES)})


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"\xff\xfe", b"null", b"42", b'"x"', b"[1, 2]", b"[[{}]]", b"[" * 10_000],
    ids=["empty", "truncated", "utf16", "null", "number", "string", "numbers", "nested", "deep"],
)
async def test_what_is_not_an_object_or_array_of_objects_is_400(api: Api, body: bytes) -> None:
    response = await api.post(body)
    assert response.status == 400
    answer = await response.json()
    assert "error" in answer or all(
        {"index", "path", "message"} <= set(e) for e in answer["errors"]
    )


# --- 401, 403, 404 -----------------------------------------------------------------------------


async def test_missing_malformed_and_unknown_keys_are_401(api: Api) -> None:
    body = orjson.dumps(events(1)[0])
    response = await api.client.post(api.url(), data=body)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="segflow"'
    for header in (
        "Bearer",
        "Bearer sfk_short",
        f"Basic {api.key}",
        api.key,
        f"Bearer {api.key}x",
        "Bearer sfk_" + "A" * 43,  # well formed, unknown
        f"Bearer {api.key.upper()}",
    ):
        response = await api.client.post(api.url(), data=body, headers={"Authorization": header})
        assert response.status == 401, header
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert api.key not in await response.text()


async def test_a_revoked_key_is_refused_within_two_seconds(api: Api) -> None:
    key = await create_key(api.dsn, api.schema, "mobile", [EVENTS])
    doc = events(1, seed=7)[0]
    assert (await api.post(doc, key=key)).status == 200
    assert await revoke_key(api.dsn, api.schema, "mobile")
    assert not await revoke_key(api.dsn, api.schema, "mobile")
    revoked = time.monotonic()
    while (status := (await api.post(doc, key=key)).status) == 200:
        assert time.monotonic() - revoked < 2.0, "revocation did not take effect"
        await asyncio.sleep(0.05)
    assert status == 401
    print(f"\nrevocation took effect after {time.monotonic() - revoked:.2f}s")
    assert (await api.post(doc)).status == 200  # other keys are unaffected


async def test_unscoped_key_and_derived_collection_are_403_unknown_collection_404(
    api: Api,
) -> None:
    doc = events(1, seed=8)[0]
    other = await create_key(api.dsn, api.schema, "other", ["segment/other"])
    response = await api.post(doc, key=other)
    assert response.status == 403
    assert "'other' may not write 'segment/events'" in (await response.json())["error"]

    response = await api.post(doc, collection="segment/profiles")
    assert response.status == 403
    assert "derived from 'segment/events'" in (await response.json())["error"]

    response = await api.post(doc, collection="segment/nope")
    assert (response.status, await response.json()) == (
        404,
        {"error": "no collection 'segment/nope'"},
    )
    # Authentication comes first: nobody learns which collections exist without a key.
    response = await api.client.post(api.url("segment/nope"), data=orjson.dumps(doc))
    assert response.status == 401


# --- 413 ---------------------------------------------------------------------------------------


async def test_too_many_documents_or_bytes_is_413(api: Api) -> None:
    before = await api.ends()
    response = await api.post(events(1001, seed=9))
    assert response.status == 413
    assert "1001 documents" in (await response.json())["error"]

    doc = events(1, seed=10)[0]
    big = orjson.dumps({**doc, "user": "u" * MAX_BYTES})
    response = await api.post(big)
    assert response.status == 413

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    response = await api.client.post(api.url(), data=chunked(), headers=api.auth())
    assert response.status == 413
    # Exactly the limit, in documents the schema allows (values of 1,024 four-byte characters)
    # and whitespace.
    adds = [{**e, "value": FOUR * 1024} for e in events(500, seed=13) if "remove" not in e]
    fitting = max(n for n in range(len(adds) + 1) if len(orjson.dumps(adds[:n])) <= MAX_BYTES)
    assert fitting < len(adds)
    body = orjson.dumps(adds[:fitting])
    just_fits = body + b" " * (MAX_BYTES - len(body))  # less than one more document
    assert len(just_fits) == MAX_BYTES
    response = await api.post(just_fits)
    assert response.status == 200, await response.text()
    assert (await api.post(just_fits + b" ")).status == 413
    after = await api.ends()
    assert sum(after.values()) == sum(before.values()) + fitting


# --- 503 ---------------------------------------------------------------------------------------


async def test_a_broker_failure_is_503(api: Api) -> None:
    await api.producer.stop()
    response = await api.post(events(1, seed=11)[0])
    assert response.status == 503
    assert "error" in await response.json()


# --- The keys CLI ------------------------------------------------------------------------------


def run_keys(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="segflow")
    add_keys_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["keys", *argv])
    code: int = args.func(args, settings)
    return code


@pytest.fixture
def settings(namespace: Namespace, postgres: str, pg_schema: str) -> Iterator[Settings]:
    yield namespace.settings(postgres=postgres, postgres_schema=pg_schema)


def test_keys_cli_creates_lists_and_revokes_without_showing_secrets(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_keys(settings, "create", "--name", "web", "--collections", EVENTS) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    key = lines[-1]
    assert key.startswith("sfk_") and len(key) == 47
    assert "only once" in lines[-2]

    assert run_keys(settings, "list") == 0
    listed = capsys.readouterr().out
    assert "web" in listed and EVENTS in listed and "-" in listed
    assert key not in listed and hash_key(key) not in listed

    with psycopg.connect(settings.postgres or "") as conn:
        stored = conn.execute(
            f'select key_hash from "{settings.postgres_schema}".segflow_api_keys'
        ).fetchall()
    assert stored == [(hash_key(key),)]
    assert key not in stored[0][0]

    with pytest.raises(SegflowError, match="an API key named 'web' already exists"):
        run_keys(settings, "create", "--name", "web", "--collections", EVENTS)
    with pytest.raises(SegflowError, match="unknown collection 'segment/nope'"):
        run_keys(settings, "create", "--name", "x", "--collections", f"{EVENTS},segment/nope")
    with pytest.raises(SegflowError, match="derived from 'segment/events'"):
        run_keys(settings, "create", "--name", "x", "--collections", "segment/toggles")

    assert run_keys(settings, "revoke", "web") == 0
    assert "revoked API key 'web'" in capsys.readouterr().out
    with pytest.raises(SegflowError, match="no active API key named 'web'"):
        run_keys(settings, "revoke", "web")
    assert run_keys(settings, "list") == 0
    revoked_row = capsys.readouterr().out.splitlines()[1]
    assert revoked_row.split()[-1] != "-"


# --- Fuzzing -----------------------------------------------------------------------------------

FUZZ_COUNT = 6000


def _wrong_values(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            True,
            0,
            -1,
            1.5,
            2**63,
            1e308,
            "",
            "\x00",
            "x" * rng.randint(1, 100),
            [],
            {},
            [1, "a"],
            {"vendor": 1},
            "\U0001f600" * 5,
            # At the edges of what the door lets in (and one past).
            FOUR * 256,
            "x" * 257,
            2147483647,
            2147483648,
            3.0,
            "0001-01-01T00:00:00+15:59",
            "9999-12-31T23:59:59." + "9" * 30 + "-15:59",
            "2021-01-16T12:00:00+16:00",
            "2021-01-16T12:00:00Z\n",
            "ABCDEF01-2345-4789-ABCD-EF0123456789",
        ]
    )


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([rng.randint(-(2**63), 2**64 - 1), rng.uniform(-1e300, 1e300)])
    if kind in (3, 4):
        alphabet = 'aZ09 \x00\x1f"\\/\u00e9\u2028\U0001f600'
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 6))]
    keys = ["event", "timestamp", "user", "segment", "value", "remove", "vendor", "name", "x"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 6))}


def _mutated_event(rng: random.Random) -> Any:
    doc: dict[str, Any] = events(1, seed=rng.randrange(10**6))[0]
    for _ in range(rng.randint(1, 3)):
        action = rng.randrange(5)
        field = rng.choice(["event", "timestamp", "user", "segment", "value", "remove"])
        if action == 0:
            doc[field] = _wrong_values(rng)
        elif action == 1:
            doc.pop(field, None)
        elif action == 2:
            segment = doc.get("segment")
            segment = dict(segment) if isinstance(segment, dict) else {}
            doc["segment"] = {**segment, rng.choice(["vendor", "name"]): _wrong_values(rng)}
        elif action == 3:
            doc[rng.choice(["extra", "Event", ""])] = _wrong_values(rng)
        else:
            doc["remove"], doc["value"] = True, "v"
    return doc


TEXTUAL = [
    b'{"vendor": 1e400}',
    b"[1e400]",
    b"-1e400",
    b"123456789012345678901234567890123456789",
    b'"\\ud800"',
    b'"\\udc00\\ud800"',
    b'{"a": "\\u0000"}',
    b"\x00\x00\x00",
    b'{"event": 1, "event": 2}',
    b"NaN",
    b"Infinity",
    b"[1,]",
    b"{'single': 'quotes'}",
    b"\xef\xbb\xbf{}",
    b'{"a":1}{"b":2}',
    b"  \n\t ",
]


def hostile_body(rng: random.Random, index: int) -> bytes:
    """One body; the kind rotates with `index`, its content comes from `rng`."""
    kind = index % 12
    if kind == 0:
        return rng.randbytes(rng.randint(0, 2000))
    if kind == 1:
        raw = bytearray(orjson.dumps(events(1, seed=index)[0]))
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.choice([0, 0xFF, 0xC3, ord('"'), ord("}")])
        return bytes(raw)
    if kind == 2:
        return orjson.dumps(_random_json(rng))
    if kind == 3:
        return orjson.dumps([_random_json(rng) for _ in range(rng.randint(0, 5))])
    if kind in (4, 5):
        return orjson.dumps(_mutated_event(rng))
    if kind == 6:
        docs: list[Any] = events(rng.randint(1, 10), seed=index)
        docs[rng.randrange(len(docs))] = _mutated_event(rng)
        return orjson.dumps(docs)
    if kind == 7:
        depth = rng.choice([1000, 1023, 1025, 10_000])
        opener, closer = rng.choice([(b"[", b"]"), (b'{"user":', b"}"), (b'{"segment":[', b"]}")])
        return opener * depth + closer * depth
    if kind == 8:
        return rng.choice(TEXTUAL)
    if kind == 9:
        whole = orjson.dumps(events(rng.randint(1, 20), seed=index))
        return whole[: rng.randrange(len(whole))]
    if kind == 10 and index % 48 == 10:  # few of these: each is large
        doc = events(1, seed=index)[0]
        field = rng.choice(["user", "event", "value", "timestamp", "name"])
        huge = rng.choice(["x", "\x00", "\u00e9"]) * 900_000
        if field == "name":
            doc["segment"] = {**doc["segment"], "name": huge}
        else:
            doc[field] = huge
        return orjson.dumps(doc)
    if kind == 11 and index % 96 == 11:
        return orjson.dumps(events(1001, seed=index))
    # Valid-looking events with wrong field types, and sometimes simply valid ones.
    return orjson.dumps(rng.choice([_mutated_event(rng), events(1, seed=index)[0]]))


HOSTILE_AUTHORIZATION = [
    "Bearer " + "A" * 10_000,
    "Bearer sfk_" + "\u00e9" * 43,
    "Bearer sfk_" + "!" * 43,
    "Bearer sfk_" + "A" * 43 + " extra",
    "Bearer\tsfk_" + "A" * 43,
    "Bearer ' or 1=1 --",
    "Bearer %00",
    "Negotiate xyz",
    "",
]


def expected_status(body: bytes, validator: Validator) -> int:
    if len(body) > MAX_BYTES:
        return 413
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 400
    docs = parsed if isinstance(parsed, list) else [parsed]
    if len(docs) > 1000:
        return 413
    try:
        ok = all(isinstance(d, dict) and validator.is_valid(d) for d in docs)
    except RecursionError:
        ok = False
    return 200 if ok else 400


async def test_hostile_bodies_are_always_answered_with_4xx(api: Api, tmp_path: Path) -> None:
    """...and nothing answered with 200 stops the pipeline: a worker writes all of it to Postgres
    (`assert_accepted_documents_land`)."""
    rng = random.Random(20240601)
    validator = Validator(api.ns.catalog.collections[EVENTS].schema)
    content_types = [None, "application/json", "text/plain", "multipart/form-data; boundary=x"]
    bodies = [hostile_body(rng, i) for i in range(FUZZ_COUNT)]
    statuses: dict[int, int] = {}
    accepted = 0
    gate = asyncio.Semaphore(16)
    before = await api.ends()
    started = time.monotonic()

    async def send(body: bytes) -> None:
        nonlocal accepted
        if rng.random() < 0.05:  # a hostile Authorization header instead of the key
            header = rng.choice(HOSTILE_AUTHORIZATION)
            async with gate:
                response = await api.client.post(
                    api.url(), data=payload(body), headers={"Authorization": header}
                )
                answer = await response.read()
            # aiohttp itself answers 400 to a header line over 8,190 bytes.
            assert response.status == (400 if len(header) > 8000 else 401), (header, answer)
            statuses[response.status] = statuses.get(response.status, 0) + 1
            return
        headers = api.auth()
        if (content_type := rng.choice(content_types)) is not None:
            headers["Content-Type"] = content_type
        async with gate:
            response = await api.client.post(api.url(), data=payload(body), headers=headers)
            answer = await response.read()
        expected = expected_status(body, validator)
        assert response.status == expected, (body[:200], response.status, answer[:500])
        assert orjson.loads(answer)  # always a JSON answer
        statuses[response.status] = statuses.get(response.status, 0) + 1
        if response.status == 200:
            accepted += orjson.loads(answer)["accepted"]

    await asyncio.gather(*(send(b) for b in bodies))
    elapsed = time.monotonic() - started
    print(f"\nfuzz: {len(bodies)} bodies in {elapsed:.1f}s, statuses {sorted(statuses.items())}")
    assert sum(statuses.values()) == FUZZ_COUNT >= 2000
    assert set(statuses) <= {200, 400, 401, 413}
    assert statuses.get(400, 0) > FUZZ_COUNT // 2
    assert api.app[UNEXPECTED] == []
    response = await api.client.get("/health")
    assert response.status == 200
    await assert_accepted_documents_land(api, before, accepted, tmp_path / "worker.log")


async def assert_accepted_documents_land(
    api: Api, before: dict[TopicPartition, int], accepted: int, log: Path
) -> None:
    """A worker with the Postgres sink processes every document the API wrote since `before`
    and stays up; none is a dead letter, parked, or missing from the tables."""
    written: list[ConsumerRecord] = []
    async for records in read_to_end(api.ns.bootstrap, before):
        written += records
    assert len(written) == accepted > 0
    api.ns.sent = await api.ends()
    worker = api.ns.worker(log, SEGFLOW_POSTGRES=api.dsn, SEGFLOW_POSTGRES_SCHEMA=api.schema)
    try:
        await api.ns.in_postgres(api.dsn, api.schema)
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        stop(worker)
    assert worker.returncode == 0, log.read_text()[-3000:]
    assert await every_record(api.ns, api.ns.names.dead_letter(EVENTS)) == []
    assert await every_record(api.ns, api.ns.names.sink_dead_letter("postgres")) == []
    counts = await assert_rows_are_the_documents(api.ns, api.dsn, api.schema)
    # The API writes a user's documents to the partition that derives them, where an event id
    # seen before is a redelivery: every other document has its membership and profile.
    seen: set[tuple[int, str]] = set()
    memberships, users = set(), set()
    for record in sorted(written, key=lambda r: (r.partition, r.offset)):
        doc = orjson.loads(record.value)
        if (record.partition, doc["event"]) not in seen:
            seen.add((record.partition, doc["event"]))
            memberships.add((doc["segment"]["vendor"], doc["segment"]["name"], doc["user"]))
            users.add(doc["user"])
    assert counts["segment_memberships"] == len(memberships)
    assert counts["segment_profiles"] == len(users)
    print(f"{accepted} accepted documents: {counts}")


# --- Throughput --------------------------------------------------------------------------------


async def test_ingest_throughput_on_loopback(api: Api) -> None:
    batches = [orjson.dumps(events(1000, seed=100 + i)) for i in range(150)]
    base = str(api.client.make_url(api.url()))
    headers = api.auth()

    async def client(bodies: list[bytes]) -> None:
        async with ClientSession() as session:
            for body in bodies:
                async with session.post(base, data=body, headers=headers) as response:
                    assert response.status == 200, await response.text()

    started = time.monotonic()
    await client(batches[:50])
    sequential = 50_000 / (time.monotonic() - started)
    started = time.monotonic()
    await asyncio.gather(*(client(batches[50 + i :: 4]) for i in range(4)))
    concurrent = 100_000 / (time.monotonic() - started)
    print(
        f"\nHTTP ingest, 1,000-event batches: {sequential:,.0f} events/s sequential (50 requests),"
        f" {concurrent:,.0f} events/s with 4 clients (100 requests)"
    )
    ends = await api.ends()
    assert sum(ends.values()) >= 150_000


# --- serve -------------------------------------------------------------------------------------


async def test_serve_runs_until_cancelled(
    namespace: Namespace, postgres: str, pg_schema: str
) -> None:
    settings = namespace.settings(postgres=postgres, postgres_schema=pg_schema)
    key = await create_key(postgres, pg_schema, "web", [EVENTS])
    port = free_port()
    server = asyncio.create_task(serve(settings, "127.0.0.1", port))
    base = f"http://127.0.0.1:{port}"
    try:
        async with ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with session.get(f"{base}/health") as response:
                        assert await response.json() == {"status": "ok"}
                        break
                except OSError:
                    assert time.monotonic() < deadline and not server.done()
                    await asyncio.sleep(0.05)
            async with session.post(
                f"{base}/ingest/{EVENTS}",
                data=orjson.dumps(events(3, seed=12)),
                headers={"Authorization": f"Bearer {key}"},
            ) as response:
                assert (response.status, await response.json()) == (200, {"accepted": 3})
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
