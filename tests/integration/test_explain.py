"""`segflow explain RECORD GROUP` (SPEC 8.4 "Why") as users run it, on the real embedded broker.

The record document is written into profile/records directly (built by the record logic from
the same events), so the test does not depend on the runtime computing groups.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from derivations.profiles.records import Records
from pipeline.catalog import Catalog, load_catalog
from pipeline.runtime.topics import Names, ensure_topics, pipeline_topics
from tests.fixtures.stack import ROOT

pytestmark = pytest.mark.integration

CATALOG = """\
collections:
  segment/events:
    schema: {schemas}/event.schema.yaml
    key: [/event]
    partitions: 2
  profile/events:
    schema: {schemas}/profile-event.schema.yaml
    key: [/id]
    partitions: 2
  profile/group-members:
    schema: {schemas}/profile-group-member.schema.yaml
    key: [/id]
    partitions: 2
  profile/records:
    schema: {schemas}/profile-record.schema.yaml
    key: [/id]
    partitions: 2
profiles:
  events: profile/events
  records: profile/records
  groupVendor: 100
  properties:
    ltv:        {{type: float, from: {{events: [purchase], path: /data/total, aggregate: sum}}}}
    lastCartAt: {{type: date, from: {{events: [addToCart], path: /occurredAt, aggregate: max}}}}
  groups:
    high-value-abandoners:
      rules:
        - {{property: ltv, op: gt, value: 50}}
        - {{property: lastCartAt, op: inTheLast, value: 3d}}
    vip: {{manual: true}}
"""

MS = 1_714_600_000_000  # record timestamps: arrival order only


def eid(n: int) -> str:
    return f"e0000000-0000-4000-8000-{n:012d}"


EVENTS: list[dict[str, Any]] = [
    # device d1's anonymous purchase before it signs in: merged into 42
    {"id": eid(1), "type": "purchase", "anonymousId": "d1",
     "occurredAt": "2024-05-01T10:00:00Z", "data": {"total": 40.5}},
    {"id": eid(2), "type": "signin", "userId": 42, "anonymousId": "d1",
     "occurredAt": "2024-05-01T10:05:00Z"},
    {"id": eid(3), "type": "purchase", "userId": 42,
     "occurredAt": "2024-05-02T10:00:00Z", "data": {"total": "80"}},
    {"id": eid(4), "type": "addToCart", "userId": "42",
     "occurredAt": "2024-05-03T09:00:00Z", "data": {"sku": "a"}},
    # another person's purchase, and an invalid event (no type: a dead letter)
    {"id": eid(5), "type": "purchase", "userId": 7,
     "occurredAt": "2024-05-02T10:00:00Z", "data": {"total": 999}},
    {"id": eid(6), "userId": 42, "occurredAt": "2024-05-02T10:00:00Z", "data": {"total": 999}},
]  # fmt: skip
REDELIVERY = {**EVENTS[2], "occurredAt": "2024-05-02T11:00:00Z"}  # id 3 again: changes nothing


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    directory = tmp_path / "shop"
    directory.mkdir()
    (directory / "shop.yaml").write_text(CATALOG.format(schemas=ROOT / "schemas"))
    return directory


def record_42(catalog: Catalog) -> dict[str, Any]:
    """The document the records stage builds from 42's events (1 to 4), in group `vip` by hand."""
    assert catalog.profiles is not None
    records = Records.of(catalog.profiles)
    state = records.empty()
    for i, event in enumerate(EVENTS[:4]):
        state = records.apply(state, event, MS + i, event.get("anonymousId"))
    return records.document("42", state, ["high-value-abandoners", "vip"])


async def write(broker: str, catalog: Catalog, names: Names) -> None:
    await ensure_topics(broker, pipeline_topics(catalog, names))
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        events_topic = names.collection("profile/events")
        sent = [(event, MS + i) for i, event in enumerate(EVENTS)] + [(REDELIVERY, MS + 100)]
        for n, (event, ms) in enumerate(sent):
            await producer.send_and_wait(
                events_topic, orjson.dumps(event), key=event["id"].encode(),
                partition=n % 2, timestamp_ms=ms,
            )  # fmt: skip
        records_topic = names.collection("profile/records")
        for doc in (record_42(catalog), {"id": "7", "anonymousIds": [], "properties": {},
                                         "groups": [], "createdAt": "2024-05-02T10:00:00Z",
                                         "updatedAt": "2024-05-02T10:00:00Z"}):  # fmt: skip
            await producer.send_and_wait(
                records_topic, orjson.dumps(doc), key=orjson.dumps([doc["id"]])
            )
    finally:
        await producer.stop()


