"""Dedup state stays bounded on a real worker (issue 20, item 1): with a 60 s window, the ids
of events a window and its grace older than the newest are deleted from RocksDB and tombstoned
in the changelog, a worker restoring from the changelog gets only the live ones, and
redeliveries inside the window are still dropped."""

from __future__ import annotations

import re
import shutil
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from pipeline.runtime.state import EXPIRY, PartitionState
from pipeline.runtime.task import DEDUP, grace_ms
from pipeline.runtime.topics import read_to_end
from tests.fixtures.events import generate
from tests.fixtures.stack import Namespace, logged
from tests.integration.test_pipeline import by_user, stop

pytestmark = pytest.mark.integration

WINDOW_MS = 60_000
METRICS = re.compile(r"health and metrics on (http://\S+)/health")


async def send(ns: Namespace, docs: list[dict[str, object]], timestamp_ms: int) -> None:
    """Send with an explicit record timestamp (dedup compares record timestamps)."""
    topic = ns.names.collection("segment/events")
    producer = AIOKafkaProducer(bootstrap_servers=ns.bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, orjson.dumps(doc), partition=by_user(doc), timestamp_ms=timestamp_ms
            )
            for doc in docs
        ]
        for future in futures:
            meta = await future
            tp = TopicPartition(meta.topic, meta.partition)
            ns.sent[tp] = max(ns.sent.get(tp, 0), meta.offset + 1)
    finally:
        await producer.stop()


def unique(docs: list[dict[str, object]]) -> list[dict[str, object]]:
    return list({str(d["event"]): d for d in docs}.values())


def dedup_entries(data_dir: Path, ns: Namespace) -> tuple[int, int]:
    """(windowed entries, expiry index entries) over the segment shuffle's partitions."""
    entries = index = 0
    root = data_dir / "state" / ns.names.shuffle("segment/events")
    for path in sorted(root.iterdir()):
        state = PartitionState(path)
        try:
            entries += sum(1 for k in state.keys_from(DEDUP) if k.startswith(DEDUP))
            index += sum(1 for k in state.keys_from(EXPIRY) if k.startswith(EXPIRY))
        finally:
            state.close()
    return entries, index


def dedup_hits(log: Path) -> int:
    (url,) = METRICS.findall(log.read_text())[-1:]
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    (value,) = re.findall(r"^segflow_dedup_hits_total (\d+)$", text, re.M)
    return int(value)


async def test_dedup_entries_past_the_window_are_purged(
    namespace: Namespace, tmp_path: Path
) -> None:
    old = unique(generate(1500, seed=41))[:1000]
    new = [
        d
        for d in unique(generate(1500, seed=42))[:1000]
        if d["event"] not in {o["event"] for o in old}
    ]
    start = int(time.time() * 1000) - 10 * 60_000
    later = start + WINDOW_MS + grace_ms(WINDOW_MS) + 5_000
    env = {"SEGFLOW_DEDUP_WINDOW": "60s"}
    log = tmp_path / "worker.log"
    worker = namespace.worker(log, **env)
    try:
        await send(namespace, old, start)
        await namespace.processed()
        await send(namespace, new, later)
        await send(namespace, new[:100], later + 1_000)  # redeliveries inside the window
        await namespace.processed()
        await logged(log, "health and metrics on")
        assert dedup_hits(log) == 100
    finally:
        stop(worker)
    assert worker.returncode == 0, log.read_text()[-3000:]
    assert dedup_entries(namespace.data_dir, namespace) == (len(new), len(new))

    # The changelog holds a tombstone for each forgotten id.
    changelog = namespace.names.changelog("segment/events")
    starts = {TopicPartition(changelog, p): 0 for p in range(4)}
    tombstones: set[bytes] = set()
    async for records in read_to_end(namespace.bootstrap, starts):
        tombstones |= {r.key for r in records if r.value is None and r.key.startswith(DEDUP)}
    assert len(tombstones) == len(old)

    # A worker without local state restores only the live ids.
    shutil.rmtree(namespace.data_dir / "state")
    worker = namespace.worker(log, **env)
    try:
        await logged(log, "restored", timeout=60)
        await namespace.processed()
    finally:
        stop(worker)
    assert worker.returncode == 0, log.read_text()[-3000:]
    assert dedup_entries(namespace.data_dir, namespace) == (len(new), len(new))
