"""The Python client (`pipeline.producers.client`, SPEC 8.6) against the real ingestion API
(`serve`, on a real port) and the embedded broker: delivery exactly once with the client's ids,
batching by size and by interval, flush/close and the context manager, the API's messages raised,
retries with the same ids through a small real proxy that answers 503, and an API not up yet."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import orjson
import pytest
from aiohttp import ClientSession, web
from aiokafka import ConsumerRecord, TopicPartition

from pipeline.producers.api import serve
from pipeline.producers.client import Client, ClientError
from pipeline.producers.keys import create_key
from pipeline.runtime.settings import Settings
from pipeline.runtime.topics import read_to_end
from pipeline.tools.embedded import free_port
from tests.fixtures.stack import Namespace, topic_ends

pytestmark = pytest.mark.integration

EVENTS = "profile/events"
T = TypeVar("T")


class Background:
    """An event loop in a thread of its own: the servers keep answering while a test blocks in
    `Client.flush()`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@dataclass
class Proxy:
    """A real HTTP server in front of the API: records every request's event ids; answers 503
    without forwarding to the first `refuse` requests, and forwards the next `lose_ack` ones but
    answers 503 anyway (an acknowledgement lost on the way back)."""

    target: str
    refuse: int = 0
    lose_ack: int = 0
    requests: list[list[str]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    session: ClientSession | None = None
    url: str = ""

    async def start(self) -> None:
        self.session = ClientSession()
        app = web.Application(client_max_size=4 << 20)
        app.router.add_post("/{path:.+}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self.runner is not None and self.session is not None
        await self.runner.cleanup()
        await self.session.close()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            self.requests.append([doc["id"] for doc in orjson.loads(body)])
        except (orjson.JSONDecodeError, TypeError, KeyError):
            self.requests.append([])
        if len(self.requests) <= self.refuse:
            return web.json_response({"error": "not now"}, status=503)
        assert self.session is not None
        headers = {k: request.headers[k] for k in ("Authorization", "Content-Type")}
        # A BytesIO: aiohttp warns (an error here) when sending large raw bytes.
        async with self.session.post(
            self.target + request.path, data=io.BytesIO(body), headers=headers
        ) as answer:
            status, text = answer.status, await answer.read()
        if len(self.requests) <= self.refuse + self.lose_ack:
            return web.json_response({"error": "acknowledgement lost"}, status=503)
        return web.Response(status=status, body=text, content_type="application/json")

    def sizes(self) -> list[int]:
        return [len(ids) for ids in self.requests]


class Api:
    """`serve()` itself, on a real port, in the background loop."""

    def __init__(self, bg: Background, settings: Settings, port: int) -> None:
        self.bg, self.settings, self.port = bg, settings, port
        self.url = f"http://127.0.0.1:{port}"
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.bg.run(self._start())

    async def _start(self) -> None:
        self.task = asyncio.create_task(serve(self.settings, "127.0.0.1", self.port))
        deadline = time.monotonic() + 30
        async with ClientSession() as session:
            while True:
                try:
                    async with session.get(f"{self.url}/health") as response:
                        if response.status == 200:
                            return
                except OSError:
                    pass
                if self.task.done():
                    self.task.result()  # raises what stopped it
                assert time.monotonic() < deadline, "the API did not come up"
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.task is not None:
            self.bg.run(self._stop())

    async def _stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with suppress(asyncio.CancelledError):
            await self.task


@dataclass
class Stack:
    ns: Namespace
    bg: Background
    api: Api
    key: str
    proxies: list[Proxy] = field(default_factory=list)

    def proxy(self, **behaviour: int) -> Proxy:
        proxy = Proxy(self.api.url, **behaviour)
        self.bg.run(proxy.start())
        self.proxies.append(proxy)
        return proxy

    async def ends(self) -> dict[TopicPartition, int]:
        partitions = self.ns.catalog.collections[EVENTS].partitions
        return await topic_ends(self.ns.bootstrap, self.ns.names.collection(EVENTS), partitions)

    async def records_since(self, before: dict[TopicPartition, int]) -> list[ConsumerRecord]:
        written: list[ConsumerRecord] = []
        async for records in read_to_end(self.ns.bootstrap, before):
            written.extend(records)
        return written

    async def docs_since(self, before: dict[TopicPartition, int]) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in await self.records_since(before)]


@pytest.fixture
def background() -> Iterator[Background]:
    bg = Background()
    yield bg
    bg.close()


@pytest.fixture
async def stack(
    namespace: Namespace, postgres: str, pg_schema: str, background: Background
) -> AsyncIterator[Stack]:
    settings = namespace.settings(postgres=postgres, postgres_schema=pg_schema)
    key = await create_key(postgres, pg_schema, "app", [EVENTS])
    api = Api(background, settings, free_port())
    stack = Stack(namespace, background, api, key)
    try:
        yield stack
    finally:
        for proxy in stack.proxies:
            background.run(proxy.stop())
        api.stop()


@pytest.fixture
def running(stack: Stack) -> Stack:
    stack.api.start()
    return stack


async def wait_for(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


# --- delivery ----------------------------------------------------------------------------------


async def test_tracked_events_arrive_exactly_once_with_their_ids(running: Stack) -> None:
    before = await running.ends()
    paris = timezone(timedelta(hours=2))
    started = datetime.now(UTC)
    with Client(running.api.url, running.key, interval=0.05) as client:
        ids = {
            client.track("pageview", anonymous_id="abc123", data={"path": "/"}): {
                "type": "pageview",
                "anonymousId": "abc123",
                "data": {"path": "/"},
            },
            client.track(
                "signin",
                user_id=100,
                anonymous_id="abc123",
                occurred_at=datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=paris),
            ): {
                "type": "signin",
                "userId": 100,
                "anonymousId": "abc123",
                "occurredAt": "2026-01-02T01:04:05.678Z",
            },
            client.track("purchase", user_id="u-7", occurred_at="2024-05-01T10:00:00+02:00"): {
                "type": "purchase",
                "userId": "u-7",
                "occurredAt": "2024-05-01T10:00:00+02:00",
            },
        }
        more = [client.track("pageview", user_id=f"u-{i % 5}") for i in range(40)]
        client.flush()
        finished = datetime.now(UTC)

    docs = await running.docs_since(before)
    assert sorted(d["id"] for d in docs) == sorted([*ids, *more])  # each exactly once
    by_id = {d["id"]: d for d in docs}
    for event_id, expected in ids.items():
        doc = by_id[event_id]
        assert {k: v for k, v in doc.items() if k not in ("id", "occurredAt")} == {
            k: v for k, v in expected.items() if k != "occurredAt"
        }
        if "occurredAt" in expected:
            assert doc["occurredAt"] == expected["occurredAt"]
    # Without occurred_at: the client's clock when tracked, in RFC 3339 UTC with milliseconds.
    for event_id in [next(iter(ids)), *more]:
        text = by_id[event_id]["occurredAt"]
        assert text.endswith("Z") and text[19] == "."
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert started - timedelta(milliseconds=1) <= at <= finished


async def test_batches_by_size_then_flush_sends_the_rest(running: Stack) -> None:
    proxy = running.proxy()
    before = await running.ends()
    client = Client(proxy.url, running.key, batch_size=10, interval=3600)
    try:
        ids = [client.track("pageview", user_id=f"u-{i}") for i in range(25)]
        await wait_for(lambda: len(proxy.requests) >= 2, "two full batches")
        assert proxy.sizes() == [10, 10]  # the last 5 wait: the interval is an hour
        client.flush()
        assert proxy.requests == [ids[:10], ids[10:20], ids[20:]]
    finally:
        client.close()
    assert sorted(d["id"] for d in await running.docs_since(before)) == sorted(ids)


async def test_batches_by_interval(running: Stack) -> None:
    proxy = running.proxy()
    before = await running.ends()
    with Client(proxy.url, running.key, batch_size=100, interval=0.3) as client:
        first = time.monotonic()
        ids = [client.track("pageview", user_id="u-1") for _ in range(3)]
        await wait_for(lambda: proxy.requests, "the interval's batch")
        waited = time.monotonic() - first
        assert proxy.requests == [ids]
        assert waited >= 0.3
        later = client.track("pageview", user_id="u-1")
        await wait_for(lambda: len(proxy.requests) == 2, "the second interval's batch")
        assert proxy.requests[1] == [later]
    assert sorted(d["id"] for d in await running.docs_since(before)) == sorted([*ids, later])


async def test_close_flushes_and_stops_and_the_context_manager_closes(running: Stack) -> None:
    before = await running.ends()
    client = Client(running.api.url, running.key, interval=3600)
    ids = [client.track("pageview", user_id="u-1") for _ in range(5)]
    client.close()
    client.close()  # idempotent
    with pytest.raises(ClientError, match="closed"):
        client.track("pageview", user_id="u-1")
    assert sorted(d["id"] for d in await running.docs_since(before)) == sorted(ids)

    before = await running.ends()
    with Client(running.api.url, running.key, interval=3600) as managed:
        more = [managed.track("pageview", user_id="u-2") for _ in range(3)]
    with pytest.raises(ClientError, match="closed"):
        managed.track("pageview", user_id="u-2")
    assert sorted(d["id"] for d in await running.docs_since(before)) == sorted(more)
    assert not any(t.name == "segflow-client" for t in threading.enumerate())


# --- errors ------------------------------------------------------------------------------------


async def test_an_invalid_event_raises_the_apis_message_and_the_others_arrive(
    running: Stack,
) -> None:
    before = await running.ends()
    client = Client(running.api.url, running.key, interval=3600)
    try:
        good = client.track("pageview", user_id="u-1")
        bad = client.track("pageview", user_id="anon:x")
        nobody = client.track("pageview")
        also_good = client.track("pageview", anonymous_id="d-1")
        with pytest.raises(ClientError) as raised:
            client.flush()
        error = raised.value
        assert error.status == 400
        assert set(error.event_ids) == {bad, nobody}
        assert {(r.event_id, r.path) for r in error.rejected} == {(bad, "/userId"), (nobody, "")}
        text = str(error)
        assert f"event {bad}: /userId: must be a string of 1 to 200 characters" in text
        assert f"event {nobody}: /: needs a userId, an anonymousId or both" in text
        client.flush()  # raised once
    finally:
        client.close()
    assert sorted(d["id"] for d in await running.docs_since(before)) == sorted([good, also_good])


async def test_a_rejected_event_raises_from_the_next_track(running: Stack) -> None:
    proxy = running.proxy()
    client = Client(proxy.url, running.key, interval=0.01)
    try:
        bad = client.track("", user_id="u-1")
        await wait_for(lambda: client._errors, "the API's answer")
        with pytest.raises(ClientError, match="/type: must be 1 to 100 characters") as raised:
            client.track("pageview", user_id="u-1")
        assert raised.value.event_ids == (bad,)
        assert len(proxy.requests) == 1  # the event of the raising call was not queued
    finally:
        client.close()


async def test_401_403_404_and_413_raise_with_the_apis_message(running: Stack) -> None:
    url = running.api.url
    cases = [
        (Client(url, "sfk_" + "0" * 43), 401, "unknown or revoked API key"),
        (Client(url, running.key, collection="segment/events"), 403, "may not write"),
        (Client(url, running.key, collection="profile/nope"), 404, "no collection"),
    ]
    for client, status, message in cases:
        try:
            event_id = client.track("pageview", user_id="u-1")
            with pytest.raises(ClientError, match=message) as raised:
                client.flush()
            assert (raised.value.status, raised.value.event_ids) == (status, (event_id,))
            assert str(status) in str(raised.value)
        finally:
            client.close()

    # Over the API's 1 MiB: two events of ~900 KB are split into two requests; one of ~1.1 MB
    # is refused with the API's message.
    proxy = running.proxy()
    before = await running.ends()
    fits = {f"k{i}": "x" * 9000 for i in range(100)}
    with Client(proxy.url, running.key, interval=3600) as client:
        halves = [client.track("note", user_id="u-1", data=fits) for _ in range(2)]
        client.flush()
        assert proxy.requests == [halves, halves[:1], halves[1:]]
        too_big = client.track("note", user_id="u-1", data={**fits, "more": "x" * 200_000})
        with pytest.raises(ClientError, match="413: request body larger than 1048576 bytes"):
            client.flush()
    assert sorted(d["id"] for d in await running.docs_since(before)) == sorted(halves)
    assert proxy.requests[3:] == [[too_big]]


async def test_delivery_that_outlasts_the_retries_raises_a_retriable_error(stack: Stack) -> None:
    with Client(f"http://127.0.0.1:{free_port()}", stack.key, retries=2, interval=0.01) as client:
        event_id = client.track("pageview", user_id="u-1")
        with pytest.raises(ClientError, match="not delivered after 2 retries") as raised:
            client.flush()
        assert raised.value.retriable and raised.value.event_ids == (event_id,)
        assert raised.value.status is None


# --- retries -----------------------------------------------------------------------------------


async def test_503s_are_retried_with_the_same_ids(running: Stack) -> None:
    proxy = running.proxy(refuse=2)
    before = await running.ends()
    with Client(proxy.url, running.key, interval=0.01) as client:
        ids = [client.track("pageview", user_id=f"u-{i}") for i in range(5)]
        client.flush()
    assert proxy.requests == [ids, ids, ids]
    assert sorted(d["id"] for d in await running.docs_since(before)) == sorted(ids)


async def test_a_lost_acknowledgement_resends_the_same_documents(running: Stack) -> None:
    proxy = running.proxy(lose_ack=1)
    before = await running.ends()
    with Client(proxy.url, running.key, interval=0.01) as client:
        ids = [client.track("pageview", user_id=f"u-{i}") for i in range(5)]
        client.flush()
    assert proxy.requests == [ids, ids]
    records = await running.records_since(before)
    # Written twice, byte for byte the same documents (id and occurredAt included): the
    # pipeline's dedup by id drops the second copy.
    assert sorted(orjson.loads(r.value)["id"] for r in records) == sorted(ids * 2)
    by_id: dict[str, set[bytes]] = {}
    for r in records:
        by_id.setdefault(orjson.loads(r.value)["id"], set()).add(r.value)
    assert all(len(values) == 1 for values in by_id.values())


async def test_an_api_not_up_yet_is_retried_until_it_is(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.producers.client")
    before = await stack.ends()
    with Client(stack.api.url, stack.key, interval=0.01) as client:
        ids = [client.track("pageview", user_id=f"u-{i}") for i in range(5)]
        await wait_for(
            lambda: any("retrying" in r.getMessage() for r in caplog.records), "a refused send"
        )
        assert "Connection refused" in caplog.text or "ConnectionRefused" in caplog.text
        stack.api.start()
        client.flush()
    assert sorted(d["id"] for d in await stack.docs_since(before)) == sorted(ids)
