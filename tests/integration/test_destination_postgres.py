"""The Postgres destination (SPEC 9) against a second database of the session's embedded
Postgres, driven through open/positions/apply/flush/close with records built here (no broker)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson
import psycopg
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from psycopg import sql
from psycopg.conninfo import make_conninfo

from materializations.destinations.postgres import PostgresDestination
from materializations.postgres import DocumentError
from pipeline.catalog import BindingSpec, Catalog, MaterializationSpec
from pipeline.catalog.profiles import forwarded
from pipeline.catalog.specs import DestinationSpec
from pipeline.runtime.worker import Worker
from tests.fixtures.stack import Namespace

pytestmark = pytest.mark.integration

RECORDS = BindingSpec("profile/records", None, records=True)
FORWARDED = BindingSpec(forwarded("profile/records"), None)
TOPIC, EVENTS_TOPIC = "t.profile.records", "t.profile.records.forwarded"
TOPICS = {TOPIC: RECORDS, EVENTS_TOPIC: FORWARDED}
SPEC = MaterializationSpec("destination.crm", "destination", {}, (RECORDS, FORWARDED), True)
"""As the worker runs a destination (`materializations.destinations.materialization_of`)."""


@pytest.fixture
def target(postgres: str) -> Iterator[str]:
    """DSN of a database of this test's own on the embedded server (not Segflow's)."""
    name = f"dest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    yield make_conninfo(postgres, dbname=name)
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))


def destination(dsn: str, mode: str = "sync", schema: str = "crm", **more: Any) -> DestinationSpec:
    return DestinationSpec(
        name=more.pop("name", "crm"),
        kind="postgres",
        config={"dsn": dsn, "schema": schema, "table": "contacts"},
        groups={"vip": "VIP", "high-value": "HV"},
        properties={"email": "email", "uid": "userId", "plan": "plan"},
        mode=mode,
        **more,
    )


def sink_of(spec: DestinationSpec, **more: Any) -> PostgresDestination:
    return PostgresDestination(
        spec, SPEC, TOPICS, settings_postgres=None, settings_schema="public", **more
    )


def record(id_: str, *groups: str, **properties: Any) -> dict[str, Any]:
    """A profile/records document."""
    return {
        "id": id_,
        **({} if id_.startswith("anon:") else {"userId": id_}),
        "anonymousIds": [],
        "properties": properties,
        "groups": sorted(groups),
        "createdAt": "2024-05-01T10:00:00Z",
        "updatedAt": "2024-05-01T10:00:00Z",
    }


class Feed:
    """Consumer records at increasing offsets per partition, as a consumer would fetch them."""

    def __init__(self) -> None:
        self.next: Counter[tuple[str, int]] = Counter()

    def _at(self, topic: str, partition: int, key: bytes, value: bytes | None) -> ConsumerRecord:
        offset = self.next[topic, partition]
        self.next[topic, partition] += 1
        size = len(value) if value is not None else -1
        return ConsumerRecord(
            topic, partition, offset, 1714557600000, 0, key, value, None, 0, size, ()
        )

    def records(self, *docs: dict[str, Any] | str, partition: int = 0) -> list[ConsumerRecord]:
        """Records of documents, or tombstones for ids given as strings; keys `["<id>"]`."""
        return [
            self._at(TOPIC, partition, orjson.dumps([doc]), None)
            if isinstance(doc, str)
            else self._at(TOPIC, partition, orjson.dumps([doc["id"]]), orjson.dumps(doc))
            for doc in docs
        ]

    def events(self, *pairs: tuple[dict[str, Any], dict[str, Any]]) -> list[ConsumerRecord]:
        """Forwarded events: (product event, the record's document after it)."""
        return [
            self._at(
                EVENTS_TOPIC,
                0,
                orjson.dumps([doc["id"]]),
                orjson.dumps({"r": doc["id"], "event": event, "document": doc}),
            )
            for event, doc in pairs
        ]


def event(type_: str, user: str, **more: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": type_, "userId": user, **more}


async def flush(
    sink: PostgresDestination, *batches: Sequence[ConsumerRecord]
) -> dict[TopicPartition, int]:
    """Each batch applied (per partition, in offset order) and flushed."""
    done: dict[TopicPartition, int] = {}
    for batch in batches:
        by_tp: dict[tuple[str, int], list[ConsumerRecord]] = {}
        for r in batch:
            by_tp.setdefault((r.topic, r.partition), []).append(r)
        for (topic, _), some in by_tp.items():
            await sink.apply(TOPICS[topic], some)
        done |= await sink.flush()
    return done


def table(dsn: str, schema: str = "crm") -> dict[str, tuple[Any, list[str], datetime]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL("select record, properties, groups, updated_at from {}").format(
                sql.Identifier(schema, "contacts")
            )
        ).fetchall()
    return {r: (p, g, at) for r, p, g, at in rows}


def values(dsn: str, schema: str = "crm") -> dict[str, tuple[Any, list[str]]]:
    """The table without `updated_at`."""
    return {r: (p, g) for r, (p, g, _) in table(dsn, schema).items()}


def events_table(dsn: str, schema: str = "crm") -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            sql.SQL(
                "select event::text, record, type, occurred_at, properties, groups, document"
                " from {} order by occurred_at, event"
            ).format(sql.Identifier(schema, "contacts_events"))
        ).fetchall()


@pytest.fixture
def feed() -> Feed:
    return Feed()


async def test_open_creates_the_tables_in_the_target_database(target: str) -> None:
    async with sink_of(destination(target, events=("purchase",))):
        pass
    with psycopg.connect(target) as conn:
        columns = conn.execute(
            "select table_name, column_name, data_type from information_schema.columns"
            " where table_schema = 'crm' order by table_name, ordinal_position"
        ).fetchall()
    shape: dict[str, list[tuple[str, str]]] = {}
    for name, column, kind in columns:
        shape.setdefault(name, []).append((column, kind))
    assert shape == {
        "contacts": [
            ("record", "text"),
            ("properties", "jsonb"),
            ("groups", "ARRAY"),
            ("updated_at", "timestamp with time zone"),
        ],
        "contacts_events": [
            ("event", "uuid"),
            ("record", "text"),
            ("type", "text"),
            ("occurred_at", "timestamp with time zone"),
            ("properties", "jsonb"),
            ("groups", "ARRAY"),
            ("document", "jsonb"),
        ],
        "segflow_destination_checkpoints": [
            ("destination", "text"),
            ("topic", "text"),
            ("partition", "integer"),
            ("next_offset", "bigint"),
        ],
    }


async def test_sync_creates_updates_retags_and_deletes_leavers_and_merged(
    target: str, feed: Feed
) -> None:
    async with sink_of(destination(target)) as sink:
        await flush(
            sink,
            feed.records(
                record("u1", "vip", email="a@x", plan="pro", city="Oslo"),
                record("u2", "vip", email="b@x"),
                record("u3", email="c@x"),  # in no tracked group: not in
                record("anon:d1", "high-value", email="d@x"),
            ),
        )
        assert values(target) == {
            "u1": ({"email": "a@x", "uid": "u1", "plan": "pro"}, ["VIP"]),
            "u2": ({"email": "b@x", "uid": "u2"}, ["VIP"]),
            "anon:d1": ({"email": "d@x"}, ["HV"]),
        }
        before = table(target)
        await flush(
            sink,
            feed.records(
                record("u1", "vip", email="a@y", plan="pro", city="Oslo"),  # a property
                record("u2", "vip", "high-value", email="b@x"),  # a tag
                record("u3", "other", email="c@x"),  # still not in
                "anon:d1",  # merged away
            ),
        )
        after = table(target)
        assert values(target) == {
            "u1": ({"email": "a@y", "uid": "u1", "plan": "pro"}, ["VIP"]),
            "u2": ({"email": "b@x", "uid": "u2"}, ["HV", "VIP"]),
        }
        assert after["u1"][2] > before["u1"][2] and after["u2"][2] > before["u2"][2]
        await flush(
            sink,
            feed.records(
                record("u1", "vip", email="a@y", plan="pro", city="Bergen"),  # nothing mapped
                record("u2", email="b@x"),  # left the last tracked group
            ),
        )
        assert table(target) == {"u1": after["u1"]}  # u1 not rewritten
        assert (sink.upserted, sink.deleted, sink.skipped) == (5, 2, 0)


async def test_additive_keeps_leavers_and_merged_records_without_tags(
    target: str, feed: Feed
) -> None:
    async with sink_of(destination(target, "additive")) as sink:
        await flush(
            sink,
            feed.records(
                record("u1", "vip", email="a@x"),
                record("u2", "vip", email="b@x"),
                record("anon:d1", "vip", email="d@x"),
            ),
        )
        await flush(
            sink,
            feed.records(
                record("u1", email="a@y"),  # left, still exists: current properties
                "anon:d1",  # merged away: properties as they were
                record("u3", email="c@x"),  # never in: nothing
            ),
        )
        assert values(target) == {
            "u1": ({"email": "a@y", "uid": "u1"}, []),
            "u2": ({"email": "b@x", "uid": "u2"}, ["VIP"]),
            "anon:d1": ({"email": "d@x"}, []),
        }
        left = table(target)
        await flush(sink, feed.records(record("u1", email="a@y"), "anon:d1"))
        assert table(target) == left  # leaving again changes nothing
        await flush(sink, feed.records(record("u1", "high-value", email="a@y")))
        assert values(target)["u1"] == ({"email": "a@y", "uid": "u1"}, ["HV"])
        assert (sink.upserted, sink.deleted) == (6, 0)


async def test_enrich_updates_existing_rows_and_never_inserts(target: str, feed: Feed) -> None:
    spec = destination(target, "enrich")
    async with sink_of(spec) as sink:
        with psycopg.connect(target) as conn:
            conn.execute(
                "insert into crm.contacts values ('u1', '{\"note\": 1}', '{}', null),"
                " ('u2', '{}', '{}', null), ('anon:d1', '{}', '{}', null)"
            )
        await flush(
            sink,
            feed.records(
                record("u1", "vip", email="a@x"),
                record("u2", "vip", email="b@x"),
                record("anon:d1", "vip", email="d@x"),
                record("u9", "vip", email="z@x"),  # not in the table: skipped
                record("u8", email="y@x"),  # not in, no row: nothing
            ),
        )
        assert values(target) == {
            "u1": ({"email": "a@x", "uid": "u1"}, ["VIP"]),
            "u2": ({"email": "b@x", "uid": "u2"}, ["VIP"]),
            "anon:d1": ({"email": "d@x"}, ["VIP"]),
        }
        assert sink.skipped == 1
        await flush(
            sink,
            feed.records(
                record("u1", "vip", "high-value", email="a@x"),  # a tag
                record("u2", email="b@y"),  # left
                "anon:d1",  # merged away
                record("u9", "vip", email="z@y"),  # still skipped
            ),
        )
        assert values(target) == {
            "u1": ({"email": "a@x", "uid": "u1"}, ["HV", "VIP"]),
            "u2": ({"email": "b@y", "uid": "u2"}, []),
            "anon:d1": ({"email": "d@x"}, []),
        }
        assert (sink.upserted, sink.deleted, sink.skipped) == (6, 0, 2)


async def test_only_the_newest_document_of_a_record_in_a_write_counts(
    target: str, feed: Feed
) -> None:
    async with sink_of(destination(target)) as sink:
        await sink.apply(
            RECORDS,
            feed.records(
                record("u1", "vip", email="1"),
                record("u2", "vip", email="1"),
                record("u1", "vip", email="2"),
            ),
        )
        # Another fetch before the write: combined with the first.
        await sink.apply(
            RECORDS,
            feed.records(record("u2", email="2"), record("u1", "high-value", email="3")),
        )
        assert await sink.flush() == {TopicPartition(TOPIC, 0): 5}
        assert values(target) == {"u1": ({"email": "3", "uid": "u1"}, ["HV"])}
        assert sink.sizes.sum == 2 and (sink.upserted, sink.deleted) == (1, 0)


async def test_a_restart_resumes_from_its_checkpoint_as_if_it_never_stopped(
    target: str, feed: Feed
) -> None:
    """Two partitions; a replayed batch (an older sink's, or after a lost commit) changes
    nothing, and the table ends as a run that never stopped leaves it."""
    a = feed.records(record("u1", "vip", email="1"), record("u2", "vip", email="1"))
    b = feed.records(record("u3", "vip", email="1"), record("u4", "high-value"), partition=1)
    c = feed.records(record("u1", email="2"), record("u2", "vip", "high-value", email="2"))
    d = feed.records("u3", record("u5", "vip"), partition=1)
    e = feed.records(record("u1", "vip", email="3"), record("u6", "vip"))
    for schema in ("crm", "reference"):
        async with sink_of(destination(target, schema=schema)) as sink:
            await flush(sink, a, b, c, d)

    restarted = sink_of(destination(target))
    async with restarted:
        tps = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1), TopicPartition(TOPIC, 2)]
        assert await restarted.positions(tps) == {tps[0]: 4, tps[1]: 4, tps[2]: None}
        before = table(target)
        assert await flush(restarted, a, b, c) == {tps[0]: 4, tps[1]: 2}
        assert table(target) == before  # a replay changes nothing, not even updated_at
        assert (restarted.upserted, restarted.deleted) == (0, 0)
        await flush(restarted, e)
    async with sink_of(destination(target, schema="reference")) as sink:
        await flush(sink, e)
    assert values(target) == values(target, "reference")
    assert values(target) == {
        "u1": ({"email": "3", "uid": "u1"}, ["VIP"]),
        "u2": ({"email": "2", "uid": "u2"}, ["HV", "VIP"]),
        "u4": ({"uid": "u4"}, ["HV"]),
        "u5": ({"uid": "u5"}, ["VIP"]),
        "u6": ({"uid": "u6"}, ["VIP"]),
    }


