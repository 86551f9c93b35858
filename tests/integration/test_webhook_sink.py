"""The webhook sink against real aiohttp servers on 127.0.0.1: order, retries, parking, batching."""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka import TopicPartition

from materializations.receiver import STATS, make_app
from materializations.webhook import WebhookSink, verify
from pipeline.catalog import BindingSpec, MaterializationSpec
from tests.fixtures.records import Record

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"segflow webhook test secret").decode()
TOPIC = "test.segment.toggles"
BINDING = BindingSpec("segment/toggles", None)


# --- Records ---------------------------------------------------------------------------------


@dataclass
class Feed:
    """Toggle records per partition with consecutive offsets; user 'usr-<partition>-<offset>'."""

    offsets: Counter[int] = field(default_factory=Counter)

    def records(self, partition: int, n: int, **extra: Any) -> list[Record]:
        out = []
        for _ in range(n):
            offset = self.offsets[partition]
            self.offsets[partition] += 1
            user = f"usr-{partition}-{offset}"
            segment = {"vendor": 3, "name": f"seg-{offset % 4}"}
            doc: dict[str, Any] = {
                "event": str(uuid.uuid4()),
                "timestamp": "2024-05-01T12:00:00Z",
                "user": user,
                "segment": segment,
                "previous": {"event": str(uuid.uuid4()), "user": user, "segment": segment},
                **extra,
            }
            if offset % 2:
                doc["remove"] = True
            out.append(Record(TOPIC, partition, offset, user.encode(), orjson.dumps(doc)))
        return out


def partition_of(doc: dict[str, Any]) -> int:
    return int(doc["user"].split("-")[1])


def offset_of(doc: dict[str, Any]) -> int:
    return int(doc["user"].split("-")[2])


# --- Endpoints -------------------------------------------------------------------------------


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes
    docs: list[dict[str, Any]]
    at: float
    ok: bool = False


Respond = Callable[["Endpoint", Request], web.Response]


@dataclass
class Endpoint:
    """A scripted endpoint: records every request, counts requests in flight per partition."""

    respond: Respond | None = None
    delay: float = 0.0
    requests: list[Request] = field(default_factory=list)
    in_flight: Counter[int] = field(default_factory=Counter)
    max_in_flight: int = 0
    max_in_flight_total: int = 0
    moved_hits: int = 0

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """Toggles of requests answered 2xx, in arrival order."""
        return [doc for r in self.requests if r.ok for doc in r.docs]

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/moved":
            self.moved_hits += 1
            return web.Response(text="you should not be here")
        body = await request.read()
        docs = orjson.loads(body)
        seen = Request(dict(request.headers), body, docs, time.monotonic())
        self.requests.append(seen)
        partition = partition_of(docs[0])
        self.in_flight[partition] += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight[partition])
        self.max_in_flight_total = max(self.max_in_flight_total, sum(self.in_flight.values()))
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            response = self.respond(self, seen) if self.respond else web.Response()
        finally:
            self.in_flight[partition] -= 1
        seen.ok = 200 <= response.status < 300
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("POST", "/{path:.*}", self.handle)
        return app


@asynccontextmanager
async def serving(app: web.Application, port: int = 0) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        host, bound = runner.addresses[0][:2]
        yield f"http://{host}:{bound}/hooks"
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


Parked = list[tuple[bytes, dict[str, str]]]


@asynccontextmanager
async def webhook_sink(
    url: str,
    parked: Parked | None = None,
    dead_letter: Callable[[bytes, dict[str, str]], Awaitable[None]] | None = None,
    **config: str,
) -> AsyncIterator[WebhookSink]:
    async def park(body: bytes, headers: dict[str, str]) -> None:
        assert parked is not None, "nothing should be parked"
        parked.append((body, headers))

    spec = MaterializationSpec(
        "hooks", "webhook", {"url": url, "secret": SECRET, **config}, (BINDING,), True
    )
    sink = WebhookSink(
        spec,
        {TOPIC: BINDING},
        dead_letter=dead_letter or park,
        backoff_base=0.01,
        backoff_cap=0.1,
    )
    async with sink:
        yield sink


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


def tp(partition: int) -> TopicPartition:
    return TopicPartition(TOPIC, partition)