def segflow(catalog: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.tools.cli", "--catalog", str(catalog), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


async def test_explain_prints_each_rule_its_value_and_the_events_that_set_it(
    broker: str, shop: Path
) -> None:
    catalog = load_catalog(shop)
    prefix = f"t{uuid.uuid4().hex[:10]}."
    await write(broker, catalog, Names(prefix))
    env = {**os.environ, "SEGFLOW_BROKER": broker, "SEGFLOW_TOPIC_PREFIX": prefix}

    at = "2024-05-04T00:00:00Z"
    result = segflow(shop, env, "explain", "42", "high-value-abandoners", "--at", at)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "record 42 in group high-value-abandoners (match: all): member — all 2 rules hold",
        "  ltv gt 50: held — ltv is 120.5",
        "    set by 2 events (sum), newest first:",
        f"      {eid(3)} purchase 2024-05-02T10:00:00Z: 80.0",
        f"      {eid(1)} purchase 2024-05-01T10:00:00Z: 40.5",
        "  lastCartAt inTheLast 3d: held — lastCartAt is 2024-05-03T09:00:00Z;"
        " flips to not held at 2024-05-06T09:00:00Z",
        f"    set by event {eid(4)} addToCart 2024-05-03T09:00:00Z (max)",
        "  the group's next change with no new event: 2024-05-06T09:00:00Z (leaves)",
        "  evaluated at 2024-05-04T00:00:00Z; the record's groups agree (member)",
    ]

    # On the wall clock (long after 2024) the cart is old: the document still says member.
    now = segflow(shop, env, "explain", "42", "high-value-abandoners")
    assert now.returncode == 0, now.stderr
    lines = now.stdout.splitlines()
    assert lines[0].startswith("record 42 in group high-value-abandoners (match: all): not a")
    assert "the record's groups say member, the rules now say not a member" in lines[-1]

    manual = segflow(shop, env, "explain", "42", "vip")
    assert manual.returncode == 0, manual.stderr
    assert manual.stdout.splitlines()[0] == (
        "record 42 in group vip: manual (members added by hand): member — its groups list it"
    )
    other = segflow(shop, env, "explain", "7", "high-value-abandoners", "--at", at)
    assert other.returncode == 0, other.stderr
    # 7's record document shows no purchase: the events read do not rebuild it, and say so
    assert "    not rebuilt: the 1 event(s) read that it takes give 999.0 (sum)" in other.stdout


async def test_explain_names_what_is_wrong(broker: str, shop: Path) -> None:
    catalog = load_catalog(shop)
    prefix = f"t{uuid.uuid4().hex[:10]}."
    await write(broker, catalog, Names(prefix))
    env = {**os.environ, "SEGFLOW_BROKER": broker, "SEGFLOW_TOPIC_PREFIX": prefix}

    group = segflow(shop, env, "explain", "42", "high-value")
    assert group.returncode == 2 and group.stdout == ""
    assert group.stderr.strip() == (
        "segflow: unknown group 'high-value' (did you mean 'high-value-abandoners'?);"
        " the catalog's groups: 'high-value-abandoners' or 'vip'"
    )
    merged = segflow(shop, env, "explain", "anon:d1", "vip")
    assert merged.returncode == 2
    assert merged.stderr.strip() == (
        f"segflow: record 'anon:d1' is not in {prefix}profile.records;"
        " 'd1' is an anonymousId of record '42' (merged into it)"
    )
    typo = segflow(shop, env, "explain", "42x", "vip")
    assert typo.returncode == 2
    assert "record '42x' is not in" in typo.stderr and "(did you mean '42'?)" in typo.stderr
    usage = segflow(shop, env, "explain", "42")
    assert usage.returncode == 2 and "group" in usage.stderr