async def test_enriched_events_are_written_once(target: str, feed: Feed) -> None:
    spec = destination(target, events=("purchase",))
    bought = event("purchase", "u1", occurredAt="2024-05-01T11:00:00+02:00", data={"total": 9})
    later = event("purchase", "u1")  # no occurredAt: the record's timestamp stands in
    after = record("u1", "vip", email="a@x", plan="pro")
    out = record("u2", email="b@x")
    async with sink_of(spec) as sink:
        batch = [
            *feed.records(after, out),
            *feed.events(
                (bought, after),
                (event("page", "u1"), after),  # not a listed type
                (event("purchase", "u2"), out),  # not in the destination
                (later, after),
                (bought, after),  # the same event again in the same write
            ),
        ]
        await flush(sink, batch)
        await flush(sink, feed.events((bought, after)))  # redelivered later
        assert sink.events == 2
    rows = events_table(target)
    mapped, tags = {"email": "a@x", "uid": "u1", "plan": "pro"}, ["VIP"]
    assert [(r[0], r[1], r[2], r[4], r[5]) for r in rows] == [
        (bought["id"], "u1", "purchase", mapped, tags),
        (later["id"], "u1", "purchase", mapped, tags),
    ]
    assert rows[0][3].isoformat() == "2024-05-01T09:00:00+00:00"
    assert rows[1][3].timestamp() == 1714557600
    assert rows[0][6] == {"event": bought, "record": "u1", "properties": mapped, "groups": tags}


