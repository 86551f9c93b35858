"""The two profile stages as the runtime runs them, over simulated topics: merge equivalence.

The identity and records tasks run per partition over in-memory queues that stand for the topics
between them, in random batch sizes and random interleavings of partitions, with random crashes
(a batch whose outputs were written but whose state was never committed, then processed again).
With unique properties the records stage's claims go through the unique stage and its answers
come back, in the same random order. The records they leave must equal an independent
sequential reference: every event applied to the record of the userId its anonymousId finally
links to, as if it had carried that userId from the start (SPEC 8.2), with the aggregates computed
directly, and each unique value kept by its senior record only.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derivations.profiles import uniqueness
from derivations.profiles.groups import compile_groups
from derivations.profiles.instants import from_epoch_ns
from pipeline.catalog import Catalog, load_catalog
from pipeline.runtime.derive import make_task
from pipeline.runtime.task import BatchResult
from pipeline.runtime.topics import partition_for

ROOT = Path(__file__).resolve().parents[2]
CATALOG = """
collections:
  profile/events:
    schema: {schemas}/profile-event.schema.yaml
    key: [/id]
    partitions: {events}
    dedup: 7d
  profile/group-members:
    schema: {schemas}/profile-group-member.schema.yaml
    key: [/id]
    partitions: {events}
    dedup: 7d
  profile/records:
    schema: {schemas}/profile-record.schema.yaml
    key: [/id]
    partitions: {records}
  segment/events:
    schema: {schemas}/event.schema.yaml
    key: [/event]
    partitions: 2
profiles:
  groupVendor: 7
  groups:
    big: {{rules: [{{property: total, op: gt, value: 50}}]}}
    tagged-a: {{rules: [{{property: label, op: eq, value: a}}]}}
    handle-b: {{rules: [{{property: handle, op: eq, value: b}}]}}
    not-viewed-a: {{rules: [{{property: pages, op: ne, value: a}}]}}
    busy-or-c:
      match: any
      rules: [{{property: n, op: gte, value: 5}}, {{property: pages, op: in, value: [c]}}]
    bought-lately: {{rules: [{{property: lastBuy, op: inTheLast, value: 1d}}]}}
    vip: {{manual: true}}
  properties:
    n:      {{type: integer, from: {{events: "*", aggregate: count}}}}
    total:  {{type: integer, from: {{events: [buy], path: /data/amount, aggregate: sum}}}}
    label:  {{type: string, from: {{events: [tag], path: /data/label, aggregate: latest}}}}
    first:  {{type: string, from: {{events: [tag], path: /data/label, aggregate: earliest}}}}
    pages:
      type: string
      array: true
      from: {{events: [view], path: /data/label, aggregate: distinct}}
    lastBuy: {{type: date, from: {{events: [buy], path: /occurredAt, aggregate: max}}}}
    handle:
      type: string
      unique: true
      from: {{events: [tag], path: /data/label, aggregate: latest}}
    buys:   {{type: integer, unique: true, from: {{events: [buy], aggregate: count}}}}
"""
UNIQUE = ["handle", "buys"]
NOW_NS = 1_714_651_200 * 10**9
"""The clock the model runs at, 2024-05-02T12:00:00Z: among the events' occurredAt."""


class State(dict[bytes, bytes]):
    """A partition's committed state (what RocksDB holds after `apply`)."""

    def get(self, key: bytes, default: Any = None) -> bytes | None:  # type: ignore[override]
        return super().get(key, default)

    def expired(self, cutoff: int, limit: int) -> tuple[dict[bytes, bytes | None], list[bytes]]:
        return {}, []  # the events lie within one dedup window (tests/unit/test_dedup_expiry.py)

    def commit(self, result: BatchResult) -> None:
        for key, value in result.changes.items():
            if value is None:
                self.pop(key, None)
            else:
                self[key] = value


def catalog(tmp: Path, events: int, records: int) -> Catalog:
    path = tmp / f"catalog-{events}-{records}.yaml"
    text = CATALOG.format(schemas=ROOT / "schemas", events=events, records=records)
    path.write_text(text)
    return load_catalog(path, env={})


