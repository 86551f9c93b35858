"""Manual groups, the producing side (SPEC 8.4), against the real embedded broker and Postgres:
`POST /groups/{name}/members` with every status code, `segflow groups add|remove` writing into
profile/group-members, and `segflow groups list` reading the records' `groups`.

The catalog is the test's own (a manual group needs `profiles.groups`): segment.yaml as shipped
(groups flow into segment/events) plus the profile collections and groups below.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from pipeline.catalog import Catalog, load_catalog
from pipeline.documents.pointers import encode_key
from pipeline.producers.keys import create_key, list_keys
from pipeline.runtime.produce import PRODUCER
from pipeline.runtime.topics import ensure_topics, pipeline_topics, read_to_end
from pipeline.tools.groups import PRODUCER_ID
from tests.fixtures.stack import ROOT, Namespace, topic_ends
from tests.integration.test_api import Api, payload, serving

pytestmark = pytest.mark.integration

MEMBERS = "profile/group-members"
RECORDS = "profile/records"
MANUAL = "the manual groups are ['beta', 'vip']"
GROUPS = """\
collections:
  profile/events:
    schema: {schemas}/profile-event.schema.yaml
    key: [/id]
    partitions: 2
    dedup: 7d
  profile/group-members:
    schema: {schemas}/profile-group-member.schema.yaml
    key: [/id]
    partitions: 2
    dedup: 7d
  profile/records:
    schema: {schemas}/profile-record.schema.yaml
    key: [/id]
    partitions: 2
profiles:
  groupVendor: 100
  properties:
    purchases: {{type: integer, from: {{events: [purchase], aggregate: count}}}}
  groups:
    vip: {{manual: true}}
    beta: {{manual: true}}
    buyers: {{rules: [{{property: purchases, op: gt, value: 0}}]}}
