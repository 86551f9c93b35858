"""The Postgres sink against the session's embedded Postgres (no broker: records are built here)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from aiokafka import TopicPartition
from psycopg import sql

from materializations.postgres import DocumentError, PostgresSink, load_queries
from pipeline.catalog import BindingSpec, Catalog, MaterializationSpec
from tests.fixtures.records import Record
from tests.integration.test_group_queries import GROUP_QUERIES
from tests.integration.test_profile_records_sink import PROFILE_QUERIES

pytestmark = pytest.mark.integration

QUERIES = Path(__file__).resolve().parents[2] / "docs" / "queries.sql"
MEMBERSHIPS = BindingSpec("segment/memberships", "segment_memberships")
PROFILES = BindingSpec("segment/profiles", "segment_profiles")
TOGGLES = BindingSpec("segment/toggles", "segment_toggles")


def records(
    binding: BindingSpec, docs: list[dict[str, Any]], *, start: int = 0, partition: int = 0
) -> list[Record]:
    topic = binding.source.replace("/", ".")
    return [
        Record(topic, partition, start + i, _key(binding, doc), orjson.dumps(doc))
        for i, doc in enumerate(docs)
    ]


def _key(binding: BindingSpec, doc: dict[str, Any]) -> bytes:
    if "segment" in doc and "event" not in doc:
        return orjson.dumps([doc["segment"]["vendor"], doc["segment"]["name"], doc["user"]])
    return str(doc.get("event") or doc["user"]).encode()


def membership(
    user: str, name: str = "dogs", vendor: int = 1, *, member: bool = True, **more: Any
) -> dict[str, Any]:
    doc = {
        "segment": {"vendor": vendor, "name": name},
        "user": user,
        "last": more.pop("last", "2021-01-16T17:09:34-04:00"),
        "member": member,
    }
    return doc | more


def profile(user: str, *segments: dict[str, Any]) -> dict[str, Any]:
    return {
        "user": user,
        "segments": [{k: v for k, v in s.items() if k != "user"} for s in segments],
    }


def toggle(
    user: str, timestamp: str, *, remove: bool = False, name: str = "dogs"
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event": str(uuid.uuid4()),
        "timestamp": timestamp,
        "user": user,
        "segment": {"vendor": 1, "name": name},
    }
    previous = {**doc, "event": str(uuid.uuid4()), "timestamp": "2021-01-01T00:00:00Z"}
    if remove:
        doc["remove"] = True
    else:
        previous["remove"] = True
    return doc | {"previous": previous}


def make_sink(
    catalog: Catalog,
    dsn: str,
    schema: str,
    bindings: tuple[BindingSpec, ...] | None = None,
    dead_letter: Any = None,
) -> PostgresSink:
    spec: MaterializationSpec = replace(
        catalog.materializations["postgres"],
        config={"dsn": dsn, "schema": schema},
        bindings=bindings or catalog.materializations["postgres"].bindings,
    )
    topics = {b.source.replace("/", "."): b for b in spec.bindings}
    return PostgresSink(spec, topics, dead_letter=dead_letter)


def rows(dsn: str, schema: str, table: str, order: str = "1") -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        query = sql.SQL("select * from {} order by " + order).format(sql.Identifier(schema, table))
        return conn.execute(query).fetchall()


def checkpoints(dsn: str, schema: str) -> list[tuple[Any, ...]]:
    return rows(dsn, schema, "segflow_checkpoints", "2, 3")


@pytest.fixture
def sink(catalog: Catalog, postgres: str, pg_schema: str) -> PostgresSink:
    return make_sink(catalog, postgres, pg_schema)


# --- Tables -----------------------------------------------------------------------------------


SPEC_COLUMNS = {
    "segment_memberships": [
        ("vendor", "integer"),
        ("segment_name", "text"),
        ("user_id", "text"),
        ("first", "timestamp with time zone"),
        ("last", "timestamp with time zone"),
        ("member", "boolean"),
        ("value", "text"),
        ("document", "jsonb"),
    ],
    "segment_profiles": [("user_id", "text"), ("segments", "json"), ("document", "jsonb")],
    "segment_toggles": [
        ("event", "uuid"),
        ("user_id", "text"),
        ("vendor", "integer"),
        ("segment_name", "text"),
        ("remove", "boolean"),
        ("timestamp", "timestamp with time zone"),
        ("previous_event", "uuid"),
        ("document", "jsonb"),
    ],
    "segflow_checkpoints": [
        ("materialization", "text"),
        ("topic", "text"),
        ("partition", "integer"),
        ("next_offset", "bigint"),
    ],
}
SPEC_KEYS = {
    "segment_memberships": ["vendor", "segment_name", "user_id"],
    "segment_profiles": ["user_id"],
    "segment_toggles": ["event"],
    "segflow_checkpoints": ["materialization", "topic", "partition"],
}


def _columns(dsn: str, schema: str) -> tuple[dict[str, list[Any]], dict[str, list[str]]]:
    with psycopg.connect(dsn) as conn:
        columns: dict[str, list[Any]] = {}
        for table, column, kind in conn.execute(
            "select table_name, column_name, data_type from information_schema.columns"
            " where table_schema = %s order by table_name, ordinal_position",
            (schema,),
        ):
            columns.setdefault(table, []).append((column, kind))
        keys: dict[str, list[str]] = {}
        for table, column in conn.execute(
            "select k.table_name, k.column_name from information_schema.table_constraints c"
            " join information_schema.key_column_usage k using (constraint_schema, constraint_name)"
            " where c.constraint_type = 'PRIMARY KEY' and c.table_schema = %s"
            " order by k.table_name, k.ordinal_position",
            (schema,),
        ):
            keys.setdefault(table, []).append(column)
    return columns, keys


async def test_tables_have_the_spec_columns_and_keys(
    catalog: Catalog, postgres: str, pg_schema: str
) -> None:
    async with make_sink(catalog, postgres, pg_schema):
        pass
    async with make_sink(catalog, postgres, pg_schema):  # a second open changes nothing
        pass
    columns, keys = _columns(postgres, pg_schema)
    assert columns == SPEC_COLUMNS
    assert keys == SPEC_KEYS


async def test_workers_starting_at_once_create_schema_and_tables_once(
    catalog: Catalog, postgres: str
) -> None:
    schema = f"fresh_{uuid.uuid4().hex[:10]}"  # not created yet: the sinks race to create it
    sinks = [make_sink(catalog, postgres, schema) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in sinks))
        columns, _ = _columns(postgres, schema)
        assert columns == SPEC_COLUMNS
    finally:
        await asyncio.gather(*(s.close() for s in sinks))
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(schema)))


# --- Writing ----------------------------------------------------------------------------------


async def test_documents_become_rows_and_updates_replace_them(
    sink: PostgresSink, postgres: str, pg_schema: str
) -> None:
    first = membership("alice", last="2021-01-16T17:09:34-04:00", first="2021-01-16T17:09:34-04:00")
    absent = membership("bob", member=False, last="2021-01-16T21:00:00Z")
    updated = first | {"last": "2021-01-17T09:00:00+02:00", "value": "v2"}
    again = updated | {"member": False, "last": "2021-01-18T00:00:00Z"}
    flip = toggle("alice", "2021-01-18T00:00:00Z", remove=True)
    async with sink:
        await sink.apply(MEMBERSHIPS, records(MEMBERSHIPS, [first, absent]))
        await sink.apply(PROFILES, records(PROFILES, [profile("alice", first)]))
        await sink.flush()
        # Two updates of alice's membership in the next batch: the later wins.
        await sink.apply(MEMBERSHIPS, records(MEMBERSHIPS, [updated, again], start=2))
        await sink.apply(PROFILES, records(PROFILES, [profile("alice", again)], start=1))
        await sink.apply(TOGGLES, records(TOGGLES, [flip]))
        await sink.flush()

    members = rows(postgres, pg_schema, "segment_memberships", "user_id")
    assert [r[:7] for r in members] == [
        (
            1,
            "dogs",
            "alice",
            datetime(2021, 1, 16, 21, 9, 34, tzinfo=UTC),  # -04:00 read as the same instant
            datetime(2021, 1, 18, tzinfo=UTC),
            False,
            "v2",
        ),
        (1, "dogs", "bob", None, datetime(2021, 1, 16, 21, tzinfo=UTC), False, None),
    ]
    assert members[0][7] == again
    assert members[1][7] == absent

    [(user, segments, document)] = rows(postgres, pg_schema, "segment_profiles")
    assert (user, segments, document) == (
        "alice",
        profile("alice", again)["segments"],
        profile("alice", again),
    )

    [toggled] = rows(postgres, pg_schema, "segment_toggles")
    assert toggled == (
        uuid.UUID(flip["event"]),
        "alice",
        1,
        "dogs",
        True,
        datetime(2021, 1, 18, tzinfo=UTC),
        uuid.UUID(flip["previous"]["event"]),
        flip,
    )


async def test_timestamps_keep_their_instant_whatever_the_offset(
    sink: PostgresSink, postgres: str, pg_schema: str
) -> None:
    stamps = {
        "z": "2021-01-16T17:09:34Z",
        "minus4": "2021-01-16T13:09:34-04:00",
        "plus0530": "2021-01-16T22:39:34+05:30",
        "fraction": "2021-01-16T17:09:34.250+00:00",
    }
    async with sink:
        docs = [membership(user, last=ts) for user, ts in stamps.items()]
        await sink.apply(MEMBERSHIPS, records(MEMBERSHIPS, docs))
        await sink.flush()
    got = {r[2]: r[4] for r in rows(postgres, pg_schema, "segment_memberships")}
    instant = datetime(2021, 1, 16, 17, 9, 34, tzinfo=UTC)
    assert got == {
        "z": instant,
        "minus4": instant,
        "plus0530": instant,
        "fraction": instant + timedelta(milliseconds=250),
    }
    assert got["minus4"].astimezone(timezone(timedelta(hours=-4))).hour == 13


# --- Checkpoint and atomicity -----------------------------------------------------------------


async def test_positions_come_from_the_checkpoint_written_with_the_rows(
    sink: PostgresSink, postgres: str, pg_schema: str
) -> None:
    tps = [TopicPartition("segment.memberships", 0), TopicPartition("segment.memberships", 1)]
    async with sink:
        assert await sink.positions(tps) == dict.fromkeys(tps)
        await sink.apply(MEMBERSHIPS, records(MEMBERSHIPS, [membership("a"), membership("b")]))
        await sink.apply(
            MEMBERSHIPS, records(MEMBERSHIPS, [membership("c")], start=40, partition=1)
        )
        assert await sink.flush() == {tps[0]: 2, tps[1]: 41}
        assert await sink.positions(tps) == {tps[0]: 2, tps[1]: 41}
    # A new sink (a restarted worker) resumes from the same place; other materializations don't.
    async with sink:
        assert await sink.positions(tps) == {tps[0]: 2, tps[1]: 41}
    assert checkpoints(postgres, pg_schema) == [
        ("postgres", "segment.memberships", 0, 2),
        ("postgres", "segment.memberships", 1, 41),
    ]


async def test_a_bad_document_without_a_dead_letter_topic_leaves_neither_rows_nor_checkpoint(
    sink: PostgresSink, postgres: str, pg_schema: str
) -> None:
    bad_uuid = toggle("alice", "2021-01-18T00:00:00Z") | {"event": "not-a-uuid"}
    async with sink:
        await sink.apply(MEMBERSHIPS, records(MEMBERSHIPS, [membership("alice")]))
        await sink.apply(TOGGLES, records(TOGGLES, [bad_uuid]))
        with pytest.raises(DocumentError, match="InvalidTextRepresentation"):
            await sink.flush()
    assert rows(postgres, pg_schema, "segment_memberships") == []
    assert checkpoints(postgres, pg_schema) == []


class Parking:
    """A dead-letter topic stand-in: what the sink parked, with its headers."""

    def __init__(self) -> None:
        self.letters: list[tuple[bytes, dict[str, str]]] = []

    async def __call__(self, body: bytes, headers: dict[str, str]) -> None:
        self.letters.append((body, headers))


HUGE = os.urandom(4500).hex()  # incompressible: an index entry over Postgres' limit (class 54)
HOSTILE = [
    ("nul in user", membership("nul\u0000user")),  # class 22: text cannot hold U+0000
    ("nul in value", membership("carol", value="a\u0000b")),
    ("huge user", membership(HUGE)),
    ("vendor beyond int", membership("dave", vendor=2**31)),
    ("no segment", {"user": "erin", "last": "2021-01-16T17:09:34Z", "member": True}),  # 23
    ("year 0", membership("fay", last="0000-01-01T00:00:00Z")),
]


async def test_records_postgres_rejects_are_parked_and_everybody_else_lands(
    catalog: Catalog, postgres: str, pg_schema: str
) -> None:
    parking = Parking()
    sink = make_sink(catalog, postgres, pg_schema, dead_letter=parking)
    good = [membership(f"user-{i}", value=f"v{i}") for i in range(40)]
    docs = [*good[:13], *[doc for _, doc in HOSTILE], *good[13:]]
    async with sink:
        await sink.apply(MEMBERSHIPS, records(MEMBERSHIPS, docs, start=100))
        await sink.apply(PROFILES, records(PROFILES, [profile("bob")], partition=1))
        await sink.apply(TOGGLES, records(TOGGLES, [toggle("bob", "2021-01-18T00:00:00Z")]))
        await sink.apply(TOGGLES, [Record("segment.toggles", 2, 7, b"t", b"\xff not utf-8")])
        assert await sink.flush() == {
            TopicPartition("segment.memberships", 0): 100 + len(docs),
            TopicPartition("segment.profiles", 1): 1,
            TopicPartition("segment.toggles", 0): 1,
            TopicPartition("segment.toggles", 2): 8,
        }
    users = [r[2] for r in rows(postgres, pg_schema, "segment_memberships", "user_id")]
    assert users == sorted(d["user"] for d in good)
    assert len(rows(postgres, pg_schema, "segment_profiles")) == 1
    assert len(rows(postgres, pg_schema, "segment_toggles")) == 1
    assert {(t, p, o) for _, t, p, o in checkpoints(postgres, pg_schema)} == {
        ("segment.memberships", 0, 100 + len(docs)),
        ("segment.profiles", 1, 1),
        ("segment.toggles", 0, 1),
        ("segment.toggles", 2, 8),
    }

    assert sink.parked == len(HOSTILE) + 1
    by_offset = {int(h["offset"]): (body, h) for body, h in parking.letters}
    for i, (what, doc) in enumerate(HOSTILE):
        body, headers = by_offset[113 + i]
        assert orjson.loads(body) == doc, what
        assert headers["topic"] == "segment.memberships", what
        assert headers["partition"] == "0"
        assert headers["table"] == "segment_memberships"
        assert headers["collection"] == "segment/memberships"
        assert headers["key"] == _key(MEMBERSHIPS, doc).decode() if "segment" in doc else True
        assert headers["sqlstate"][:2] in ("22", "23", "54"), (what, headers)
    assert "UntranslatableCharacter" in by_offset[113][1]["error"]
    assert "ProgramLimitExceeded" in by_offset[115][1]["error"]
    assert "NumericValueOutOfRange" in by_offset[116][1]["error"]
    assert "NotNullViolation" in by_offset[117][1]["error"]
    body, headers = by_offset[7]
    assert (body, headers["topic"], headers["partition"]) == (
        b"\xff not utf-8",
        "segment.toggles",
        "2",
    )
    assert "not a UTF-8 JSON document" in headers["error"]


async def test_isolating_a_bad_record_takes_few_statements(
    catalog: Catalog, postgres: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parking = Parking()
    sink = make_sink(catalog, postgres, pg_schema, dead_letter=parking)
    docs = [membership(f"user-{i}") for i in range(4096)]
    docs[1234] = membership("nul\u0000")
    statements = 0
    isolate = sink._isolate

    async def counted(*args: Any) -> Any:
        nonlocal statements
        statements += 1
        return await isolate(*args)

    monkeypatch.setattr(sink, "_isolate", counted)
    async with sink:
        await sink.apply(MEMBERSHIPS, records(MEMBERSHIPS, docs))
        await sink.flush()
    assert len(parking.letters) == 1
    assert len(rows(postgres, pg_schema, "segment_memberships")) == 4095
    assert statements <= 2 * 12 + 1  # log2(4096) = 12 halvings, two halves each


def make_sink_like(sink: PostgresSink) -> PostgresSink:
    return PostgresSink(sink.spec, sink.topics)


async def test_a_connection_lost_before_the_checkpoint_rolls_back_and_the_retry_lands(
    sink: PostgresSink, postgres: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parameters = sink._parameters
    merged: list[str] = []

    def parameters_then_lose_connection(binding: BindingSpec, *args: Any) -> Any:
        merged.append(binding.source)
        if len(merged) == 3:  # after two tables are merged, before the third and the checkpoint
            assert sink._conn is not None
            with psycopg.connect(postgres, autocommit=True) as admin:
                admin.execute("select pg_terminate_backend(%s)", (sink._conn.info.backend_pid,))
        return parameters(binding, *args)

    async with sink:
        await sink.apply(MEMBERSHIPS, records(MEMBERSHIPS, [membership("alice")]))
        await sink.apply(PROFILES, records(PROFILES, [profile("alice", membership("alice"))]))
        await sink.apply(TOGGLES, records(TOGGLES, [toggle("alice", "2021-01-18T00:00:00Z")]))
        monkeypatch.setattr(sink, "_parameters", parameters_then_lose_connection)
        with pytest.raises(psycopg.OperationalError):
            await sink.flush()
        assert rows(postgres, pg_schema, "segment_memberships") == []
        assert rows(postgres, pg_schema, "segment_profiles") == []
        assert checkpoints(postgres, pg_schema) == []

        monkeypatch.setattr(sink, "_parameters", parameters)
        assert await sink.flush() != {}  # the same batch again, on a new connection
    assert len(rows(postgres, pg_schema, "segment_memberships")) == 1
    assert len(rows(postgres, pg_schema, "segment_profiles")) == 1
    assert len(rows(postgres, pg_schema, "segment_toggles")) == 1
    assert len(checkpoints(postgres, pg_schema)) == 3


# --- Replays ----------------------------------------------------------------------------------


async def test_replaying_written_batches_changes_nothing(
    sink: PostgresSink, postgres: str, pg_schema: str
) -> None:
    old = records(MEMBERSHIPS, [membership("alice", value="old"), membership("bob")])
    new = records(
        MEMBERSHIPS,
        [membership("alice", value="new", last="2021-02-01T00:00:00Z"), membership("carol")],
        start=2,
    )
    async with sink:
        await sink.apply(MEMBERSHIPS, old)
        await sink.flush()
        await sink.apply(MEMBERSHIPS, new)
        await sink.flush()
    written = rows(postgres, pg_schema, "segment_memberships", "user_id")
    written_checkpoint = checkpoints(postgres, pg_schema)
    assert [(r[2], r[6]) for r in written] == [("alice", "new"), ("bob", None), ("carol", None)]

    # A restarted worker re-applies both batches (the last one exactly, then the older one).
    async with make_sink_like(sink) as restarted:
        for batch in (new, old):
            await restarted.apply(MEMBERSHIPS, batch)
            await restarted.flush()
    assert rows(postgres, pg_schema, "segment_memberships", "user_id") == written
    assert checkpoints(postgres, pg_schema) == written_checkpoint


async def test_a_replayed_partition_is_skipped_while_a_fresh_one_is_written(
    sink: PostgresSink, postgres: str, pg_schema: str
) -> None:
    async with sink:
        await sink.apply(MEMBERSHIPS, records(MEMBERSHIPS, [membership("a", value="1")]))
        await sink.apply(MEMBERSHIPS, records(MEMBERSHIPS, [membership("a", value="2")], start=1))
        await sink.flush()
        # Partition 0 replays offset 0 (stale); partition 1 is new.
        await sink.apply(MEMBERSHIPS, records(MEMBERSHIPS, [membership("a", value="1")]))
        await sink.apply(MEMBERSHIPS, records(MEMBERSHIPS, [membership("b")], partition=1))
        await sink.flush()
    assert [(r[2], r[6]) for r in rows(postgres, pg_schema, "segment_memberships")] == [
        ("a", "2"),
        ("b", None),
    ]
    assert [r[2:] for r in checkpoints(postgres, pg_schema)] == [(0, 2), (1, 1)]


# --- Analyst queries --------------------------------------------------------------------------


async def test_every_documented_query_answers_correctly(
    sink: PostgresSink, postgres: str, pg_schema: str
) -> None:
    d = "2021-01-0{}T00:00:00Z".format
    alice_dogs = membership("alice", first=d(1), last=d(2), value="x")
    alice_cats = membership("alice", "cats", first=d(1), last=d(1))
    bob_dogs = membership("bob", member=False, first=d(1), last=d(3))
    carol_dogs = membership("carol", vendor=2, first=d(2), last=d(2))
    dave_dogs = membership("dave", first=d(4), last=d(4), value="y")
    members = [alice_dogs, alice_cats, bob_dogs, carol_dogs, dave_dogs]
    profiles = [
        profile("alice", alice_dogs, alice_cats),
        profile("bob", bob_dogs),
        profile("carol", carol_dogs),
        profile("dave", dave_dogs),
    ]
    toggles = [toggle("bob", d(3), remove=True), toggle("dave", d(4)), toggle("alice", d(2))]
    async with sink:
        await sink.apply(MEMBERSHIPS, records(MEMBERSHIPS, members))
        await sink.apply(PROFILES, records(PROFILES, profiles))
        await sink.apply(TOGGLES, records(TOGGLES, toggles))
        await sink.flush()

    queries = load_queries(QUERIES)
    assert set(queries) == {
        "segment_members",
        "user_segments",
        "active_segments_for_users",
        "recent_toggles",
        "segment_sizes",
        *PROFILE_QUERIES,  # tests/integration/test_profile_records_sink.py
        *GROUP_QUERIES,  # tests/integration/test_group_queries.py
    }

    def at(day: int) -> datetime:
        return datetime(2021, 1, day, tzinfo=UTC)

    with psycopg.connect(postgres) as conn:
        conn.execute(sql.SQL("set search_path to {}").format(sql.Identifier(pg_schema)))

        def run(name: str, **params: Any) -> list[tuple[Any, ...]]:
            return conn.execute(queries[name], params).fetchall()  # type: ignore[arg-type]

        assert run("segment_members", vendor=1, segment="dogs") == [
            ("alice", at(1), at(2), "x"),
            ("dave", at(4), at(4), "y"),
        ]
        assert run("segment_members", vendor=2, segment="cats") == []
        assert run("user_segments", user="alice") == [
            (1, "cats", True, at(1), at(1), None),
            (1, "dogs", True, at(1), at(2), "x"),
        ]
        assert run("user_segments", user="bob") == [(1, "dogs", False, at(1), at(3), None)]
        assert run("active_segments_for_users", user_from="alice", user_to="carol") == [
            ("alice", 1, "cats", None),
            ("alice", 1, "dogs", "x"),
            ("carol", 2, "dogs", None),
        ]
        assert run("recent_toggles", limit=2) == [
            (
                at(4),
                uuid.UUID(toggles[1]["event"]),
                1,
                "dogs",
                "dave",
                False,
                uuid.UUID(toggles[1]["previous"]["event"]),
            ),
            (
                at(3),
                uuid.UUID(toggles[0]["event"]),
                1,
                "dogs",
                "bob",
                True,
                uuid.UUID(toggles[0]["previous"]["event"]),
            ),
        ]
        assert run("segment_sizes") == [(1, "cats", 1, 1), (1, "dogs", 2, 3), (2, "dogs", 1, 1)]


def test_load_queries_rejects_a_repeated_name(tmp_path: Path) -> None:
    from pipeline.errors import SegflowError

    path = tmp_path / "q.sql"
    path.write_text("-- name: a\nselect 1;\n-- name: a\nselect 2;\n")
    with pytest.raises(SegflowError, match="line 3: a second query named 'a'"):
        load_queries(path)
    path.write_text("-- name: a\n-- what it does\nselect %(x)s\n  + 1;\n\n-- name: b\nselect 2\n")
    assert load_queries(path) == {"a": "select %(x)s\n  + 1", "b": "select 2"}


# --- Identifiers ------------------------------------------------------------------------------


@pytest.fixture
def odd_schema(postgres: str) -> Iterator[str]:
    name = f'Odd "Schema" {uuid.uuid4().hex[:6]}'
    yield name
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


async def test_odd_schema_and_table_names_are_quoted(
    catalog: Catalog, postgres: str, odd_schema: str
) -> None:
    bindings = (
        BindingSpec("segment/memberships", "select"),
        BindingSpec("segment/profiles", "Profiles"),
        BindingSpec("segment/events", "user"),  # no shape of its own: the generic table
    )
    event = {"event": str(uuid.uuid4()), "timestamp": "2021-01-01T00:00:00Z", "user": "u"}
    async with make_sink(catalog, postgres, odd_schema, bindings) as sink:
        await sink.apply(bindings[0], records(bindings[0], [membership("alice")]))
        await sink.apply(bindings[1], records(bindings[1], [profile("alice")]))
        await sink.apply(bindings[2], records(bindings[2], [event]))
        through = await sink.flush()
        assert await sink.positions(list(through)) == through
    assert [r[2] for r in rows(postgres, odd_schema, "select")] == ["alice"]
    assert rows(postgres, odd_schema, "Profiles") == [("alice", [], profile("alice"))]
    assert rows(postgres, odd_schema, "user") == [(event["event"], event)]


# --- Throughput -------------------------------------------------------------------------------


async def test_throughput_of_one_large_flush(
    catalog: Catalog, postgres: str, pg_schema: str
) -> None:
    count = 20_000
    docs = [
        membership(
            f"user-{i:06}", f"seg-{i % 50}", 1 + i % 7, first="2021-01-01T00:00:00Z", value=str(i)
        )
        for i in range(count)
    ]
    batch = records(MEMBERSHIPS, docs)
    sink = make_sink(catalog, postgres, pg_schema, (MEMBERSHIPS,))
    async with sink:
        await sink.apply(MEMBERSHIPS, batch)
        started = time.perf_counter()
        await sink.flush()
        elapsed = time.perf_counter() - started
    print(f"\npostgres sink: {count} memberships in {elapsed:.3f}s = {count / elapsed:,.0f} rows/s")
    assert len(rows(postgres, pg_schema, "segment_memberships")) == count