def run(
    cat: Catalog, events: list[tuple[dict[str, Any], int]], rng: random.Random
) -> dict[str, dict[str, Any]]:
    """Every stage over `events` (document, arrival ms); the records documents left at the end."""
    sources = sorted({d.source for d in cat.derivations.values()})
    tasks = {
        source: make_task(cat, source, lambda name: name, lambda: NOW_NS) for source in sources
    }
    partitions = {source: cat.collections[source].partitions for source in sources}
    queues: dict[str, dict[int, deque[tuple[Any, int]]]] = {
        source: defaultdict(deque) for source in sources
    }
    states = {source: [State() for _ in range(partitions[source])] for source in sources}
    for doc, ms in events:
        source = "profile/group-members" if "group" in doc else "profile/events"
        queues[source][partition_for(tasks[source].shuffle_key(doc), partitions[source])].append(
            (doc, ms)
        )
    table: dict[str, dict[str, Any]] = {}
    changes: dict[tuple[str, str], int] = {}
    """segment/events as segment/memberships reads them: per (user, group), the change number
    of the last join or leave (a replayed change has the same id and number)."""
    seen_changes: set[str] = set()
    clock = max((ms for _, ms in events), default=0)

    def step(source: str) -> None:
        task = tasks[source]
        partition = rng.choice([p for p, q in queues[source].items() if q])
        queue = queues[source][partition]
        batch = [queue[i] for i in range(min(len(queue), rng.randint(1, 6)))]
        for attempt in range(2):
            result = task.process_documents(batch, states[source][partition])  # type: ignore[arg-type]
            for output, key, value in result.documents:
                name = output.spec.name
                if name == "segment/events":
                    change = orjson.loads(value)
                    if change["event"] in seen_changes:
                        continue  # a redelivery
                    seen_changes.add(change["event"])
                    pair = (change["user"], change["segment"]["name"])
                    joined = "remove" not in change
                    number = changes.get(pair, 0) + 1
                    assert joined == (number % 2 == 1), f"{pair}: a join after a join"
                    changes[pair] = number
                elif name == "profile/records":
                    if value is None:
                        table.pop(orjson.loads(key)[0], None)
                    else:
                        table[orjson.loads(key)[0]] = orjson.loads(value)
                else:
                    target = partition_for(key, partitions[name]) if output.by_key else partition
                    queues[name][target].append((orjson.loads(value), clock))
            if attempt == 0 and rng.random() < 0.2:
                continue  # a crash: outputs written, state not committed, the batch runs again
            states[source][partition].commit(result)
            break
        for _ in batch:
            queue.popleft()

    entering = ("profile/events", "profile/group-members")
    while True:
        busy = [source for source in sources if any(queues[source].values())]
        if not busy:
            members = {pair for pair, number in changes.items() if number % 2}
            for record_id, doc in table.items():
                assert {g for r, g in members if r == record_id} == set(doc["groups"])
            assert {r for r, _ in members} <= set(table), "a merged-away record left its groups"
            return table
        # events enter at their own pace: half the steps while any are left
        first = [s for s in busy if s in entering]
        if first and (len(first) == len(busy) or rng.random() < 0.5):
            step(rng.choice(first))
        else:
            step(rng.choice([s for s in busy if s not in entering]))


