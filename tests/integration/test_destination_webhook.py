"""Webhook destinations (SPEC 9) against real Postgres, a real aiohttp receiver and the embedded
broker: every mode, newest-only, retries, enrich 404s, parking and `segflow dlq`, the outbox
across a restart, and a `segflow worker` SIGKILLed mid-stream."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer, TopicPartition

from materializations.destinations import materialization_name, materialization_of
from materializations.destinations.delivery import DestinationError
from materializations.destinations.exports import View, enriched, view_of
from materializations.destinations.webhook import WebhookDestination
from materializations.webhook import verify
from pipeline.catalog import Catalog, load_catalog
from pipeline.catalog.specs import DestinationSpec
from pipeline.runtime.topics import Names, ensure_topics, pipeline_topics, read_to_end
from pipeline.tools import dlq
from pipeline.tools.read import current_documents
from tests.fixtures.profiles import product_events
from tests.fixtures.records import Record
from tests.fixtures.stack import ROOT, Namespace, topic_ends
from tests.fixtures.webhooks import SECRET
from tests.integration.test_pipeline import stop
from tests.integration.test_profiles import settled

pytestmark = pytest.mark.integration

RECORDS = "profile/records"
GROUPS = {"high-value": "HV", "vip": "VIP"}
PROPERTIES = {"email": "email", "ltv": "ltv", "uid": "userId"}


# --- The receiver ----------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    elements: list[dict[str, Any]]
    status: int


@dataclass
class Receiver:
    """Records every request and answers `answer(elements)` (200 by default); while `gate` is
    clear, requests wait for it."""

    answer: Callable[[list[dict[str, Any]]], int] = lambda elements: 200
    delay: float = 0.0
    """Seconds each answer takes."""
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    log: list[Received] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self.gate.set()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        elements = orjson.loads(body)
        seen = Received(dict(request.headers), body, elements, 0)
        self.log.append(seen)
        await self.gate.wait()
        await asyncio.sleep(self.delay)
        seen.status = self.answer(elements)
        return web.Response(status=seen.status)

    @property
    def acked(self) -> list[dict[str, Any]]:
        """Elements of the requests answered 2xx, in order, each id once (redeliveries out)."""
        seen: set[str] = set()
        out = []
        for r in self.log:
            if 200 <= r.status < 300:
                for e in r.elements:
                    if e["id"] not in seen:
                        seen.add(e["id"])
                        out.append(e)
        return out

    def exports(self, record: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.acked if "toDelete" in e and record in (None, e["record"])]

    def state(self) -> dict[str, View]:
        """What the receiver holds per record after applying every acknowledged export."""
        held: dict[str, View] = {}
        for e in self.exports():
            if e["toDelete"]:
                held.pop(e["record"], None)
            else:
                held[e["record"]] = View(e["newProperties"], tuple(e["newGroups"]))
        return held


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hooks", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        receiver.url = f"http://{host}:{port}/hooks"
        yield receiver
    finally:
        receiver.gate.set()
        await runner.cleanup()


def assert_chained(exports: list[dict[str, Any]]) -> None:
    """Per record, each export's old side is the previous acknowledged export's new side."""
    last: dict[str, tuple[Any, Any]] = {}
    for e in exports:
        previous = last.get(e["record"], ({}, []))
        assert (e["oldProperties"], e["oldGroups"]) == previous, e
        last[e["record"]] = ({}, []) if e["toDelete"] else (e["newProperties"], e["newGroups"])


def assert_same_bodies(receiver: Receiver) -> None:
    """A webhook-id or element id received twice carries the same body."""
    bodies: dict[str, bytes] = {}
    elements: dict[str, dict[str, Any]] = {}
    for r in receiver.log:
        assert bodies.setdefault(r.headers["webhook-id"], r.body) == r.body
        for e in r.elements:
            assert elements.setdefault(e["id"], e) == e


# --- Driving a sink directly -----------------------------------------------------------------


def destination(mode: str = "sync", events: tuple[str, ...] = (), **config: str) -> DestinationSpec:
    return DestinationSpec(
        name=f"d{uuid.uuid4().hex[:8]}",
        kind="webhook",
        config={"secret": SECRET, **config},
        groups=GROUPS,
        properties=PROPERTIES,
        mode=mode,
        events=events,
    )


def doc(record: str, groups: list[str], **properties: Any) -> dict[str, Any]:
    return {"id": record, "userId": record, "properties": properties, "groups": groups}


@dataclass
class Feed:
    """Consumer records of the records and forwarded topics, with consecutive offsets."""

    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}.")
    offsets: Counter[tuple[str, int]] = field(default_factory=Counter)

    @property
    def records_topic(self) -> str:
        return Names(self.prefix).collection(RECORDS)

    @property
    def events_topic(self) -> str:
        return self.records_topic + ".forwarded"

    def _next(self, topic: str, partition: int) -> int:
        offset = self.offsets[topic, partition]
        self.offsets[topic, partition] += 1
        return offset

    def document(self, partition: int, record: str, document: dict[str, Any] | None) -> Record:
        value = None if document is None else orjson.dumps(document)
        offset = self._next(self.records_topic, partition)
        return Record(self.records_topic, partition, offset, orjson.dumps([record]), value)

    def event(self, partition: int, record: str, kind: str, after: dict[str, Any]) -> Record:
        note = {"r": record, "event": {"id": str(uuid.uuid4()), "type": kind}, "document": after}
        offset = self._next(self.events_topic, partition)
        return Record(
            self.events_topic, partition, offset, orjson.dumps([record]), orjson.dumps(note)
        )


class Driver:
    """A WebhookDestination fed by hand, as the worker's materializer feeds it."""

    def __init__(self, sink: WebhookDestination, feed: Feed) -> None:
        self.sink = sink
        self.feed = feed

    async def apply(self, *records: Record) -> None:
        for r in records:
            await self.sink.apply(self.sink.topics[r.topic], [r])

    async def settle(self, timeout: float = 15.0) -> dict[TopicPartition, int]:
        assert await self.sink.drain(timeout), "not everything was settled in time"
        return await self.sink.flush()


