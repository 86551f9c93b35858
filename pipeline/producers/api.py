"""`segflow api`: the HTTP ingestion API (SPEC §6).

`POST /ingest/{collection}` takes one JSON document or an array of them with
`Authorization: Bearer <api key>`. Checks run in this order, and the first that fails answers:

1. 401 - no key, a malformed, unknown or revoked one (`WWW-Authenticate: Bearer`).
2. 404 - no such collection. (After authentication, so only key holders learn collection names.)
3. 403 - a derived collection (the pipeline writes those), or the key is not scoped to it.
4. 413 - a body over `max_bytes` (Content-Length, then counted while reading) or more than
   `max_documents` documents.
5. 400 - not JSON, not an object or an array of objects, or any invalid document: every problem
   of every document as `{"errors": [{"index", "path", "message"}]}`, and nothing written.
6. 200 - `{"accepted": n}` once the broker acknowledged every document; 503 when it did not (some
   may have been written: retrying is safe, since a re-sent event id is a redelivery).

Product events (the catalog's `profiles.events` collection, SPEC 8.1) without `occurredAt` get
the receiving time (RFC 3339 UTC with milliseconds, `2026-12-02T14:00:00.123Z`), set once the
whole request passed validation, so the documents written carry it.

`POST /groups/{name}/members` adds people to a manual group (SPEC 8.4) and takes them out, one
`profile/group-members` document per person (the catalog's `profiles.groupMembers`):

    {"add": [{"userId": "u1"}, {"anonymousId": "d1"}], "remove": [{"userId": 42}]}

Either list may be left out, not both. An item names a person as product events do (`userId`,
`anonymousId` or both) and may carry the document's `id` (a UUID, to retry with the same ids)
and `occurredAt`; each document gets a new id and the receiving time otherwise. The checks run
in the order above: 401; 404 for a group that is unknown or calculated (the answer names the
manual groups); 403 for a key not scoped to `profile/group-members`; 413 for more than
`max_documents` items; 400 for a body of another shape (`{"error"}`) or invalid items, each
problem as `{"list": "add", "index", "path", "message"}` (the item's list, its index there, a
JSON pointer into the item) and nothing written; 200 `{"accepted": n}`; 503.

Hostile input is answered with a 4xx; a last-resort middleware gives the router's own 404 and
405 (no such route, another method) the same `{"error"}` form, and turns anything unexpected into
a logged 500 and counts it (`app[UNEXPECTED]`), which the fuzz tests require to stay zero.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline.catalog import Catalog, load_catalog
from pipeline.documents.validation import Validator
from pipeline.errors import SegflowError
from pipeline.producers import members
from pipeline.producers.keys import KeyInfo, KeyStore, KeyStoreUnavailable, bearer_token
from pipeline.runtime.produce import CollectionWriter, make_producer
from pipeline.runtime.settings import Settings
from pipeline.runtime.topics import Names, ensure_topics, pipeline_topics

log = logging.getLogger(__name__)

MAX_DOCUMENTS = 1000
MAX_BYTES = 1 << 20
MAX_MESSAGE = 300
"""Longest problem message returned: jsonschema quotes the offending value, which may be huge."""
SEND_TIMEOUT = 30.0

UNEXPECTED = web.AppKey("unexpected", list[BaseException])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json(status, {"error": message}, headers)


def _unauthorized(message: str, *, invalid: bool = True) -> web.Response:
    # RFC 6750 §3: no error code when the request carried no credentials at all.
    challenge = 'Bearer realm="segflow"' + (', error="invalid_token"' if invalid else "")
    return _error(401, message, {"WWW-Authenticate": challenge})


class _Ingest:
    """The state `POST /ingest/{collection}` works with."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        keys: KeyStore,
        producer: AIOKafkaProducer,
        max_documents: int,
        max_bytes: int,
    ) -> None:
        self.catalog = catalog
        self.keys = keys
        self.producer = producer
        self.names = Names(settings.topic_prefix)
        self.max_documents = max_documents
        self.max_bytes = max_bytes
        self.validators = {
            name: Validator(catalog.collections[name].schema) for name in catalog.captured()
        }
        self.writers: dict[tuple[str, str], CollectionWriter] = {}
        self.product_events = catalog.profiles.events if catalog.profiles is not None else None

    def writer(self, collection: str, producer_id: str) -> CollectionWriter:
        writer = self.writers.get((collection, producer_id))
        if writer is None:
            writer = CollectionWriter(
                self.catalog, collection, self.names, self.producer, producer_id
            )
            self.writers[(collection, producer_id)] = writer
        return writer

    async def authenticate(self, request: web.Request) -> KeyInfo | web.Response:
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            return _unauthorized(
                "expected an 'Authorization: Bearer <api key>' header", invalid=False
            )
        try:
            info = await self.keys.lookup(token)
        except KeyStoreUnavailable:
            log.exception("API key lookup failed")
            return _error(503, "cannot check API keys right now; retry later")
        if info is None:
            return _unauthorized("unknown or revoked API key")
        return info

    async def read_body(self, request: web.Request) -> bytes | web.Response:
        too_large = _error(413, f"request body larger than {self.max_bytes} bytes")
        length = request.content_length
        if length is not None and length > self.max_bytes:
            return too_large
        chunks: list[bytes] = []
        size = 0
        # Never unbounded: at most one byte past the limit is read.
        while chunk := await request.content.read(self.max_bytes + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_bytes:
                return too_large
        return b"".join(chunks)

    def problems(self, collection: str, doc: dict[str, Any]) -> list[tuple[str, str]]:
        """(path, message) of every reason `doc` is invalid in `collection`; empty if valid."""
        try:
            found = [(p.path, p.message) for p in self.validators[collection].problems(doc)]
        except RecursionError:  # jsonschema quotes values with repr(), recursively
            found = [("", "document is nested too deeply")]
        return [(path, _shorten(message)) for path, message in found]

    def too_many(self, count: int, what: str) -> web.Response | None:
        if count <= self.max_documents:
            return None
        return _error(413, f"{count} {what}; at most {self.max_documents} per request")

    def check(self, collection: str, body: bytes) -> list[Any] | web.Response:
        """The documents of a body, or the 400/413 answer to it."""
        parsed = _parse(body)
        if isinstance(parsed, web.Response):
            return parsed
        docs = parsed if isinstance(parsed, list) else [parsed]
        if (refused := self.too_many(len(docs), "documents")) is not None:
            return refused
        errors: list[dict[str, Any]] = []
        for index, doc in enumerate(docs):
            if not isinstance(doc, dict):
                kind = "array" if isinstance(doc, list) else type(doc).__name__
                message = f"expected a JSON object (or an array of objects), got {kind}"
                errors.append({"index": index, "path": "", "message": message})
                continue
            errors.extend(
                {"index": index, "path": path, "message": message}
                for path, message in self.problems(collection, doc)
            )
        if errors:
            return _json(400, {"errors": errors})
        return docs

    async def write(self, collection: str, auth: KeyInfo, docs: list[Any]) -> web.Response:
        """Send valid documents: 200 once the broker acknowledged every one, else 503."""
        writer = self.writer(collection, auth.producer_id)
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await writer.send_all(docs)
        except (KafkaError, TimeoutError) as exc:
            log.warning("ingest into %s failed: %r", collection, exc)
            return _error(503, f"the broker did not accept the documents ({exc!r}); retry")
        except orjson.JSONEncodeError as exc:  # parsed, valid, yet not encodable: be safe
            return _error(400, f"a document cannot be encoded: {exc}")
        return _json(200, {"accepted": len(docs)})

    async def handle(self, request: web.Request) -> web.Response:
        auth = await self.authenticate(request)
        if isinstance(auth, web.Response):
            return auth
        collection = request.match_info["collection"]
        if collection in self.catalog.derivations:
            source = self.catalog.captured_source(collection)
            return _error(
                403, f"collection {collection!r} is derived from {source!r}; ingest into {source!r}"
            )
        if collection not in self.catalog.collections:
            return _error(404, f"no collection {collection!r}")
        if not auth.may_write(collection):
            return _error(403, f"API key {auth.name!r} may not write {collection!r}")
        body = await self.read_body(request)
        if isinstance(body, web.Response):
            return body
        docs = self.check(collection, body)
        if isinstance(docs, web.Response):
            return docs
        if collection == self.product_events:
            _fill_occurred_at(docs, received_at())
        return await self.write(collection, auth, docs)

    async def handle_members(self, request: web.Request) -> web.Response:
        """`POST /groups/{name}/members` (module docstring)."""
        auth = await self.authenticate(request)
        if isinstance(auth, web.Response):
            return auth
        group = request.match_info["name"]
        refused = members.refusal(self.catalog, group)
        if refused is not None:
            return _error(404, refused)
        collection = members.members_collection(self.catalog)
        assert collection is not None  # refusal() says so otherwise
        if not auth.may_write(collection):
            return _error(403, f"API key {auth.name!r} may not write {collection!r}")
        body = await self.read_body(request)
        if isinstance(body, web.Response):
            return body
        parsed = _parse(body)
        if isinstance(parsed, web.Response):
            return parsed
        items = members.items_of(parsed)
        if isinstance(items, str):
            return _error(400, items)
        if (too_many := self.too_many(len(items), "people")) is not None:
            return too_many
        now = received_at()
        docs: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item in items:
            problems = members.item_problems(item.person)
            if not problems:
                doc = members.membership(group, item.person, remove=item.list == "remove", now=now)
                docs.append(doc)
                problems = self.problems(collection, doc)
            errors.extend(
                {"list": item.list, "index": item.index, "path": path, "message": message}
                for path, message in problems
            )
        if errors:
            return _json(400, {"errors": errors})
        return await self.write(collection, auth, docs)


def _parse(body: bytes) -> Any:
    """The JSON of a request body, or the 400 answer to it."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _error(400, f"request body is not JSON: {exc}")


def received_at() -> str:
    """Now as RFC 3339 UTC with milliseconds: `2026-12-02T14:00:00.123Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fill_occurred_at(docs: list[Any], now: str) -> None:
    # After validation: every document is an object, and one that has `occurredAt` keeps it.
    for doc in docs:
        doc.setdefault("occurredAt", now)


def _shorten(message: str) -> str:
    if len(message) <= MAX_MESSAGE:
        return message
    return message[: MAX_MESSAGE - 3] + "..."


@web.middleware
async def _last_resort(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # The router's own answers (no such route, another method) in the API's JSON form.
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _error(exc.status, f"{exc.reason}: {request.method} {request.path}", allow)
    except Exception as exc:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        request.app[UNEXPECTED].append(exc)
        return _error(500, "internal error")


async def _health(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


def make_app(
    settings: Settings,
    catalog: Catalog,
    keys: KeyStore,
    producer: AIOKafkaProducer,
    *,
    max_documents: int = MAX_DOCUMENTS,
    max_bytes: int = MAX_BYTES,
) -> web.Application:
    """The API over a started producer and key store (both owned by the caller)."""
    ingest = _Ingest(settings, catalog, keys, producer, max_documents, max_bytes)
    app = web.Application(middlewares=[_last_resort], client_max_size=max_bytes)
    app[UNEXPECTED] = []
    app.router.add_post("/ingest/{collection:.+}", ingest.handle)
    app.router.add_post("/groups/{name:.+}/members", ingest.handle_members)
    app.router.add_get("/health", _health)
    return app


async def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    max_documents: int = MAX_DOCUMENTS,
    max_bytes: int = MAX_BYTES,
) -> None:
    """Run the API until cancelled."""
    if not settings.broker:
        raise SegflowError("SEGFLOW_BROKER is not set: which broker should I write to?")
    if not settings.postgres:
        raise SegflowError("SEGFLOW_POSTGRES is not set: which Postgres holds the API keys?")
    catalog = load_catalog(settings.catalog)
    await ensure_topics(settings.broker, pipeline_topics(catalog, Names(settings.topic_prefix)))
    keys = KeyStore(settings.postgres, settings.postgres_schema)
    await keys.open()
    producer = make_producer(settings.broker, settings.linger_ms)
    await producer.start()
    runner: web.AppRunner | None = None
    try:
        app = make_app(
            settings, catalog, keys, producer, max_documents=max_documents, max_bytes=max_bytes
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.info("ingestion API on http://%s:%d/ingest/{collection}", host, port)
        await asyncio.Event().wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await producer.stop()
        await keys.close()


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        await serve(
            settings,
            args.host,
            args.port,
            max_documents=args.max_documents,
            max_bytes=args.max_bytes,
        )

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        log.info("ingestion API stopped")
    return 0


def add_api_parser(subparsers: Any) -> None:
    """`segflow api [--host H] [--port P] [--max-documents N] [--max-bytes N]`."""
    api = subparsers.add_parser("api", help="the HTTP ingestion API (SEGFLOW_BROKER, _POSTGRES)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8080)
    api.add_argument(
        "--max-documents", type=int, default=MAX_DOCUMENTS, help="documents per request"
    )
    api.add_argument("--max-bytes", type=int, default=MAX_BYTES, help="bytes per request body")
    api.set_defaults(func=cmd_api)
