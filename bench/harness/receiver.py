"""The harness's webhook receiver: counts toggles (distinct event ids and total) per run."""

from __future__ import annotations

from collections import defaultdict

import orjson
from aiohttp import web

from pipeline.tools.embedded import free_port


class Receiver:
    """POST /<run> with a JSON array of toggles (or one toggle); answers 200 at once."""

    def __init__(self) -> None:
        self.ids: dict[str, set[str]] = defaultdict(set)
        self.total: dict[str, int] = defaultdict(int)
        self.requests: dict[str, int] = defaultdict(int)
        self.runner: web.AppRunner | None = None
        self.port = 0

    def url(self, run: str) -> str:
        return f"http://127.0.0.1:{self.port}/{run}"

    def distinct(self, run: str) -> int:
        return len(self.ids.get(run, ()))

    def forget(self, run: str) -> None:
        self.ids.pop(run, None)

    async def _handle(self, request: web.Request) -> web.Response:
        run = request.match_info["run"]
        body = orjson.loads(await request.read())
        docs = body if isinstance(body, list) else [body]
        ids = self.ids[run]
        for doc in docs:
            if isinstance(doc, dict) and "event" in doc:
                ids.add(doc["event"])
        self.total[run] += len(docs)
        self.requests[run] += 1
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/{run}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
