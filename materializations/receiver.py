"""A demo webhook endpoint: checks Standard Webhooks signatures and prints each toggle it gets,
and each export and enriched event of a destination (SPEC 9) POSTed to it.

Redeliveries are possible (delivery is at least once), so it remembers recent ids (a toggle's
`event`, an export's or enriched event's `id`) and marks one seen before as a duplicate, as a
real receiver would drop it.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
from aiohttp import web

from materializations.webhook import verify

REMEMBERED_EVENTS = 100_000


@dataclass
class ReceiverStats:
    """What the endpoint received; `batch_sizes` counts requests by their number of toggles."""

    requests: int = 0
    rejected: int = 0
    toggles: int = 0
    duplicates: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict, repr=False)

    def first_time(self, event: str) -> bool:
        """Remember `event`; False when it was seen recently."""
        if event in self.seen:
            return False
        self.seen[event] = None
        if len(self.seen) > REMEMBERED_EVENTS:
            self.seen.popitem(last=False)
        return True


STATS = web.AppKey("stats", ReceiverStats)


def ident(doc: Any) -> str:
    """What makes a document the same delivery again: a toggle's event id, else its id."""
    if isinstance(doc, dict):
        return str(doc["event"] if isinstance(doc.get("event"), str) else doc.get("id"))
    return repr(doc)


def describe_export(export: dict[str, Any], path: str) -> str:
    """'export crm user-1 update tags [HV] -> [HV, VIP] {plan: pro}' (only what changed)."""
    old, new = export.get("oldProperties") or {}, export.get("newProperties") or {}
    if export.get("toDelete"):
        change = "delete"
    elif not export.get("oldGroups") and not old:
        change = "create"
    elif not export.get("newGroups"):
        change = "leave"
    else:
        change = "update"
    changed = {k: v for k, v in new.items() if old.get(k) != v}
    tags = f"tags {export.get('oldGroups')} -> {export.get('newGroups')}"
    shown = orjson.dumps(changed).decode() if changed else "{}"
    return f"export {path} {export.get('record')} {change} {tags} {shown}"


def describe(toggle: Any, path: str = "") -> str:
    """One line for a toggle: 'toggle usr-1 left 3/seg-2 (event …, previous …)'; for an
    export or an enriched event of a destination, what it says."""
    if not isinstance(toggle, dict):
        return f"not a toggle: {toggle!r}"
    if "toDelete" in toggle:
        return describe_export(toggle, path)
    if isinstance(toggle.get("event"), dict):
        event = toggle["event"]
        return (
            f"event {path} {event.get('type')} of {toggle.get('record')} tags"
            f" {toggle.get('groups')} {orjson.dumps(toggle.get('properties')).decode()}"
        )
    segment = toggle.get("segment") or {}
    previous = toggle.get("previous") or {}
    change = "left" if toggle.get("remove") else "joined"
    return (
        f"toggle {toggle.get('user')} {change} {segment.get('vendor')}/{segment.get('name')}"
        f" (event {toggle.get('event')}, previous {previous.get('event')})"
    )


def make_app(secret: str | None, delay_ms: int = 0, out: TextIO | None = None) -> web.Application:
    """An app taking POSTs on any path: 401 on a bad signature when `secret` is set, else 200.

    Each toggle is printed to `out` (default: the standard output at call time).
    """
    out = sys.stdout if out is None else out

    async def receive(request: web.Request) -> web.Response:
        stats = request.app[STATS]
        body = await request.read()
        if secret and not verify(secret, request.headers, body):
            stats.rejected += 1
            return web.Response(status=401, text="invalid or missing webhook signature\n")
        try:
            toggles = orjson.loads(body)
        except orjson.JSONDecodeError:
            return web.Response(status=400, text="body is not JSON\n")
        if not isinstance(toggles, list):
            return web.Response(status=400, text="body must be a JSON array of toggles\n")
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        stats.requests += 1
        stats.toggles += len(toggles)
        stats.batch_sizes[len(toggles)] += 1
        path = request.match_info.get("path", "")
        for toggle in toggles:
            line = describe(toggle, path)
            if isinstance(toggle, dict) and not stats.first_time(ident(toggle)):
                stats.duplicates += 1
                line += " duplicate"
            print(line, file=out)
        out.flush()
        return web.Response(text="ok\n")

    app = web.Application()
    app[STATS] = ReceiverStats()
    app.router.add_route("POST", "/{path:.*}", receive)
    return app


async def serve(port: int, secret: str | None, delay_ms: int = 0, host: str = "127.0.0.1") -> None:
    """Run the demo endpoint on host:port until cancelled."""
    runner = web.AppRunner(make_app(secret, delay_ms))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        print(f"receiving webhooks on http://{host}:{port}/", file=sys.stderr)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