@asynccontextmanager
async def driving(
    spec: DestinationSpec,
    postgres: str | None,
    schema: str,
    *,
    feed: Feed | None = None,
    parked: list[tuple[bytes, dict[str, str]]] | None = None,
    dead_letter: Callable[[bytes, dict[str, str]], Awaitable[None]] | None = None,
    partitions: int = 2,
    hold: float = 5.0,
) -> AsyncIterator[Driver]:
    feed = feed or Feed()
    mspec = materialization_of(spec, RECORDS)
    topics = {Names(feed.prefix).collection(b.source): b for b in mspec.bindings}

    async def park(body: bytes, headers: dict[str, str]) -> None:
        assert parked is not None, "nothing should be parked"
        parked.append((body, headers))

    sink = WebhookDestination(
        spec,
        mspec,
        topics,
        dead_letter=dead_letter or park,
        settings_postgres=postgres,
        settings_schema=schema,
        backoff_base=0.05,
        backoff_cap=0.4,
        hold=hold,
    )
    async with sink:
        await sink.positions([TopicPartition(t, p) for t in topics for p in range(partitions)])
        yield Driver(sink, feed)


async def baselines(postgres: str, schema: str, name: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(postgres) as conn:
        cursor = await conn.execute(
            f"select record, view from {schema}.segflow_destination_acks where destination = %s",
            (name,),
        )
        return dict(await cursor.fetchall())


async def checkpoints(postgres: str, schema: str, name: str) -> dict[tuple[str, int], int]:
    async with await psycopg.AsyncConnection.connect(postgres) as conn:
        try:
            cursor = await conn.execute(
                "select topic, partition, next_offset from"
                f" {schema}.segflow_destination_checkpoints where destination = %s",
                (name,),
            )
        except psycopg.errors.UndefinedTable:
            return {}
        return {(t, p): o for t, p, o in await cursor.fetchall()}


# --- Tests: the sink -------------------------------------------------------------------------


async def test_without_postgres_it_says_what_to_set() -> None:
    spec = destination(url="http://127.0.0.1:1/hooks")
    with pytest.raises(DestinationError, match=rf"destination '{spec.name}'.*SEGFLOW_POSTGRES"):
        async with driving(spec, None, "public"):
            pass


@pytest.mark.parametrize("mode", ["sync", "additive", "enrich"])
async def test_every_mode_creates_updates_retags_and_removes(
    mode: str, postgres: str, pg_schema: str
) -> None:
    async with receiving(Receiver()) as receiver:
        spec = destination(mode, url=receiver.url)
        async with driving(spec, postgres, pg_schema) as d:
            f = d.feed
            await d.apply(
                f.document(0, "a", doc("a", ["high-value"], email="a@x", ltv=10)),
                f.document(0, "b", doc("b", ["vip", "other"], email="b@x")),
                f.document(1, "c", doc("c", ["other"], email="c@x")),  # never in
            )
            await d.settle()
            await d.apply(
                f.document(0, "a", doc("a", ["high-value"], email="a@x", ltv=20)),
                f.document(0, "b", doc("b", ["vip", "high-value"], email="b@x")),
            )
            await d.settle()
            await d.apply(
                f.document(0, "a", doc("a", ["other"], email="a2@x", ltv=20)),  # leaves
                f.document(0, "b", None),  # merged away
            )
            await d.settle()
            await d.apply(f.document(0, "a", doc("a", ["other"], email="a2@x", ltv=20)))
            offsets = await d.settle()
    assert offsets[TopicPartition(f.records_topic, 0)] == 7
    delete = mode == "sync"
    a_props = {"email": "a@x", "ltv": 10, "uid": "a"}
    b_props = {"email": "b@x", "uid": "b"}
    shown = [
        (e["record"], e["newProperties"], e["newGroups"], e["toDelete"]) for e in receiver.exports()
    ]
    assert shown == [
        ("a", a_props, ["HV"], False),
        ("b", b_props, ["VIP"], False),
        ("a", {**a_props, "ltv": 20}, ["HV"], False),
        ("b", b_props, ["HV", "VIP"], False),
        ("a", {"email": "a2@x", "ltv": 20, "uid": "a"}, [], delete),
        ("b", b_props, [], delete),
    ], "the unchanged document of a sent nothing; c was never in"
    assert all(e["mode"] == mode for e in receiver.exports())
    assert_chained(receiver.exports())
    assert all(verify(SECRET, r.headers, r.body) for r in receiver.log)
    if mode == "enrich":
        assert all(len({e["record"] for e in r.elements}) == 1 for r in receiver.log)
    rows = await baselines(postgres, pg_schema, spec.name)
    if delete:
        assert rows == {}, "a deleted record's row goes once the checkpoint passes it"
    else:
        assert rows == {
            "a": {"properties": {"email": "a2@x", "ltv": 20, "uid": "a"}, "groups": []},
            "b": {"properties": b_props, "groups": []},
        }
    stored = await checkpoints(postgres, pg_schema, spec.name)
    assert stored[(f.records_topic, 0)] == 7 and stored[(f.records_topic, 1)] == 1


async def test_only_the_newest_of_several_pending_documents_is_sent(
    postgres: str, pg_schema: str
) -> None:
    async with receiving(Receiver()) as receiver:
        spec = destination(url=receiver.url)
        async with driving(spec, postgres, pg_schema) as d:
            f = d.feed
            receiver.gate.clear()  # the first request waits at the endpoint
            await d.apply(f.document(0, "x", doc("x", ["vip"], ltv=1)))
            async with asyncio.timeout(5):
                while not receiver.log:
                    await asyncio.sleep(0.01)
            await d.apply(
                f.document(0, "x", doc("x", ["vip"], ltv=2)),
                f.document(0, "y", doc("y", ["vip"], ltv=7)),
                f.document(0, "x", doc("x", ["vip"], ltv=3)),
                f.document(0, "x", doc("x", ["vip", "high-value"], ltv=4)),
            )
            receiver.gate.set()
            await d.settle()
    first, second = receiver.log
    assert [e["newProperties"]["ltv"] for e in first.elements] == [1]
    assert [(e["record"], e["newProperties"]["ltv"]) for e in second.elements] == [
        ("x", 4),
        ("y", 7),
    ], "x kept its place before y, with its newest document only"
    assert second.elements[0]["oldProperties"]["ltv"] == 1
    assert d.sink.stats.batch_sizes.count == 2


async def test_an_endpoint_answering_503_for_30_s_then_gets_everything(
    postgres: str, pg_schema: str
) -> None:
    """30 s of 503s, as the issue asks: retried with backoff (capped at 30 s, full jitter)
    until the endpoint answers again, then everything arrives, chained, signed."""
    loop = asyncio.get_running_loop()
    until = loop.time() + 30.0
    receiver = Receiver(answer=lambda elements: 503 if loop.time() < until else 200)
    async with receiving(receiver):
        spec = destination(url=receiver.url, max_batch="10")
        async with driving(spec, postgres, pg_schema) as d:
            f = d.feed
            for round_ in range(3):
                await d.apply(
                    *(
                        f.document(i % 2, f"r{i}", doc(f"r{i}", ["vip"], ltv=round_))
                        for i in range(20)
                    )
                )
                await asyncio.sleep(0.5)
            await d.settle(timeout=120)
            figures = {f.name: f.value for f in d.sink.figures()}
    assert loop.time() >= until
    assert receiver.state() == {
        f"r{i}": View({"ltv": 2, "uid": f"r{i}"}, ("VIP",)) for i in range(20)
    }
    assert_chained(receiver.exports())
    assert_same_bodies(receiver)
    assert all(verify(SECRET, r.headers, r.body) for r in receiver.log)
    assert figures["destination_retries_total"] > 0
    assert figures["destination_exports_delivered_total"] == len(receiver.exports())
    assert figures["destination_backlog"] == 0
    assert max(len(r.elements) for r in receiver.log) <= 10


async def test_enrich_skips_what_the_endpoint_does_not_have(postgres: str, pg_schema: str) -> None:
    receiver = Receiver(answer=lambda elements: 200 if elements[0]["record"] == "known" else 404)
    parked: list[tuple[bytes, dict[str, str]]] = []
    async with receiving(receiver):
        spec = destination("enrich", url=receiver.url)
        async with driving(spec, postgres, pg_schema, parked=parked) as d:
            f = d.feed
            await d.apply(
                f.document(0, "known", doc("known", ["vip"], ltv=1)),
                f.document(0, "unknown", doc("unknown", ["vip"], ltv=1)),
            )
            await d.settle()
            rows = await baselines(postgres, pg_schema, spec.name)
            await d.apply(f.document(0, "unknown", doc("unknown", ["vip"], ltv=2)))
            await d.settle()
    unknown = [r for r in receiver.log if r.elements[0]["record"] == "unknown"]
    assert [r.status for r in unknown] == [404, 404], "not retried"
    assert [r.elements[0]["oldProperties"] for r in unknown] == [{}, {}], "baseline unchanged"
    assert rows["known"] == {"properties": {"ltv": 1, "uid": "known"}, "groups": ["VIP"]}
    assert rows.get("unknown") is None
    assert parked == [] and d.sink.stats.skipped == 2 and d.sink.stats.retries == 0


async def test_rejected_requests_are_parked_and_segflow_dlq_replays_them(
    namespace: Namespace, postgres: str, pg_schema: str
) -> None:
    rejecting = True
    receiver = Receiver(
        answer=lambda elements: 400 if rejecting and elements[0]["record"] == "bad" else 200
    )
    async with receiving(receiver):
        spec = destination(url=receiver.url, max_attempts="2")
        catalog = replace(namespace.catalog, destinations={spec.name: spec})
        names = namespace.names
        await ensure_topics(namespace.bootstrap, pipeline_topics(catalog, names))
        producer = AIOKafkaProducer(bootstrap_servers=namespace.bootstrap)
        await producer.start()
        dead_letters = names.sink_dead_letter(materialization_name(spec.name))
        parked: list[tuple[bytes, dict[str, str]]] = []

        async def park(body: bytes, headers: dict[str, str]) -> None:
            parked.append((body, headers))
            encoded = [(k, v.encode()) for k, v in headers.items()]
            await producer.send_and_wait(dead_letters, body, headers=encoded)

        try:
            async with driving(spec, postgres, pg_schema, dead_letter=park) as d:
                f = d.feed
                await d.apply(
                    f.document(1, "bad", doc("bad", ["vip"], ltv=1)),
                    f.document(0, "good", doc("good", ["vip"], ltv=1)),
                )
                offsets = await d.settle()
        finally:
            await producer.stop()
        assert offsets[TopicPartition(f.records_topic, 1)] == 1, "the checkpoint passed it"
        assert [r.status for r in receiver.log if r.elements[0]["record"] == "bad"] == [400, 400]
        assert d.sink.stats.parked == 1 and d.sink.stats.exports == 1
        assert "bad" not in await baselines(postgres, pg_schema, spec.name)
        listed = await dlq.list_letters(
            namespace.bootstrap, catalog, names, materialization_name(spec.name)
        )
        assert len(listed) == 1
        assert listed[0]["headers"]["webhook-id"] == parked[0][1]["webhook-id"]
        assert listed[0]["payload"][0]["record"] == "bad"
        rejecting = False
        sent = await dlq.replay(
            namespace.bootstrap, catalog, names, materialization_name(spec.name)
        )
    assert sent == 1
    replayed = receiver.log[-1]
    assert replayed.status == 200 and replayed.body == parked[0][0]
    assert replayed.headers["webhook-id"] == parked[0][1]["webhook-id"]
    assert verify(SECRET, replayed.headers, replayed.body)


async def test_enriched_events_follow_their_records_export(postgres: str, pg_schema: str) -> None:
    async with receiving(Receiver()) as receiver:
        spec = destination(events=("purchase",), url=receiver.url)
        async with driving(spec, postgres, pg_schema, hold=0.5) as d:
            f = d.feed
            after = doc("a", ["high-value"], ltv=300)
            await d.apply(
                f.event(0, "a", "purchase", after),  # read before the record's document
                f.event(0, "a", "pageview", after),  # not a listed type
                f.event(1, "n", "purchase", doc("n", ["other"], ltv=1)),  # n is not in
                f.document(0, "a", after),
            )
            await d.settle()
            late = doc("z", ["vip"], ltv=5)
            await d.apply(f.event(1, "z", "purchase", late))  # its document never comes
            began = asyncio.get_running_loop().time()
            async with asyncio.timeout(5):
                while d.sink.stats.events < 2:
                    await d.sink.flush()  # as the materializer does, several times a second
                    await asyncio.sleep(0.05)
            waited = asyncio.get_running_loop().time() - began
            await d.settle()
    elements = receiver.acked
    assert [("event" in e, e["record"]) for e in elements] == [
        (False, "a"),
        (True, "a"),
        (True, "z"),
    ]
    export, event, lone = elements
    assert event["event"]["type"] == "purchase"
    assert (event["properties"], event["groups"]) == (export["newProperties"], export["newGroups"])
    assert lone["groups"] == ["VIP"] and waited >= 0.5, "after `hold`, sent whatever its state"
    assert d.sink.stats.events == 2


async def test_a_request_cut_short_is_sent_again_with_the_same_ids(
    postgres: str, pg_schema: str
) -> None:
    async with receiving(Receiver()) as receiver:
        spec = destination(url=receiver.url)
        feed = Feed()
        receiver.gate.clear()  # never answered: the sink stops with it in flight
        async with driving(spec, postgres, pg_schema, feed=feed) as d:
            await d.apply(
                feed.document(0, "x", doc("x", ["vip"], ltv=1)),
                feed.document(0, "y", doc("y", ["vip"], ltv=1)),
            )
            async with asyncio.timeout(5):
                while not receiver.log:
                    await asyncio.sleep(0.01)
        receiver.gate.set()
        async with driving(spec, postgres, pg_schema, feed=feed) as again:
            tp = TopicPartition(feed.records_topic, 0)
            assert (await again.sink.positions([tp]))[tp] == 2, "reads on after the outbox's"
            await again.settle()
            await again.apply(feed.document(0, "x", doc("x", ["vip", "high-value"], ltv=1)))
            await again.settle()
    first, resent, third = receiver.log
    assert resent.headers["webhook-id"] == first.headers["webhook-id"]
    assert resent.body == first.body and resent.status == 200
    assert third.elements[0]["oldGroups"] == ["VIP"], "the resent request's acknowledgement"
    assert_chained(receiver.exports())


# --- Tests: through `segflow worker`, SIGKILLed ----------------------------------------------


HOOKED = """
destinations:
  hooked:
    webhook: {url: "${HOOK_URL}", secret: "${HOOK_SECRET}", max_batch: 50}
    groups: {high-value: HV, frequent-visitors: FV, german-speakers: DE}
    properties: {email: email, ltv: ltv, purchases: purchases, uid: userId}
    mode: sync
    events: [purchase]
"""


def hooked_catalog(tmp_path: Path) -> Path:
    """The repository's catalog plus a destination of our own (its own demo one stays off)."""
    directory = tmp_path / "catalog"
    directory.mkdir()
    for file in (ROOT / "catalog").glob("*.yaml"):
        shutil.copy(file, directory / file.name)
    (directory / "zz-hooked.yaml").write_text(HOOKED)
    (tmp_path / "schemas").symlink_to(ROOT / "schemas")
    return directory


async def test_a_sigkilled_worker_loses_nothing_and_sends_no_export_twice(
    namespace: Namespace, tmp_path: Path, postgres: str, pg_schema: str
) -> None:
    # Answers take a while, so that each kill lands while a request is in flight.
    async with receiving(Receiver(delay=0.3)) as receiver:
        directory = hooked_catalog(tmp_path)
        env = {
            "SEGFLOW_CATALOG": str(directory),
            "SEGFLOW_POSTGRES": postgres,
            "SEGFLOW_POSTGRES_SCHEMA": pg_schema,
            "SEGFLOW_BATCH_MAX_RECORDS": "300",
            "HOOK_URL": receiver.url,
            "HOOK_SECRET": SECRET,
            "SEGFLOW_DESTINATION_URL": "",  # the catalog's demo destination stays off
        }
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HOOK_URL", receiver.url)
            patch.setenv("HOOK_SECRET", SECRET)
            catalog: Catalog = load_catalog(directory)
        spec = catalog.destinations["hooked"]
        await ensure_topics(namespace.bootstrap, pipeline_topics(catalog, namespace.names))
        events = product_events(3000, seed=23, people=400)
        log = tmp_path / "worker.log"
        worker = namespace.worker(log, **env)
        try:
            for i in range(0, len(events), 500):
                await namespace.produce("profile/events", events[i : i + 500])
                if i in (1000, 2000):
                    await _received_more(receiver, len(receiver.log))  # and not yet answered
                    worker.kill()
                    worker.wait(10)
                    worker = namespace.worker(log, **env)
            await settled(namespace)
            await _destination_caught_up(namespace, catalog, postgres, pg_schema)
        finally:
            stop(worker)
        assert worker.returncode == 0, log.read_text()[-3000:]
        records = await current_documents(
            namespace.bootstrap,
            namespace.names.collection(RECORDS),
            catalog.collections[RECORDS],
        )
        forwarded = await _forwarded(namespace, catalog, spec)
    expected = {r["id"]: v for r in records if (v := view_of(spec, r)) is not None}
    assert len(expected) > 50, "a fair share of records is in the destination"
    assert receiver.state() == expected, "every record's final state reached the receiver"
    assert_chained(receiver.exports())
    assert_same_bodies(receiver)
    sent = Counter(r.headers["webhook-id"] for r in receiver.log)
    assert max(sent.values()) > 1, "the request in flight at a kill was sent again, same id"
    assert all(verify(SECRET, r.headers, r.body) for r in receiver.log)
    delivered = {e["event"]["id"] for e in receiver.acked if "event" in e}
    assert delivered == forwarded and forwarded, "every forwarded purchase of a record in"


async def _forwarded(namespace: Namespace, catalog: Catalog, spec: DestinationSpec) -> set[str]:
    """The product event ids the records stage forwarded for records in the destination."""
    name = RECORDS + ".forwarded"
    topic = namespace.names.collection(name)
    starts = {TopicPartition(topic, p): 0 for p in range(catalog.collections[name].partitions)}
    found = set()
    async for batch in read_to_end(namespace.bootstrap, starts):
        for record in batch:
            note = orjson.loads(record.value)
            if enriched(spec, note["event"], note["document"]) is not None:
                found.add(note["event"]["id"])
    return found


async def _received_more(receiver: Receiver, than: int) -> None:
    async with asyncio.timeout(60):
        while len(receiver.log) <= than:
            await asyncio.sleep(0.05)


async def _destination_caught_up(
    namespace: Namespace, catalog: Catalog, postgres: str, schema: str, timeout: float = 60
) -> None:
    """Until the destination's checkpoints reach the ends of the records and forwarded topics."""
    ends: dict[TopicPartition, int] = {}
    for name in (RECORDS, RECORDS + ".forwarded"):
        topic = namespace.names.collection(name)
        ends.update(
            await topic_ends(namespace.bootstrap, topic, catalog.collections[name].partitions)
        )
    async with asyncio.timeout(timeout):
        while True:
            done = await checkpoints(postgres, schema, "hooked")
            if all(done.get((tp.topic, tp.partition), 0) >= end for tp, end in ends.items()):
                return
            await asyncio.sleep(0.2)