"""


@pytest.fixture(scope="module")
def groups_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("groups-catalog")
    schemas = str(ROOT / "schemas")
    segment = (ROOT / "catalog" / "segment.yaml").read_text().replace("../schemas", schemas)
    (directory / "segment.yaml").write_text(segment)
    (directory / "groups.yaml").write_text(GROUPS.format(schemas=schemas))
    return directory


@pytest.fixture
async def ns(broker: str, groups_catalog: Path, tmp_path: Path) -> AsyncIterator[Namespace]:
    catalog: Catalog = load_catalog(groups_catalog)
    namespace = Namespace(broker, catalog, f"t{uuid.uuid4().hex[:10]}.", tmp_path / "data")
    await ensure_topics(broker, pipeline_topics(catalog, namespace.names))
    yield namespace


async def ends(ns: Namespace, collection: str = MEMBERS) -> dict[TopicPartition, int]:
    partitions = ns.catalog.collections[collection].partitions
    return await topic_ends(ns.bootstrap, ns.names.collection(collection), partitions)


async def written_since(ns: Namespace, before: dict[TopicPartition, int]) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []
    async for batch in read_to_end(ns.bootstrap, before):
        records.extend(batch)
    return records


def documents(records: list[ConsumerRecord]) -> list[dict[str, Any]]:
    return sorted((orjson.loads(r.value) for r in records), key=lambda d: str(d.get("userId")))


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_now(text: str, started: datetime, finished: datetime) -> None:
    """RFC 3339 UTC with milliseconds (2026-12-02T14:00:00.123Z), between the two instants."""
    assert len(text) == len("2026-12-02T14:00:00.123Z") and text.endswith("Z"), text
    assert text[10] == "T" and text[19] == "."
    assert started - timedelta(milliseconds=1) <= instant(text) <= finished


# --- POST /groups/{name}/members ---------------------------------------------------------------


class GroupsApi(Api):
    async def members(self, group: str, body: Any, key: str | None = None) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = self.auth(key) if key != "" else {}
        response = await self.client.post(
            f"/groups/{group}/members", data=payload(data), headers=headers
        )
        return response.status, await response.json()


@pytest.fixture
async def api(ns: Namespace, postgres: str, pg_schema: str) -> AsyncIterator[GroupsApi]:
    async with serving(GroupsApi, ns, postgres, pg_schema, "crm", MEMBERS) as served:
        yield served


async def test_members_are_written_one_document_per_person(api: GroupsApi) -> None:
    before = await ends(api.ns)
    body = {
        "add": [{"userId": "u1"}, {"anonymousId": "d1"}, {"userId": 42, "anonymousId": "d2"}],
        "remove": [{"userId": "u3"}],
    }
    started = datetime.now(UTC)
    assert await api.members("vip", body) == (200, {"accepted": 4})
    finished = datetime.now(UTC)

    records = await written_since(api.ns, before)
    producer_id = (await list_keys(api.dsn, api.schema))[0].producer_id
    assert {dict(r.headers)[PRODUCER] for r in records} == {producer_id.encode()}
    docs = documents(records)
    assert {uuid.UUID(d["id"]).version for d in docs} == {4} and len({d["id"] for d in docs}) == 4
    for doc in docs:
        assert_now(doc["occurredAt"], started, finished)
    assert [{k: v for k, v in d.items() if k not in ("id", "occurredAt")} for d in docs] == [
        {"group": "vip", "userId": 42, "anonymousId": "d2"},
        {"group": "vip", "anonymousId": "d1"},
        {"group": "vip", "userId": "u1"},
        {"group": "vip", "userId": "u3", "remove": True},
    ]

    # An item may bring its own id (a retry sends the same ids) and occurredAt.
    before = await ends(api.ns)
    given = {"userId": "u4", "id": str(uuid.uuid4()), "occurredAt": "2024-05-01T10:00:00+02:00"}
    assert await api.members("beta", {"remove": [given]}) == (200, {"accepted": 1})
    [doc] = documents(await written_since(api.ns, before))
    assert doc == {"group": "beta", **given, "remove": True}
    assert await api.members("vip", {"add": []}) == (200, {"accepted": 0})


async def test_keys_are_checked_first_401(api: GroupsApi) -> None:
    body = {"add": [{"userId": "u1"}]}
    for key in ("", "sfk_" + "x" * 43, "not-a-key"):
        status, answer = await api.members("vip", body, key=key)
        assert status == 401 and "error" in answer
    # Before the group: nobody learns which groups exist without a key.
    assert (await api.members("nope", body, key=""))[0] == 401


async def test_unknown_and_calculated_groups_are_404_naming_the_manual_ones(
    api: GroupsApi,
) -> None:
    body = {"add": [{"userId": "u1"}]}
    assert await api.members("vipp", body) == (
        404,
        {"error": f"unknown group 'vipp' (did you mean 'vip'?); {MANUAL}"},
    )
    assert await api.members("buyers", body) == (
        404,
        {"error": f"group 'buyers' is calculated from its rules, not manual; {MANUAL}"},
    )
    # Before the key's scope: a key for other collections learns the same.
    other = await create_key(api.dsn, api.schema, "events-only", ["profile/events"])
    assert (await api.members("buyers", body, key=other))[0] == 404


async def test_a_key_scoped_elsewhere_is_403(api: GroupsApi) -> None:
    before = await ends(api.ns)
    other = await create_key(api.dsn, api.schema, "events-only", ["profile/events"])
    assert await api.members("vip", {"add": [{"userId": "u1"}]}, key=other) == (
        403,
        {"error": "API key 'events-only' may not write 'profile/group-members'"},
    )
    # The key for the members collection may not write product events either.
    event = {"id": str(uuid.uuid4()), "type": "x", "userId": "u1"}
    response = await api.post(event, collection="profile/events")
    assert response.status == 403
    assert await ends(api.ns) == before


async def test_too_many_people_or_bytes_is_413(api: GroupsApi) -> None:
    before = await ends(api.ns)
    people = [{"userId": f"u{i}"} for i in range(1001)]
    many = {"add": people[:600], "remove": people[600:]}
    status, answer = await api.members("vip", many)
    assert status == 413 and "1001 people; at most 1000" in answer["error"]
    status, _ = await api.members("vip", b'{"add": [{"userId": "' + b"u" * (1 << 20) + b'"}]}')
    assert status == 413
    assert await ends(api.ns) == before


async def test_bad_bodies_and_invalid_people_are_400_with_nothing_written(api: GroupsApi) -> None:
    before = await ends(api.ns)
    status, answer = await api.members("vip", b"{not json")
    assert status == 400 and answer["error"].startswith("request body is not JSON")
    for body, message in [
        ([{"userId": "u1"}], "expected a JSON object"),
        ({}, "expected 'add', 'remove' or both"),
        ({"members": [{"userId": "u1"}]}, "unexpected 'members' in the body"),
        ({"add": {"userId": "u1"}}, "'add' must be an array of people"),
    ]:
        status, answer = await api.members("vip", body)
        assert status == 400 and answer["error"].startswith(message), answer

    body = {
        "add": [{"userId": "u1"}, {}, {"userId": "u2", "group": "beta"}, "u3"],
        "remove": [{"userId": "anon:d1"}, {"anonymousId": "d1", "id": "1234"}],
    }
    status, answer = await api.members("vip", body)
    assert status == 400
    user_id = (
        "must be a string of 1 to 200 characters, not beginning with 'anon:' and without the NUL"
        " character, or an integer"
    )
    expected = [
        ("add", 1, "", "needs a userId, an anonymousId or both"),
        (
            "add",
            2,
            "/group",
            "not allowed in an item; expected userId, anonymousId, id, occurredAt",
        ),
        ("add", 3, "", "expected an object with userId, anonymousId or both, got str"),
        ("remove", 0, "/userId", user_id),
        ("remove", 1, "/id", "must be a UUID (32 hexadecimal digits grouped 8-4-4-4-12)"),
    ]
    assert answer == {
        "errors": [
            {"list": name, "index": index, "path": path, "message": message}
            for name, index, path, message in expected
        ]
    }
    assert await ends(api.ns) == before


async def test_a_broker_failure_is_503(api: GroupsApi) -> None:
    await api.producer.stop()
    status, answer = await api.members("vip", {"add": [{"userId": "u1"}]})
    assert status == 503 and "retry" in answer["error"]


# --- segflow groups ----------------------------------------------------------------------------


def segflow(ns: Namespace, catalog: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.tools.cli", "groups", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ns.env(SEGFLOW_CATALOG=str(catalog)),
        timeout=120,
    )


async def run(ns: Namespace, catalog: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(segflow, ns, catalog, *args)


async def test_add_and_remove_write_one_document_per_person(
    ns: Namespace, groups_catalog: Path
) -> None:
    before = await ends(ns)
    started = datetime.now(UTC)
    people = ["--user-id", "u1", "--anonymous-id", "d1", "--user-id", "42"]
    added = await run(ns, groups_catalog, "add", "vip", *people)
    finished = datetime.now(UTC)
    assert added.returncode == 0, added.stderr
    assert "3 person(s) added to group 'vip'" in added.stderr
    printed = [orjson.loads(line) for line in added.stdout.splitlines()]
    records = await written_since(ns, before)
    assert documents(records) == sorted(printed, key=lambda d: str(d.get("userId")))
    assert {dict(r.headers)[PRODUCER] for r in records} == {PRODUCER_ID.encode()}
    people_written = [(d.get("userId"), d.get("anonymousId")) for d in printed]
    assert people_written == [("u1", None), (None, "d1"), ("42", None)]
    for doc in printed:
        assert uuid.UUID(doc["id"]).version == 4 and doc["group"] == "vip" and "remove" not in doc
        assert_now(doc["occurredAt"], started, finished)

    before = await ends(ns)
    removed = await run(ns, groups_catalog, "remove", "beta", "--anonymous-id", "d1")
    assert removed.returncode == 0, removed.stderr
    assert "1 person(s) removed from group 'beta'" in removed.stderr
    [doc] = documents(await written_since(ns, before))
    assert doc == orjson.loads(removed.stdout)
    assert (doc["group"], doc["anonymousId"], doc["remove"]) == ("beta", "d1", True)


async def test_groups_that_take_no_memberships_and_missing_people_are_errors(
    ns: Namespace, groups_catalog: Path
) -> None:
    before = await ends(ns)
    calculated = f"group 'buyers' is calculated from its rules, not manual; {MANUAL}"
    invalid = ["--user-id", "u1", "--user-id", "anon:d1", "--anonymous-id", ""]
    cases = [
        (("add", "buyers", "--user-id", "u1"), calculated),
        (("remove", "nope", "--user-id", "u1"), f"unknown group 'nope'; {MANUAL}"),
        (("add", "vip"), "name at least one person: --user-id U or --anonymous-id A"),
        (("add", "vip", *invalid), "nothing written:\n  --user-id 'anon:d1': /userId: must be"),
        (("list", "nope"), "unknown group 'nope'; the groups are ['beta', 'buyers', 'vip']"),
    ]
    for args, message in cases:
        result = await run(ns, groups_catalog, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith(f"segflow: {message}"), (args, result.stderr)
        assert result.stdout == ""
    refused = await run(ns, groups_catalog, "add", "vip", *invalid)
    assert "--anonymous-id '': /anonymousId: must be 1 to 200 characters" in refused.stderr
    assert await ends(ns) == before


def record(record_id: str, groups: list[str], **fields: Any) -> dict[str, Any]:
    return {
        "id": record_id,
        "anonymousIds": [],
        "properties": {},
        "groups": groups,
        "createdAt": "2024-05-01T10:00:00Z",
        "updatedAt": "2024-05-01T10:00:00Z",
        **fields,
    }


async def write_records(ns: Namespace, records: list[tuple[str, dict[str, Any] | None]]) -> None:
    """Records as the records stage writes them: keyed by [id], a tombstone for a merged one."""
    producer = AIOKafkaProducer(bootstrap_servers=ns.bootstrap)
    await producer.start()
    try:
        for record_id, doc in records:
            value = None if doc is None else orjson.dumps(doc)
            await producer.send_and_wait(
                ns.names.collection(RECORDS), value, key=encode_key((record_id,))
            )
    finally:
        await producer.stop()


async def test_list_counts_and_names_members_from_the_current_records(
    ns: Namespace, groups_catalog: Path
) -> None:
    empty = await run(ns, groups_catalog, "list")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.splitlines() == [
        "GROUP   KIND        MEMBERS",
        "beta    manual      0",
        "buyers  calculated  0",
        "vip     manual      0",
    ]
    await write_records(
        ns,
        [
            ("u1", record("u1", ["buyers", "vip"], userId="u1")),
            ("u2", record("u2", ["vip"], userId="u2")),
            ("anon:d9", record("anon:d9", ["vip"], anonymousIds=["d9"])),
            ("u3", record("u3", ["beta", "vip"], userId="u3")),
            ("u3", record("u3", ["beta"], userId="u3")),  # left vip: the last one counts
            ("anon:d9", None),  # merged into another record: deleted
        ],
    )
    listed = await run(ns, groups_catalog, "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "GROUP   KIND        MEMBERS",
        "beta    manual      1",
        "buyers  calculated  1",
        "vip     manual      2",
    ]
    vip = await run(ns, groups_catalog, "list", "vip")
    assert (vip.returncode, vip.stdout.splitlines()) == (0, ["u1", "u2"]), vip.stderr
    assert "2 member(s) in group 'vip'" in vip.stderr
    buyers = await run(ns, groups_catalog, "list", "buyers")
    assert buyers.stdout.splitlines() == ["u1"]