async def test_enrich_forwards_events_only_of_records_the_table_has(
    target: str, feed: Feed
) -> None:
    spec = destination(target, "enrich", events=("purchase",))
    async with sink_of(spec) as sink:
        with psycopg.connect(target) as conn:
            conn.execute("insert into crm.contacts values ('u1', '{}', '{}', null)")
        u1, u2 = record("u1", "vip"), record("u2", "vip")
        kept = event("purchase", "u1")
        await flush(
            sink, [*feed.records(u1, u2), *feed.events((kept, u1), (event("purchase", "u2"), u2))]
        )
    assert [r[0] for r in events_table(target)] == [kept["id"]]


class Parking:
    """A dead-letter topic stand-in."""

    def __init__(self) -> None:
        self.parked: list[tuple[bytes, dict[str, str]]] = []

    async def __call__(self, body: bytes, headers: dict[str, str]) -> None:
        self.parked.append((body, headers))


async def test_records_postgres_rejects_are_parked_and_the_others_land(
    target: str, feed: Feed
) -> None:
    parking = Parking()
    spec = destination(target, events=("purchase",))
    good = record("u1", "vip", email="a@x")
    async with sink_of(spec, dead_letter=parking) as sink:
        broken = feed._at(TOPIC, 0, b"u9", b"{not json")
        nul = record("u2", "vip", email="a\u0000b")
        bad_event = event("purchase", "u1")
        bad_event["id"] = "not-a-uuid"
        await flush(
            sink,
            [broken, *feed.records(good, nul), *feed.events((bad_event, good))],
        )
        assert sink.parked == 3
    assert values(target) == {"u1": ({"email": "a@x", "uid": "u1"}, ["VIP"])}
    where = sorted((h["topic"], h["offset"], h["destination"]) for _, h in parking.parked)
    assert where == [(TOPIC, "0", "crm"), (TOPIC, "2", "crm"), (EVENTS_TOPIC, "0", "crm")]
    async with sink_of(spec) as sink:
        tps = [TopicPartition(TOPIC, 0), TopicPartition(EVENTS_TOPIC, 0)]
        assert await sink.positions(tps) == {tps[0]: 3, tps[1]: 1}


