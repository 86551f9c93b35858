"""Profile records on the real broker: built, merged, and exact after SIGKILLs (SPEC 8.2)."""

from __future__ import annotations

import asyncio
import shutil
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from aiokafka import TopicPartition

from pipeline.catalog.profiles import identified
from pipeline.runtime.topics import partition_for
from pipeline.tools.read import current_documents
from tests.fixtures.profiles import product_events, reference_records
from tests.fixtures.stack import Namespace, topic_ends
from tests.integration.test_pipeline import stop

pytestmark = pytest.mark.integration

EVENTS = "profile/events"


def _source_topics(namespace: Namespace) -> list[tuple[str, int]]:
    catalog = namespace.catalog
    middle = identified("profile/records")
    names = namespace.names
    return [
        (names.collection(EVENTS), catalog.collections[EVENTS].partitions),
        (names.shuffle(EVENTS), catalog.collections[EVENTS].partitions),
        (names.collection(middle), catalog.collections[middle].partitions),
        (names.shuffle(middle), catalog.collections[middle].partitions),
    ]


async def settled(namespace: Namespace, timeout: float = 180.0) -> None:
    """Wait until the worker has consumed every record of both stages' inputs, twice over (the
    records stage writes merges into its own input)."""
    deadline = asyncio.get_running_loop().time() + timeout
    previous: dict[TopicPartition, int] | None = None
    while True:
        ends: dict[TopicPartition, int] = {}
        for topic, partitions in _source_topics(namespace):
            ends.update(await topic_ends(namespace.bootstrap, topic, partitions))
        done = await namespace.committed("derive", list(ends))
        if all(done.get(tp, 0) >= end for tp, end in ends.items()):
            if ends == previous:
                return
            previous = ends
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"profiles did not settle: committed {done}, ends {ends}")
        await asyncio.sleep(1.2)  # consumer offsets are committed about once a second


async def written(namespace: Namespace, collection: str, more_than: int) -> None:
    """Wait until a collection's topic holds more than `more_than` records beyond what it
    held when called (the worker is busy), checking every 50 ms."""
    spec = namespace.catalog.collections[collection]
    topic = namespace.names.collection(collection)
    before = sum((await topic_ends(namespace.bootstrap, topic, spec.partitions)).values())
    for _ in range(1200):
        now = sum((await topic_ends(namespace.bootstrap, topic, spec.partitions)).values())
        if now > before + more_than:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"nothing written to {topic} in a minute")


async def records(namespace: Namespace) -> list[dict[str, object]]:
    spec = namespace.catalog.collections["profile/records"]
    topic = namespace.names.collection("profile/records")
    return await current_documents(namespace.bootstrap, topic, spec)


async def table(dsn: str, schema: str) -> list[dict[str, object]]:
    """profile_records as the collection's documents, by id: every column checked against
    the document it came from."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(
            "select id, user_id, anonymous_ids, properties, invalid, groups, created_at,"
            f" updated_at, document from {schema}.profile_records order by id"
        )
        rows = await cursor.fetchall()
    documents = []
    for id_, user_id, devices, properties, invalid, groups, created, updated, doc in rows:
        assert id_ == doc["id"] and user_id == doc.get("userId")
        assert devices == doc["anonymousIds"] and groups == doc["groups"]
        assert properties == doc["properties"] and invalid == doc.get("invalid")
        assert created == _instant(doc["createdAt"]) and updated == _instant(doc["updatedAt"])
        documents.append(doc)
    return documents


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _by_device(namespace: Namespace):  # type: ignore[no-untyped-def]
    """Partition like our producers: by the identity stage's shuffle key."""
    (stage,) = namespace.catalog.derivations_from(EVENTS)
    key = stage.shuffle_encoder()
    partitions = namespace.catalog.collections[EVENTS].partitions
    return lambda doc: partition_for(key(doc), partitions)


async def test_records_merge_and_equal_the_reference(
    namespace: Namespace, tmp_path: Path, postgres: str, pg_schema: str
) -> None:
    events = product_events(3000, seed=5)
    worker = namespace.worker(
        tmp_path / "worker.log", SEGFLOW_POSTGRES=postgres, SEGFLOW_POSTGRES_SCHEMA=pg_schema
    )
    try:
        await namespace.produce(EVENTS, events)  # keyed anyhow: the shuffle sorts them out
        await settled(namespace)
        await namespace.checkpointed(postgres, pg_schema)
    finally:
        stop(worker)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]
    expected = reference_records(namespace.catalog, events)
    assert any(r["id"].startswith("anon:") for r in expected), "some visitors stay anonymous"
    assert sum(len(r["anonymousIds"]) > 1 for r in expected) > 20, "people on two devices"
    assert await records(namespace) == expected
    assert await table(postgres, pg_schema) == expected


@pytest.mark.parametrize("lose_local_state", [False, True], ids=["same-data-dir", "state-deleted"])
async def test_sigkills_during_merges_leave_exact_records(
    namespace: Namespace, tmp_path: Path, postgres: str, pg_schema: str, lose_local_state: bool
) -> None:
    """20k product events, ~30% anonymous, 20% of people on two devices; two SIGKILLs, after
    which the worker restarts on its local state or, without it, restores from the changelog."""
    events = product_events(20000, seed=17, people=3000)
    chunks = [events[i : i + 2500] for i in range(0, len(events), 2500)]
    log = tmp_path / "worker.log"
    small = {  # many batches, so a kill lands inside one
        "SEGFLOW_BATCH_MAX_RECORDS": "300",
        "SEGFLOW_POSTGRES": postgres,
        "SEGFLOW_POSTGRES_SCHEMA": pg_schema,
    }
    worker = namespace.worker(log, **small)
    kills = 0
    try:
        for i, chunk in enumerate(chunks):
            await namespace.produce(EVENTS, chunk, partition_of=_by_device(namespace))
            if i in (2, 5):
                # mid-stream: once the worker has written records, merges are in flight
                await written(namespace, "profile/records", more_than=0)
                worker.kill()
                worker.wait(10)
                kills += 1
                if lose_local_state:
                    shutil.rmtree(namespace.data_dir / "state", ignore_errors=True)
                worker = namespace.worker(log, **small)
        await settled(namespace)
        await namespace.checkpointed(postgres, pg_schema)
    finally:
        stop(worker)
    assert kills == 2
    if lose_local_state:
        assert "restored" in log.read_text(), "the state came back from the changelog"
    expected = reference_records(namespace.catalog, events)
    anonymous = sum(1 for e in events if "userId" not in e)
    assert 0.2 < anonymous / len(events) < 0.4
    assert await records(namespace) == expected
    assert await table(postgres, pg_schema) == expected, "merged rows deleted, none stale"
