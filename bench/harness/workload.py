"""The benchmark's workload: generated events, their expected rows, and fast pre-production.

Events come from the demo's generator (`pipeline.producers.generate.EventGenerator`), keyed by
user and partitioned as Segflow's own producers do (`partition_for(encode_key((user,)),
partitions)`), so per-user order in the topic is the generation order and
`tests.fixtures.events.reference` (sequential, straight from the spec) gives the rows every
implementation must end with.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pipeline.documents.pointers import encode_key
from pipeline.producers.generate import EventGenerator, Mix
from pipeline.runtime.batches import BatchWriter
from pipeline.runtime.produce import make_producer
from pipeline.runtime.topics import TOPIC_CONFIG, partition_for
from tests.fixtures.events import reference

PARTITIONS = 4
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Record = tuple[int, bytes, bytes]
"""(partition, key, value) of one event."""


WORKLOADS = ("demo", "toggles")
"""demo: the demo's mix (10,000 users, 500 segments, Zipf 1.1, 40% redeliveries).
toggles: few users and segments with adds and removes alike, so about a third of the events
flip a membership (a toggle, a row and a webhook POST each), 8% redeliveries."""

USERS = {"demo": 10_000, "toggles": 2_000}


def mix(users: int | None = None, workload: str = "demo") -> Mix:
    users = USERS[workload] if users is None else users
    if workload == "toggles":
        return Mix(users=users, segments=3, skew=0.0, remove_ratio=0.5, repeat_ratio=0.08)
    return Mix(users=users, segments=500, skew=1.1, remove_ratio=0.3, repeat_ratio=0.4)


def generate(
    count: int, users: int | None = None, seed: int = 1, workload: str = "demo"
) -> list[dict[str, Any]]:
    return EventGenerator(mix(users, workload), seed=seed).take(count)


def encode(event: dict[str, Any], partitions: int = PARTITIONS) -> Record:
    key = encode_key((event["user"],))
    return partition_for(key, partitions), key, orjson.dumps(event)


def micros(stamp: str | None) -> int | None:
    """An RFC 3339 instant as microseconds since the epoch (as Postgres' timestamptz compares)."""
    if stamp is None:
        return None
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (when - EPOCH) // timedelta(microseconds=1)


def membership_row(
    vendor: int,
    name: str,
    user: str,
    member: bool,
    value: str | None,
    first: int | None,
    last: int | None,
) -> bytes:
    return orjson.dumps([vendor, name, user, member, value, first, last])


def profile_row(user: str, document: Any) -> bytes:
    return orjson.dumps([user, orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode()])


def toggle_row(event: str, previous: str, remove: bool) -> bytes:
    return orjson.dumps([str(event), str(previous), bool(remove)])


def digest(rows: set[bytes]) -> str:
    h = hashlib.sha256()
    for row in sorted(rows):
        h.update(row)
        h.update(b"\n")
    return h.hexdigest()[:16]


@dataclass
class Expected:
    """The rows of the three tables, as sets of canonical rows, plus cheap aggregates."""

    memberships: set[bytes]
    profiles: set[bytes]
    toggles: set[bytes]
    members: int
    """Memberships with member = true."""
    last_seconds: int
    """Sum over memberships of `last` in whole seconds since the epoch."""
    toggle_ids: int
    digests: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.digests = {name: digest(rows) for name, rows in self.tables().items()}

    def tables(self) -> dict[str, set[bytes]]:
        return {
            "memberships": self.memberships,
            "profiles": self.profiles,
            "toggles": self.toggles,
        }

    def counts(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.tables().items()}


def expected(events: list[dict[str, Any]]) -> Expected:
    ref = reference(events)
    memberships = set()
    members = last_seconds = 0
    for m in ref["segment/memberships"]:
        last = micros(m["last"])
        memberships.add(
            membership_row(
                m["segment"]["vendor"],
                m["segment"]["name"],
                m["user"],
                m["member"],
                m.get("value"),
                micros(m.get("first")),
                last,
            )
        )
        members += bool(m["member"])
        last_seconds += (last or 0) // 1_000_000
    profiles = {profile_row(p["user"], p) for p in ref["segment/profiles"]}
    toggles = {
        toggle_row(t["event"], t["previous"]["event"], bool(t.get("remove")))
        for t in ref["segment/toggles"]
    }
    ids = len({t["event"] for t in ref["segment/toggles"]})
    return Expected(memberships, profiles, toggles, members, last_seconds, ids)


# --- Topics ------------------------------------------------------------------------------------


async def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=TOPIC_CONFIG)])
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, token: str) -> int:
    """Best effort: delete every topic whose name contains `token`; how many were deleted."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        names = [t for t in await admin.list_topics() if token in t]
        if names:
            await admin.delete_topics(names)
        return len(names)
    except Exception:
        return 0
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def produce(bootstrap: str, topic: str, records: list[Record], chunk: int = 50_000) -> float:
    """Send all records in aiokafka batches, wait for every ack; returns the seconds it took."""
    producer = make_producer(bootstrap, 5)
    await producer.start()
    started = time.monotonic()
    try:
        for i in range(0, len(records), chunk):
            writer = BatchWriter(producer)
            for partition, key, value in records[i : i + chunk]:
                writer.add(topic, partition, key, value)
            await writer.flush()
    finally:
        await producer.stop()
    return time.monotonic() - started