def reference(events: list[tuple[dict[str, Any], int]], cat: Catalog) -> dict[str, dict[str, Any]]:
    """Each event to its final record, then every property computed directly (SPEC 8.2, 8.3)."""
    link: dict[str, str] = {}
    for doc, _ in events:  # a device links on its first identified event, in arrival order
        if "anonymousId" in doc and "userId" in doc:
            link.setdefault(doc["anonymousId"], str(doc["userId"]))
    by_record: dict[str, list[tuple[dict[str, Any], int]]] = defaultdict(list)
    manual: dict[str, list[tuple[dict[str, Any], int]]] = defaultdict(list)
    devices: dict[str, set[str]] = defaultdict(set)
    seen: set[str] = set()
    for doc, ms in events:
        if doc["id"] in seen:
            continue
        seen.add(doc["id"])
        anonymous = doc.get("anonymousId")
        if "userId" in doc:
            record = str(doc["userId"])
            if anonymous is not None and link[anonymous] == record:
                devices[record].add(anonymous)
        elif anonymous in link:
            record = link[anonymous]
            devices[record].add(anonymous)
        else:
            record = "anon:" + anonymous
            devices[record].add(anonymous)
        (manual if "group" in doc else by_record)[record].append((doc, ms))
    out = {}
    for record in by_record.keys() | manual.keys():
        applied = by_record[record]
        order = sorted(applied, key=lambda e: (e[0]["occurredAt"], e[1], e[0]["id"]))
        stamped = [d["occurredAt"] for d, _ in applied + manual[record]]
        tags = [d["data"]["label"] for d, _ in order if d["type"] == "tag"]
        buys = [d for d, _ in order if d["type"] == "buy"]
        views = sorted({d["data"]["label"] for d, _ in order if d["type"] == "view"})
        properties: dict[str, Any] = {
            "n": len(order),
            "total": sum(d["data"]["amount"] for d in buys),
            "buys": len(buys),
        }
        if tags:
            properties["label"] = properties["handle"] = tags[-1]
            first_at = min(d["occurredAt"] for d, _ in order if d["type"] == "tag")
            ties = [d for d, _ in order if d["type"] == "tag" and d["occurredAt"] == first_at]
            properties["first"] = ties[-1]["data"]["label"]
        if views:
            properties["pages"] = views
        if buys:
            properties["lastBuy"] = max(d["occurredAt"] for d in buys)
        doc = {"id": record, "anonymousIds": sorted(devices[record]), "properties": properties}
        if not record.startswith("anon:"):
            doc["userId"] = record
        latest = max(
            manual[record], key=lambda e: (e[0]["occurredAt"], e[1], e[0]["id"]), default=None
        )
        doc["groups"] = ["vip"] if latest is not None and "remove" not in latest[0] else []
        doc["createdAt"] = min(stamped)
        doc["updatedAt"] = max(stamped)
        out[record] = doc
    shown = uniqueness.reference(list(out.values()), UNIQUE)
    now = from_epoch_ns(NOW_NS)
    assert cat.profiles is not None
    groups = compile_groups(cat.profiles)
    for doc in shown:
        held = [name for name, group in groups.items() if group.holds(doc["properties"], now)]
        doc["groups"] = sorted(doc["groups"] + held)
    return {doc["id"]: doc for doc in shown}


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[dict[str, Any], int]]:
    """Events of a few people and devices, in any interleaving, some redelivered."""
    people = draw(st.integers(1, 4))
    devices = draw(st.integers(1, 6))
    count = draw(st.integers(1, 40))
    events: list[tuple[dict[str, Any], int]] = []
    for i in range(count):
        user = draw(st.one_of(st.none(), st.integers(0, people - 1)))
        device = draw(st.one_of(st.none(), st.integers(0, devices - 1)))
        if user is None and device is None:
            device = 0
        kind = draw(st.sampled_from(["view", "tag", "buy", "other"]))
        doc: dict[str, Any] = {
            "id": str(uuid.UUID(int=draw(st.integers(0, 2**32)) * 2**64 + i)),
            "type": kind,
            # few distinct instants, so ties of occurredAt are common
            "occurredAt": f"2024-05-0{draw(st.integers(1, 3))}T10:00:00Z",
        }
        if user is not None:
            # an integer userId is the same person as its decimal string
            doc["userId"] = draw(st.sampled_from([str(user), user]))
        if device is not None:
            doc["anonymousId"] = f"d{device}"
        if draw(st.integers(0, 5)) == 0:  # a manual membership instead
            doc = {"id": doc["id"], "group": "vip", "occurredAt": doc["occurredAt"]}
            if user is not None and (device is None or draw(st.booleans())):
                doc["userId"] = str(user)
            else:
                doc["anonymousId"] = f"d{device if device is not None else 0}"
            if draw(st.booleans()):
                doc["remove"] = True
        elif kind in ("view", "tag"):
            doc["data"] = {"label": draw(st.sampled_from(["a", "b", "c"]))}
        elif kind == "buy":
            doc["data"] = {"amount": draw(st.integers(1, 100))}
        events.append((doc, 1000 + i))
        if events and draw(st.booleans()) and draw(st.booleans()):
            events.append((events[draw(st.integers(0, len(events) - 1))][0], 1000 + i))
    return events


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=streams(),
    partitions=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    seed=st.integers(0, 2**16),
)
def test_records_equal_the_sequential_reference(
    tmp_path_factory: Any, events: list[tuple[dict[str, Any], int]], partitions: Any, seed: int
) -> None:
    cat = catalog(tmp_path_factory.getbasetemp(), *partitions)
    assert run(cat, events, random.Random(seed)) == reference(events, cat)


def test_grouparoos_flow_ends_in_one_record_with_every_event(tmp_path: Path) -> None:
    """SPEC 8.2: anon abc123 x2, abc123+100, def456+100, zzz999 alone (2 records), zzz999+100."""
    steps = [
        {"anonymousId": "abc123"},
        {"anonymousId": "abc123"},
        {"anonymousId": "abc123", "userId": 100},
        {"anonymousId": "def456", "userId": 100},
        {"anonymousId": "zzz999"},
        {"anonymousId": "zzz999", "userId": 100},
    ]
    events = [
        (
            {"id": str(uuid.UUID(int=i)), "type": "view", "occurredAt": f"2024-05-01T10:0{i}:00Z"}
            | {"data": {"label": "x"}}
            | step,
            1000 + i,
        )
        for i, step in enumerate(steps)
    ]
    cat = catalog(tmp_path, 4, 4)
    assert sorted(run(cat, events[:5], random.Random(1))) == ["100", "anon:zzz999"]
    (record,) = run(cat, events, random.Random(1)).values()
    assert record["id"] == "100"
    assert record["anonymousIds"] == ["abc123", "def456", "zzz999"]
    assert record["properties"]["n"] == 6
    assert record["createdAt"] == "2024-05-01T10:00:00Z"
