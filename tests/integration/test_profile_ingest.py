"""Bad product events at the other doors (SPEC 8.1, issue 14): `segflow ingest profile/events`
names each bad line, and a document written to Kafka directly becomes a dead letter while the
good ones build their records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from pipeline.runtime.topics import read_to_end
from tests.fixtures.stack import Namespace
from tests.integration.test_ingest_generate import records, segflow
from tests.integration.test_pipeline import stop
from tests.integration.test_profiles import records as current_records
from tests.integration.test_profiles import settled

pytestmark = pytest.mark.integration

EVENTS = "profile/events"


def event(n: int, **fields: Any) -> dict[str, Any]:
    doc = {
        "id": f"20000000-0000-4000-8000-{n:012d}",
        "type": "pageview",
        "anonymousId": f"dev-{n}",
        "occurredAt": "2024-05-01T10:00:00Z",
        "data": {"path": "/"},
    }
    return {k: v for k, v in (doc | fields).items() if v is not None}


GOOD = [event(1), event(2, userId="u2"), event(3, userId=42, anonymousId=None)]
BAD = [
    (event(4, anonymousId=None), "/: needs a userId, an anonymousId or both"),
    (event(5, userId="anon:x"), "/userId: must be a string of 1 to 200 characters, not beginning"),
    (event(6, data=[1]), "/data: must be an object"),
    (event(7, occurredAt="May 1st"), "/occurredAt: must be an RFC 3339 date-time"),
    (event(8, data={f"k{i}": i for i in range(10_000)}), "/data: must have at most 1000 names"),
    (event(9, data={"text": "x" * 900_000}), "/data/text: must be a number, boolean, null, a str"),
]


async def test_ingest_names_each_bad_line(namespace: Namespace, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [GOOD[0], *(doc for doc, _ in BAD), GOOD[1], GOOD[2]]
    path.write_bytes(b"\n".join(orjson.dumps(doc) for doc in lines))
    result = segflow("ingest", EVENTS, str(path), env=namespace.env())
    assert result.returncode == 1, result.stderr
    errors = result.stderr.splitlines()
    for number, (_, message) in enumerate(BAD, start=2):
        assert any(e.startswith(f"line {number}: {message}") for e in errors), (message, errors)
    assert errors[-1] == f"sent 3 document(s), {len(BAD)} invalid line(s)"
    sent = sorted(orjson.loads(r.value)["id"] for r in await records(namespace, EVENTS))
    assert sent == sorted(doc["id"] for doc in GOOD)


async def test_bad_documents_from_kafka_become_dead_letters(
    namespace: Namespace, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    worker = namespace.worker(log)
    try:
        await namespace.produce(EVENTS, [GOOD[0], *(doc for doc, _ in BAD), GOOD[1], GOOD[2]])
        await settled(namespace)
    finally:
        stop(worker)
    assert worker.returncode == 0, log.read_text()[-3000:]
    start = {TopicPartition(namespace.names.dead_letter(EVENTS), 0): 0}
    dead = [r async for batch in read_to_end(namespace.bootstrap, start) for r in batch]
    found = {orjson.loads(r.value)["id"]: dict(r.headers)["segflow.error"].decode() for r in dead}
    assert sorted(found) == sorted(doc["id"] for doc, _ in BAD)
    for doc, message in BAD:
        assert found[doc["id"]].startswith(message), (message, found[doc["id"]])
    ids = [r["id"] for r in await current_records(namespace)]
    assert ids == ["42", "anon:dev-1", "u2"]


async def test_generate_profiles_to_the_broker(namespace: Namespace) -> None:
    result = segflow(
        "generate", "--profiles", "--count", "2000", "--seed", "1", "--rate", "0",
        env=namespace.env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "sent 2000 event(s) to profile/events" in result.stderr
    sent = [orjson.loads(r.value) for r in await records(namespace, EVENTS)]
    assert len(sent) == len({e["id"] for e in sent}) == 2000
    assert {"signin", "pageview", "purchase"} <= {e["type"] for e in sent}
