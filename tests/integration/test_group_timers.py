"""Relative group rules on the wall clock, on the real broker (SPEC 8.4): timers are state —
they fire with no new event, survive a SIGKILL (with or without the local state), fire once in
effect, and fire at start-up with the instant they were due when no worker ran."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.catalog import load_catalog
from pipeline.tools.read import current_documents
from tests.fixtures.stack import ROOT, Namespace
from tests.integration.test_pipeline import stop

pytestmark = pytest.mark.integration

WINDOW_S = 4
PEOPLE = 300


def _catalog(directory: Path) -> Path:
    """The shipped catalog with `recent-buyers` lasting WINDOW_S seconds, not two minutes."""
    directory.mkdir()
    for name in ("segment.yaml", "profiles.yaml"):
        text = (ROOT / "catalog" / name).read_text().replace("../schemas/", f"{ROOT}/schemas/")
        if name == "profiles.yaml":
            old = "{property: lastPurchaseAt, op: inTheLast, value: 2m}"
            assert old in text
            text = text.replace(old, old.replace("2m", f"{WINDOW_S}s"))
        (directory / name).write_text(text)
    return directory


def _rfc3339(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _current(namespace: Namespace, collection: str) -> list[dict[str, Any]]:
    spec = namespace.catalog.collections[collection]
    return await current_documents(
        namespace.bootstrap, namespace.names.collection(collection), spec
    )


async def _memberships(namespace: Namespace) -> dict[str, dict[str, Any]]:
    """recent-buyers' segment/memberships documents, by user."""
    return {
        doc["user"]: doc
        for doc in await _current(namespace, "segment/memberships")
        if doc["segment"] == {"vendor": 100, "name": "recent-buyers"}
    }


async def _until(check: Any, what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.2)
    raise TimeoutError(what)


@pytest.mark.parametrize(
    "when",
    ["at-the-boundary", "down-through-the-boundary", "down-through-it-state-deleted"],
)
async def test_timers_fire_once_across_sigkill(
    namespace: Namespace, tmp_path: Path, when: str
) -> None:
    """PEOPLE buyers join recent-buyers and leave WINDOW_S seconds after their purchase with no
    event. The worker is SIGKILLed as the leaves fire (some timers fired and maybe committed,
    some not), or before the boundary and restarted after it (the timers fire at start-up). In
    every case each person leaves exactly once, at the boundary's instant."""
    catalog_dir = _catalog(tmp_path / "catalog")
    namespace.catalog = load_catalog(catalog_dir)
    env = {"SEGFLOW_CATALOG": str(catalog_dir)}
    log = tmp_path / "worker.log"
    worker = namespace.worker(log, **env)
    try:
        # The first purchase once the worker is up, so it joins before the window ends.
        await _until(
            lambda: asyncio.sleep(0, result="derive: assigned" in log.read_text()), "no start"
        )
        bought = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        events = [
            {
                "id": str(uuid.uuid4()),
                "type": "purchase",
                "userId": f"buyer-{i:03d}",
                "occurredAt": _rfc3339(bought),
                "data": {"total": 10},
            }
            for i in range(PEOPLE)
        ]
        await namespace.produce("profile/events", events)

        async def joined() -> bool:
            found = await _memberships(namespace)
            return len(found) == PEOPLE and all(doc["member"] for doc in found.values())

        await _until(joined, "the buyers did not join recent-buyers")
        boundary = bought + timedelta(seconds=WINDOW_S)
        assert datetime.now(UTC) < boundary, "joined too late to test the boundary"

        if when == "at-the-boundary":
            await asyncio.sleep((boundary - datetime.now(UTC)).total_seconds())

            async def some_left() -> bool:
                found = await _memberships(namespace)
                return any(not doc["member"] for doc in found.values())

            await _until(some_left, "nobody left at the boundary", timeout=10)
            worker.kill()
            worker.wait(10)
        else:
            worker.kill()
            worker.wait(10)
            await asyncio.sleep((boundary - datetime.now(UTC)).total_seconds() + 1)
            if when == "down-through-it-state-deleted":
                shutil.rmtree(namespace.data_dir / "state", ignore_errors=True)
        worker = namespace.worker(log, **env)

        async def all_left() -> dict[str, dict[str, Any]] | None:
            found = await _memberships(namespace)
            done = len(found) == PEOPLE and not any(doc["member"] for doc in found.values())
            return found if done else None

        left = await _until(all_left, "not everyone left recent-buyers")
        await asyncio.sleep(1.5)  # a second firing, if there were one, would land by now
        left = await _memberships(namespace)
        toggles = [
            doc
            for doc in await _current(namespace, "segment/toggles")
            if doc["segment"]["name"] == "recent-buyers"
        ]
        records = await _current(namespace, "profile/records")
    finally:
        stop(worker)
    expected_leave = _rfc3339(boundary).replace(".000Z", "Z")
    assert {doc["last"] for doc in left.values()} == {expected_leave}, "left at the boundary"
    # Joined when the purchase was processed (the time of that change), before the boundary.
    assert all(bought <= _parse(doc["first"]) < boundary for doc in left.values())
    assert not any(doc["member"] for doc in left.values())
    # One leave each: a join then a leave is one toggle; a second leave would be none, but a
    # second join-leave pair (a timer fired twice with other change numbers) would be two.
    assert len(toggles) == PEOPLE
    assert sorted(t["user"] for t in toggles) == sorted(left)
    assert all(t.get("remove") is True for t in toggles)
    assert len(records) == PEOPLE and all(r["groups"] == [] for r in records)
    if when == "down-through-it-state-deleted":
        assert "restored" in log.read_text()
