"""The console (SPEC 11): web pages served by a worker next to `/metrics`, under `/console/`.

Static files (`static/`, no build step) and a read-only JSON API under `/console/api/`:
`live` (the worker's counters over the last 15 minutes), `segments` (sizes from Postgres, over
the time someone has been looking), `lookup?id=` (a person or record), `dead-letters`.

Decisions where the spec is silent:
- Bound to loopback, the console is open; bound beyond it (the worker's default `:9400`, for
  Prometheus), its API asks for an ingestion API key (`segflow keys create`), any live key, as
  `Authorization: Bearer` or `?key=` on the page's address (the page passes it on). `/health`
  and `/metrics` stay open as before. Without Postgres there are no keys: the API refuses.
- The live charts are this worker's figures (with several workers, each shows its own
  partitions); sizes, records and dead letters are the whole pipeline's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from pipeline.catalog import Catalog
from pipeline.errors import SegflowError
from pipeline.producers.keys import KeyStore, KeyStoreUnavailable, bearer_token
from pipeline.runtime.metrics import Observed
from pipeline.runtime.settings import Settings
from pipeline.tools.console import queries
from pipeline.tools.console.history import Lazy, Window, sample

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
SAMPLE_EVERY_S = 2.0
SIZES_EVERY_S = 10.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


def console_app(
    worker: Observed, settings: Settings, catalog: Catalog, bootstrap: str, host: str
) -> web.Application:
    """The console's pages and API for `worker`, whose endpoint listens on `host`."""
    needs_key = host not in LOOPBACK
    keys = (
        KeyStore(settings.postgres, settings.postgres_schema, ttl=10.0)
        if (needs_key and settings.postgres)
        else None
    )
    live = Window(lambda: sample(worker), SAMPLE_EVERY_S)

    async def sizes() -> dict[str, Any]:
        return await queries.segment_sizes(settings, catalog)

    sized = Lazy(sizes, SIZES_EVERY_S)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if needs_key and request.path.startswith("/console/api/"):
            token = bearer_token(request.headers.get("Authorization")) or request.query.get("key")
            if keys is None:
                return _json(
                    {
                        "error": "set SEGFLOW_POSTGRES: beyond loopback the console"
                        " asks for an API key, and keys live in Postgres"
                    },
                    403,
                )
            try:
                info = await keys.lookup(token) if token else None
            except KeyStoreUnavailable as exc:
                return _json({"error": str(exc)}, 503)
            if info is None:
                return _json(
                    {
                        "error": "the console listens beyond loopback: add ?key=<an"
                        " API key> to its address (segflow keys create NAME ...)"
                    },
                    401,
                )
        try:
            return await handler(request)
        except SegflowError as exc:
            return _json({"error": str(exc)}, 503)

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def api_live(request: web.Request) -> web.Response:
        since = float(request.query.get("since", "0") or 0)
        return _json({"every": SAMPLE_EVERY_S, "samples": live.since(since)})

    async def api_segments(request: web.Request) -> web.Response:
        return _json({"every": SIZES_EVERY_S, **queries.segments_view(list(await sized.get()))})

    async def api_lookup(request: web.Request) -> web.Response:
        wanted = request.query.get("id", "").strip()
        if not wanted:
            return _json({"error": "expected ?id=<a userId, anon:<device> or a device id>"}, 400)
        return _json(await queries.lookup(settings, catalog, bootstrap, wanted))

    async def api_dead_letters(request: web.Request) -> web.Response:
        return _json(await queries.dead_letters(settings, catalog, bootstrap))

    async def running(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(live.run(), name="console-live")
        if keys is not None:
            with contextlib.suppress(KeyStoreUnavailable, OSError):
                await keys.open()
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sized.close()
        if keys is not None:
            await keys.close()

    app = web.Application(middlewares=[guard])
    app.cleanup_ctx.append(running)
    app.router.add_get("/", index)
    app.router.add_get("/api/live", api_live)
    app.router.add_get("/api/segments", api_segments)
    app.router.add_get("/api/lookup", api_lookup)
    app.router.add_get("/api/dead-letters", api_dead_letters)
    app.router.add_static("/static/", STATIC)
    return app