def assert_signed(request: Request) -> None:
    assert verify(SECRET, request.headers, request.body), request.headers


# --- Tests -----------------------------------------------------------------------------------


async def test_delivered_in_order_signed_and_committed_only_after_delivery() -> None:
    out = io.StringIO()
    app = make_app(SECRET, delay_ms=20, out=out)
    feed = Feed()
    partitions, per_partition, chunk = (0, 1, 2), 300, 10

    def received(partition: int) -> list[int]:
        prefix = f"toggle usr-{partition}-"
        lines = out.getvalue().splitlines()
        return [int(line.removeprefix(prefix).split()[0]) for line in lines if prefix in line]

    async with serving(app) as url, webhook_sink(url) as sink:
        committed: dict[TopicPartition, int] = {}
        for step in range(per_partition // chunk):
            for p in partitions:
                await sink.apply(BINDING, feed.records(p, chunk))
            if step == 0:
                assert await sink.flush() == {}, "nothing is delivered yet"
            committed.update(await sink.flush())
            for p in partitions:
                assert committed.get(tp(p), 0) <= len(received(p))
            await asyncio.sleep(0.005)
        assert sink.backlog > 0
        assert await sink.drain(10.0)
        committed.update(await sink.flush())

    assert committed == {tp(p): per_partition for p in partitions}
    for p in partitions:
        assert received(p) == list(range(per_partition))
    stats = app[STATS]
    assert (stats.rejected, stats.duplicates, stats.toggles) == (0, 0, 900)
    assert (sink.stats.retries, sink.stats.parked, sink.stats.delivered) == (0, 0, 900)
    assert sink.stats.requests == stats.requests == sink.stats.batches
    assert "toggle usr-0-1 left 3/seg-1 (event " in out.getvalue()


async def test_retries_keep_the_batch_its_id_and_its_order() -> None:
    def respond(endpoint: Endpoint, request: Request) -> web.Response:
        n = len(endpoint.requests)
        if n <= 3:
            return web.Response(status=503, text="busy")
        if n == 4:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response()

    endpoint = Endpoint(respond)
    feed = Feed()
    async with serving(endpoint.app()) as url, webhook_sink(url) as sink:
        await sink.apply(BINDING, feed.records(0, 50))
        await until(lambda: len(endpoint.requests) >= 1)
        await sink.apply(BINDING, feed.records(0, 50))
        assert await sink.drain(10.0)
        assert await sink.flush() == {tp(0): 100}

    first, second = endpoint.requests[:5], endpoint.requests[5:]
    assert len(second) == 1
    assert {r.headers["webhook-id"] for r in first} == {first[0].headers["webhook-id"]}
    assert second[0].headers["webhook-id"] != first[0].headers["webhook-id"]
    assert {r.body for r in first} == {first[0].body}
    for request in endpoint.requests:
        assert_signed(request)
        assert request.headers["Content-Type"] == "application/json"
    # The attempt after the 429 waited for Retry-After, so it carries a later timestamp.
    stamps = [int(r.headers["webhook-timestamp"]) for r in first]
    assert stamps == sorted(stamps) and stamps[4] > stamps[3]
    assert first[4].at - first[3].at >= 0.95
    assert first[4].headers["webhook-signature"] != first[3].headers["webhook-signature"]
    assert [offset_of(d) for d in endpoint.delivered] == list(range(100))
    assert (sink.stats.requests, sink.stats.retries) == (6, 4)


async def test_an_unreachable_endpoint_is_waited_for() -> None:
    port = free_port()
    endpoint = Endpoint()
    feed = Feed()
    async with webhook_sink(f"http://127.0.0.1:{port}/hooks") as sink:
        for p in (0, 1):
            await sink.apply(BINDING, feed.records(p, 60))
        # The outage itself: the endpoint comes up only after ~3 s.
        await asyncio.sleep(3.0)
        assert await sink.flush() == {}
        assert sink.backlog == 120
        assert sink.stats.retries >= 10
        async with serving(endpoint.app(), port):
            assert await sink.drain(10.0)
            assert await sink.flush() == {tp(0): 60, tp(1): 60}

    for p in (0, 1):
        delivered = [offset_of(d) for d in endpoint.delivered if partition_of(d) == p]
        assert delivered == list(range(60))


async def test_rejected_batches_are_parked_and_delivery_goes_on() -> None:
    def respond(endpoint: Endpoint, request: Request) -> web.Response:
        answer = request.docs[0].get("answer")
        if answer == 302:
            return web.Response(status=302, headers={"Location": "/moved"})
        if answer:
            return web.Response(status=answer, text=f"rejected with {answer}")
        return web.Response()

    parked: Parked = []
    failing_once = [OSError("dead-letter topic unavailable")]

    async def dead_letter(body: bytes, headers: dict[str, str]) -> None:
        if failing_once:
            raise failing_once.pop()
        parked.append((body, headers))

    endpoint = Endpoint(respond)
    feed = Feed()
    async with (
        serving(endpoint.app()) as url,
        webhook_sink(url, dead_letter=dead_letter, max_attempts="3") as sink,
    ):
        for batch in (
            feed.records(0, 4, answer=400),
            feed.records(0, 5),
            feed.records(0, 2, answer=410),
            feed.records(0, 1, answer=302),
            feed.records(0, 3),
        ):
            await sink.apply(BINDING, batch)
            assert await sink.drain(10.0)
        assert await sink.flush() == {tp(0): 15}

    assert [h["status"] for _, h in parked] == ["400", "410", "302"]
    assert [h["attempts"] for _, h in parked] == ["3", "1", "3"]
    assert [(h["first-offset"], h["last-offset"]) for _, h in parked] == [
        ("0", "3"),
        ("9", "10"),
        ("11", "11"),
    ]
    body, headers = parked[0]
    assert headers["response"] == "rejected with 400"
    assert headers["url"] == url
    assert (headers["topic"], headers["partition"]) == (TOPIC, "0")
    assert [offset_of(d) for d in orjson.loads(body)] == [0, 1, 2, 3]
    rejected = [r for r in endpoint.requests if r.docs[0].get("answer") == 400]
    assert len(rejected) == 3
    assert {r.headers["webhook-id"] for r in rejected} == {headers["webhook-id"]}
    assert endpoint.moved_hits == 0, "redirects are not followed"
    assert [offset_of(d) for d in endpoint.delivered] == [4, 5, 6, 7, 8, 12, 13, 14]
    assert (sink.stats.parked, sink.stats.parked_toggles) == (3, 7)


async def feed_steadily(sink: WebhookSink, feed: Feed, steps: int = 200, chunk: int = 5) -> None:
    """2 partitions x steps x chunk toggles, one small apply() per partition every 10 ms."""
    for _ in range(steps):
        for p in (0, 1):
            await sink.apply(BINDING, feed.records(p, chunk))
        await asyncio.sleep(0.01)


async def test_one_request_in_flight_per_partition_and_slow_endpoints_get_bigger_batches() -> None:
    means: dict[float, float] = {}
    for delay in (0.0, 0.2):
        endpoint = Endpoint(delay=delay)
        feed = Feed()
        async with serving(endpoint.app()) as url, webhook_sink(url) as sink:
            await feed_steadily(sink, feed)
            assert await sink.drain(10.0)
            assert await sink.flush() == {tp(0): 1000, tp(1): 1000}
        assert endpoint.max_in_flight == 1
        assert endpoint.max_in_flight_total <= 2
        for p in (0, 1):
            delivered = [offset_of(d) for d in endpoint.delivered if partition_of(d) == p]
            assert delivered == list(range(1000))
        sizes = [len(r.docs) for r in endpoint.requests]
        means[delay] = sum(sizes) / len(sizes)
        assert means[delay] == pytest.approx(sink.stats.mean_batch_size)
        print(f"delay {delay * 1000:.0f} ms: {len(sizes)} requests, mean batch {means[delay]:.1f}")
    assert means[0.2] > 5 * means[0.0]


async def test_batches_respect_max_batch() -> None:
    endpoint = Endpoint()
    async with serving(endpoint.app()) as url, webhook_sink(url, max_batch="7") as sink:
        await sink.apply(BINDING, Feed().records(0, 30))
        assert await sink.drain(10.0)
    assert [len(r.docs) for r in endpoint.requests] == [7, 7, 7, 7, 2]
    assert [offset_of(d) for d in endpoint.delivered] == list(range(30))
