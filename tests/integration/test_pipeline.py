"""The worker as users run it (`segflow worker` processes) against the real embedded broker."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from pipeline.runtime.topics import read_to_end
from pipeline.tools.read import current_documents
from tests.fixtures.events import generate, reference
from tests.fixtures.stack import Namespace, logged, topic_ends

pytestmark = pytest.mark.integration

DERIVED = ("segment/memberships", "segment/profiles", "segment/toggles")


def by_user(doc: Any) -> int:
    """Producers keep a user's events in order, but key them by something else than the shuffle."""
    return zlib.crc32(doc["user"].encode()) % 4


async def derived_state(ns: Namespace) -> dict[str, list[Any]]:
    return {
        name: await current_documents(
            ns.bootstrap, ns.names.collection(name), ns.catalog.collections[name]
        )
        for name in DERIVED
    }


async def raw_count(ns: Namespace, collection: str) -> int:
    topic = ns.names.collection(collection)
    partitions = ns.catalog.collections[collection].partitions
    n = 0
    async for records in read_to_end(
        ns.bootstrap, {TopicPartition(topic, p): 0 for p in range(partitions)}
    ):
        n += len(records)
    return n


def stop(worker: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    worker.send_signal(sig)
    worker.wait(30)


def assert_equal_state(actual: dict[str, list[Any]], expected: dict[str, list[Any]]) -> None:
    for name in DERIVED:
        assert len(actual[name]) == len(expected[name]), name
        for got, want in zip(actual[name], expected[name], strict=True):
            assert got == want, name


async def test_derived_collections_equal_reference(namespace: Namespace, tmp_path: Path) -> None:
    events = generate(4000, seed=11)
    worker = namespace.worker(tmp_path / "worker.log")
    try:
        await namespace.produce("segment/events", events, partition_of=by_user)
        await namespace.processed()
        # SIGUSR1 logs where each of the worker's tasks waits (for a worker that seems stuck).
        worker.send_signal(signal.SIGUSR1)
        await logged(tmp_path / "worker.log", "SIGUSR1: ")
    finally:
        stop(worker)
    log = (tmp_path / "worker.log").read_text()
    assert worker.returncode == 0, log[-3000:]
    assert "deriver: Stack for <Task" in log
    expected = reference(events)
    assert expected["segment/toggles"], "the workload should produce toggles"
    assert_equal_state(await derived_state(namespace), expected)
    # A clean run publishes each toggle exactly once.
    assert await raw_count(namespace, "segment/toggles") == len(expected["segment/toggles"])


@pytest.mark.parametrize("lose_local_state", [False, True], ids=["same-data-dir", "state-deleted"])
async def test_sigkill_mid_stream_then_recover(
    namespace: Namespace, tmp_path: Path, lose_local_state: bool
) -> None:
    events = generate(12000, seed=23)
    chunks = [events[i : i + 2000] for i in range(0, len(events), 2000)]
    log = tmp_path / "worker.log"
    worker = namespace.worker(log)
    kills = 0
    try:
        for i, chunk in enumerate(chunks):
            await namespace.produce("segment/events", chunk, partition_of=by_user)
            if i in (1, 3):
                await asyncio.sleep(0.3)  # mid-stream: the worker is busy with this chunk
                worker.kill()
                worker.wait(10)
                kills += 1
                if lose_local_state:
                    shutil.rmtree(namespace.data_dir / "state", ignore_errors=True)
                worker = namespace.worker(log)
        await namespace.processed()
    finally:
        stop(worker)
    assert kills == 2
    expected = reference(events)
    assert_equal_state(await derived_state(namespace), expected)
    published = await raw_count(namespace, "segment/toggles")
    print(
        f"toggles: {len(expected['segment/toggles'])} distinct, {published} published "
        f"({published - len(expected['segment/toggles'])} redelivered after kills)"
    )


async def test_invalid_events_go_to_dead_letter_and_processing_continues(
    namespace: Namespace, tmp_path: Path
) -> None:
    good = generate(50, seed=5, redeliveries=0)
    bad: list[Any] = [
        b"{not json",
        {**good[0], "event": "not-a-uuid"},
        {**good[1], "remove": True, "value": "both"},
        {**good[2], "segment": {"vendor": 0, "name": "x"}},
    ]
    worker = namespace.worker(tmp_path / "worker.log")
    try:
        await namespace.produce(
            "segment/events", [*good[:25], *bad, *good[25:]], partition_of=lambda d: 0
        )
        await namespace.processed()
    finally:
        stop(worker)
    topic = namespace.names.dead_letter("segment/events")
    letters = []
    async for records in read_to_end(namespace.bootstrap, {TopicPartition(topic, 0): 0}):
        letters += records
    assert len(letters) == 4
    headers = [dict(r.headers) for r in letters]
    assert [h["segflow.source.offset"] for h in headers] == [b"25", b"26", b"27", b"28"]
    assert all(h["segflow.source.partition"] == b"0" for h in headers)
    assert b"not JSON" in headers[0]["segflow.error"]
    assert (
        headers[1]["segflow.error"]
        == b"/event: must be a UUID (32 hexadecimal digits grouped 8-4-4-4-12)"
    )
    assert b"/segment/vendor" in headers[3]["segflow.error"]
    assert letters[0].value == b"{not json"
    # Nothing valid was lost around them.
    assert_equal_state(await derived_state(namespace), reference(good))
    # `segflow dlq` shows them, and re-sends them to the collection's topic once.
    from tests.integration.test_cli import segflow

    listed = segflow("dlq", "list", "segment/events", env=namespace.env())
    shown = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert [x["headers"]["segflow.source.offset"] for x in shown] == ["25", "26", "27", "28"]
    assert shown[1]["payload"]["event"] == "not-a-uuid"
    assert shown[0]["payload"] == "{not json"
    topic = namespace.names.collection("segment/events")
    before = sum((await topic_ends(namespace.bootstrap, topic, 4)).values())
    assert (
        "re-sent 4 dead letter(s)"
        in segflow("dlq", "replay", "segment/events", env=namespace.env()).stdout
    )
    assert (
        "re-sent 0 dead letter(s)"
        in segflow("dlq", "replay", "segment/events", env=namespace.env()).stdout
    )
    assert sum((await topic_ends(namespace.bootstrap, topic, 4)).values()) == before + 4


async def test_worker_stops_when_broker_lost_its_data(
    namespace: Namespace, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from pipeline.tools.embedded import start_broker

    worker = namespace.worker(tmp_path / "worker.log")
    try:
        await namespace.produce("segment/events", generate(200, seed=3), partition_of=by_user)
        await namespace.processed()
    finally:
        stop(worker)
    # A new, empty broker (the embedded one keeps nothing across restarts), same data dir.
    fresh = start_broker(tmp_path_factory.mktemp("tansu-fresh"))
    try:
        log = tmp_path / "lost.log"
        lost = Namespace(
            fresh.bootstrap, namespace.catalog, namespace.prefix, namespace.data_dir
        ).worker(log)
        assert lost.wait(60) == 2
        message = log.read_text()
        assert "lost its data" in message, message[-2000:]
        assert "SEGFLOW_ON_STATE_LOST=rebuild" in message
    finally:
        fresh.stop()


async def test_two_workers_share_the_work_and_survive_losing_one(
    namespace: Namespace, tmp_path: Path
) -> None:
    events = generate(8000, seed=31)
    first = namespace.worker(tmp_path / "a.log", SEGFLOW_DATA_DIR=str(tmp_path / "a"))
    second = namespace.worker(tmp_path / "b.log", SEGFLOW_DATA_DIR=str(tmp_path / "b"))
    try:
        await namespace.produce("segment/events", events[:4000], partition_of=by_user)
        for _ in range(200):  # until the second worker owns partitions
            if (tmp_path / "b" / "state").exists():
                break
            await asyncio.sleep(0.1)
        assert (tmp_path / "b" / "state").exists(), (tmp_path / "b.log").read_text()
        await asyncio.sleep(0.5)
        second.kill()  # its partitions move to the first worker, restored from the changelog
        second.wait(10)
        await namespace.produce("segment/events", events[4000:], partition_of=by_user)
        await namespace.processed()
    finally:
        stop(first)
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    assert "Traceback" not in logs, logs[-3000:]
    assert_equal_state(await derived_state(namespace), reference(events))
