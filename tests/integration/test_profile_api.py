"""`POST /ingest/profile/events` against the real embedded broker and Postgres (SPEC 8.1, 8.6):
the receiving time fills a missing `occurredAt`, and invalid product events are 400s naming each
document, with nothing written."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from pipeline.runtime.topics import read_to_end
from tests.fixtures.stack import Namespace, topic_ends
from tests.integration.test_api import Api, payload, serving

pytestmark = pytest.mark.integration

EVENTS = "profile/events"


class ProfileApi(Api):
    async def send(self, body: Any) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        response = await self.client.post(self.url(EVENTS), data=payload(data), headers=self.auth())
        return response.status, await response.json()

    async def ends(self) -> dict[TopicPartition, int]:
        partitions = self.ns.catalog.collections[EVENTS].partitions
        return await topic_ends(self.ns.bootstrap, self.ns.names.collection(EVENTS), partitions)

    async def written_since(self, before: dict[TopicPartition, int]) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        async for records in read_to_end(self.ns.bootstrap, before):
            docs.extend(orjson.loads(r.value) for r in records)
        return docs


@pytest.fixture
async def api(namespace: Namespace, postgres: str, pg_schema: str) -> AsyncIterator[ProfileApi]:
    async with serving(ProfileApi, namespace, postgres, pg_schema, "app", EVENTS) as served:
        yield served


def event(**fields: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": "pageview", "userId": "user-1", **fields}


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- occurredAt --------------------------------------------------------------------------------


async def test_a_missing_occurred_at_is_the_receiving_time_and_a_given_one_is_kept(
    api: ProfileApi,
) -> None:
    before = await api.ends()
    missing = event(anonymousId="device-1", data={"path": "/pricing"})
    given = event(occurredAt="2024-05-01T10:00:00+02:00")
    started = datetime.now(UTC)
    assert await api.send([missing, given]) == (200, {"accepted": 2})
    finished = datetime.now(UTC)

    written = {doc["id"]: doc for doc in await api.written_since(before)}
    assert set(written) == {missing["id"], given["id"]}
    filled = written[missing["id"]]["occurredAt"]
    # RFC 3339 UTC with milliseconds and Z, e.g. 2026-12-02T14:00:00.123Z.
    assert len(filled) == len("2026-12-02T14:00:00.123Z") and filled.endswith("Z"), filled
    assert filled[10] == "T" and filled[19] == "."
    # Milliseconds are truncated: the receiving time may read up to 1 ms before `started`.
    assert started - timedelta(milliseconds=1) <= instant(filled) <= finished
    assert written[missing["id"]] == {**missing, "occurredAt": filled}
    assert written[given["id"]] == given  # kept, text and offset as given

    # A single document (not in an array) too.
    before = await api.ends()
    single = event()
    assert await api.send(single) == (200, {"accepted": 1})
    [written_single] = await api.written_since(before)
    assert written_single["id"] == single["id"]
    assert instant(written_single["occurredAt"]) >= instant(filled)


async def test_an_integer_user_id_is_accepted(api: ProfileApi) -> None:
    before = await api.ends()
    doc = event(userId=100, occurredAt="2026-01-01T00:00:00Z")
    assert await api.send(doc) == (200, {"accepted": 1})
    assert await api.written_since(before) == [doc]


# --- 400 ---------------------------------------------------------------------------------------

INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    # name, the document's changes, the path, a part of the message
    ("no userId and no anonymousId", {"userId": None}, "", "needs a userId, an anonymousId"),
    ("userId beginning anon:", {"userId": "anon:abc"}, "/userId", "not beginning with 'anon:'"),
    ("data not an object", {"data": ["pricing"]}, "/data", "must be an object"),
    ("occurredAt not RFC 3339", {"occurredAt": "2026-01-01 10:00"}, "/occurredAt", "RFC 3339"),
    (
        "data with 10,000 names",
        {"data": {f"k{i}": i for i in range(10_000)}},
        "/data",
        "at most 1000 names",
    ),
    (
        "a 900 KB string",
        {"data": {"note": "x" * 900_000}},
        "/data/note",
        "a string of at most 10000 characters",
    ),
]


def invalid(changes: dict[str, Any]) -> dict[str, Any]:
    doc = event(**changes)
    return {k: v for k, v in doc.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "path", "part"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
async def test_an_invalid_product_event_is_400_naming_it_and_nothing_is_written(
    api: ProfileApi, changes: dict[str, Any], path: str, part: str
) -> None:
    before = await api.ends()
    doc = invalid(changes)
    body = orjson.dumps([event(), doc, event()])
    assert len(body) < 1 << 20  # under the API's byte limit: the answer is the schema's
    status, answer = await api.send(body)
    assert status == 400, answer
    errors = answer["errors"]
    assert errors and {e["index"] for e in errors} == {1}
    assert {e["path"] for e in errors} == {path}
    assert any(part in e["message"] for e in errors), errors
    assert await api.ends() == before


async def test_every_invalid_document_of_a_request_is_listed_by_index(api: ProfileApi) -> None:
    before = await api.ends()
    docs = [event(), *(invalid(c[1]) for c in INVALID[:4]), event()]
    status, answer = await api.send(docs)
    assert status == 400
    listed = {(e["index"], e["path"]) for e in answer["errors"]}
    assert listed == {(1, ""), (2, "/userId"), (3, "/data"), (4, "/occurredAt")}
    assert all(set(e) == {"index", "path", "message"} and e["message"] for e in answer["errors"])
    assert await api.ends() == before