async def test_figures_name_the_counters(target: str, feed: Feed) -> None:
    async with sink_of(replace(destination(target), mode="additive")) as sink:
        await flush(sink, feed.records(record("u1", "vip")))
        figures = {f.name: f.value for f in sink.figures()}
    assert figures["destination_postgres_rows_upserted_total"] == 1
    assert figures["destination_postgres_rows_deleted_total"] == 0
    assert figures["destination_postgres_records_skipped_total"] == 0
    assert figures["destination_postgres_write_records"].count == 1  # type: ignore[union-attr]


async def test_a_document_without_a_dead_letter_topic_writes_nothing(
    target: str, feed: Feed
) -> None:
    async with sink_of(destination(target)) as sink:
        await sink.apply(
            RECORDS, [*feed.records(record("u1", "vip")), feed._at(TOPIC, 0, b"", b"[")]
        )
        with pytest.raises(DocumentError):
            await sink.flush()
        assert values(target) == {}
        assert await sink.positions([TopicPartition(TOPIC, 0)]) == {TopicPartition(TOPIC, 0): None}


# --- through a worker -------------------------------------------------------------------------


async def until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise TimeoutError("the destination did not catch up in time")
        await asyncio.sleep(0.2)


async def test_a_worker_keeps_a_postgres_destination(
    namespace: Namespace, catalog: Catalog, target: str
) -> None:
    """Product events in; the destination's rows and enriched events out, in another database."""
    spec = replace(
        destination(target, events=("purchase",), name="warehouse"),
        groups={"high-value": "HV", "vip": "VIP"},
        properties={"email": "email", "uid": "userId", "ltv": "ltv"},
    )
    worker = Worker(
        namespace.settings(),
        replace(catalog, destinations={"warehouse": spec}),
        bootstrap=namespace.bootstrap,
    )
    running = asyncio.create_task(worker.run())
    try:
        bought = event("purchase", "u1", occurredAt="2024-05-01T12:00:00Z", data={"total": 300})
        await namespace.produce(
            "profile/events",
            [
                event(
                    "identify", "u1", occurredAt="2024-05-01T11:00:00Z", data={"email": "a@x.io"}
                ),
                bought,
                event(
                    "identify", "u2", occurredAt="2024-05-01T11:00:00Z", data={"email": "b@x.io"}
                ),
                event("purchase", "u2", occurredAt="2024-05-01T12:00:00Z", data={"total": 10}),
            ],
        )
        expected = {"u1": ({"email": "a@x.io", "uid": "u1", "ltv": 300}, ["HV"])}

        def caught_up() -> bool:
            try:
                return values(target) == expected and len(events_table(target)) == 1
            except psycopg.errors.UndefinedTable:  # the sink has not opened yet
                return False

        await until(caught_up)
        assert events_table(target)[0][:3] == (bought["id"], "u1", "purchase")
        figures = {f.name: f.value for m in worker.sinks for f in m.sink.figures()}
        assert figures["destination_postgres_events_written_total"] == 1
    finally:
        worker.stop()
        await running
