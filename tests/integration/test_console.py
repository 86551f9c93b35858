"""The console (SPEC 11) in a real browser: Debian's Chromium, driven by Playwright, against a
worker with real data — segment events, product events building records, dead letters — in
the embedded broker and Postgres. Screenshots land in `test-output/console/`."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from pipeline.producers.keys import create_key
from pipeline.tools.console import console_app
from tests.fixtures.events import generate
from tests.fixtures.profiles import product_events
from tests.fixtures.stack import ROOT, Namespace, logged
from tests.integration.test_pipeline import by_user, stop
from tests.integration.test_profiles import settled

pytestmark = pytest.mark.integration

SHOTS = ROOT / "test-output" / "console"
CONSOLE = re.compile(r"the console on (http://\S+/console/)")
INVALID = [b"{not json", {"event": "x", "user": 7}, {"timestamp": "yesterday"}]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("no chromium: `make test` installs Debian's (apt-get install chromium)")
    return found


@dataclass
class Console:
    url: str
    ns: Namespace
    dsn: str
    schema: str
    page: Page


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        await launched.close()


@pytest.fixture
async def console(
    namespace: Namespace, tmp_path: Path, postgres: str, pg_schema: str, browser: Browser
) -> AsyncIterator[Console]:
    log = tmp_path / "worker.log"
    worker = namespace.worker(log, SEGFLOW_POSTGRES=postgres, SEGFLOW_POSTGRES_SCHEMA=pg_schema)
    try:
        await namespace.produce("segment/events", generate(2000, seed=3), partition_of=by_user)
        await namespace.produce("segment/events", INVALID)
        await namespace.produce("profile/events", product_events(600, seed=2, people=60))
        await settled(namespace)
        await namespace.checkpointed(postgres, pg_schema)
        await logged(log, "the console on ")
        (url,) = CONSOLE.findall(log.read_text())
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield Console(url, namespace, postgres, pg_schema, page)
        assert errors == [], "the page's scripts failed"
    finally:
        stop(worker)
    assert worker.returncode == 0, log.read_text()[-3000:]


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def number(page: Page, selector: str) -> int:
    return int((await page.locator(selector).inner_text()).replace(",", ""))


async def rows(c: Console, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(c.dsn) as conn:
        cursor = await conn.execute(query.replace("{s}", f'"{c.schema}"'), params)
        return await cursor.fetchall()


async def test_the_console_pages_show_the_pipeline(console: Console) -> None:
    page = console.page
    # The pipeline, live: the counters are there, and move when events come.
    await page.goto(console.url)
    await expect(page.locator("#tile-events-total")).not_to_have_text("\u2013", timeout=15_000)
    before = await number(page, "#tile-events-total")
    assert before >= 2000 + len(INVALID)
    assert await number(page, "#tile-dead") == len(INVALID)
    await console.ns.produce("segment/events", generate(500, seed=4), partition_of=by_user)
    await page.wait_for_function(
        "n => Number(document.querySelector('#tile-events-total').textContent"
        ".replace(/,/g, '')) >= n",
        arg=before + 500,
        timeout=30_000,
    )
    assert int(await page.locator("#chart-events").get_attribute("data-points") or 0) >= 2
    assert await page.locator("#chart-documents canvas").count() == 1
    await shot(page, "pipeline")

    # Segments and groups: every segment of segment_memberships, with its size now.
    await page.click("nav a[data-page=segments]")
    sizes = await rows(
        console,
        "select vendor || '/' || segment_name, count(*) filter (where member)"
        " from {s}.segment_memberships group by 1",
    )
    table = page.locator("#segments-table tbody tr[data-key]")
    await expect(table).to_have_count(len(sizes), timeout=15_000)
    for key, members in sizes[:5]:
        shown = page.locator(f"#segments-table tr[data-key='{key}'] td.members")
        # The size may grow between the query and the page's sample, never shrink here.
        assert int(await shown.inner_text()) >= members
    assert await page.locator("#segments-table .tag", has_text="group").count() > 0
    await shot(page, "segments")

    # A record looked up by id: its properties, why it is or is not in each group.
    ((record_id, purchases),) = await rows(
        console,
        "select id, properties ->> 'purchases' from {s}.profile_records"
        " where user_id is not null order by (properties ->> 'purchases')::int desc limit 1",
    )
    await page.click("nav a[data-page=lookup]")
    await page.fill("#lookup-id", record_id)
    await page.click("#lookup-form button")
    await expect(page.locator("#lookup-title")).to_have_text(record_id, timeout=15_000)
    await expect(
        page.locator("#lookup-result tr", has=page.locator("td", has_text="purchases"))
    ).to_contain_text(purchases)
    why = page.locator("details.why")
    assert await why.count() == len(console.ns.catalog.profiles.groups)  # type: ignore[union-attr]
    await why.first.locator("summary").click()
    await expect(why.first.locator("pre")).to_contain_text(f"record {record_id} in group")
    await shot(page, "lookup")

    # A segmentation user: memberships and recent toggles.
    ((user, count),) = await rows(
        console,
        "select user_id, count(*) from {s}.segment_toggles group by 1 order by 2 desc limit 1",
    )
    await page.goto(f"{console.url}#lookup?id={user}")
    await expect(page.locator("#lookup-title")).to_have_text(user, timeout=15_000)
    toggles = page.locator("h3:has-text('Recent toggles') + table tbody tr")
    await expect(toggles).to_have_count(min(count, 20))

    # The dead letters, with their reasons and the command that replays them.
    await page.click("nav a[data-page=dead-letters]")
    await expect(page.locator("#dead-total")).to_contain_text(
        f"{len(INVALID)} dead letters", timeout=15_000
    )
    await expect(page.locator("#dead-letters")).to_contain_text("segflow dlq replay segment/events")
    await expect(page.locator("#dead-letters table tbody tr")).to_have_count(len(INVALID))
    await shot(page, "dead-letters")


async def test_beyond_loopback_the_console_api_asks_for_a_key(
    namespace: Namespace, postgres: str, pg_schema: str
) -> None:
    from aiohttp.test_utils import TestServer

    from pipeline.runtime.worker import Worker

    settings = namespace.settings(postgres=postgres, postgres_schema=pg_schema)
    worker = Worker(settings, namespace.catalog, bootstrap=namespace.bootstrap)
    app = aiohttp.web.Application()
    app.add_subapp(
        "/console/",
        console_app(worker, settings, namespace.catalog, namespace.bootstrap, "0.0.0.0"),
    )
    key = await create_key(postgres, pg_schema, "console", ["segment/events"])
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        url = str(server.make_url("/console/api/live"))
        async with session.get(url) as response:
            assert response.status == 401
            assert "?key=" in (await response.json())["error"]
        async with session.get(url, headers={"Authorization": f"Bearer {key}"}) as response:
            assert response.status == 200
            assert (await response.json())["samples"]
        async with session.get(url, params={"key": key}) as response:
            assert response.status == 200
        async with session.get(str(server.make_url("/console/"))) as response:
            assert response.status == 200, "the page itself holds no data"
        async with session.get(url, params={"key": key[:-2] + "xx"}) as response:
            assert response.status == 401
