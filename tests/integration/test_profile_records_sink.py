"""profile_records in Postgres (SPEC 8.5): merged records' rows go in the transaction that writes
the survivor, a stale anonymous document never brings one back, and the analyst queries of
docs/queries.sql answer over it. Against the session's embedded Postgres; records built here."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from materializations.postgres import PostgresSink, load_queries
from pipeline.catalog import BindingSpec, Catalog
from tests.fixtures.records import Record

pytestmark = pytest.mark.integration

QUERIES = Path(__file__).resolve().parents[2] / "docs" / "queries.sql"
PROFILE_QUERIES = {
    "record_of",
    "record_properties",
    "top_records_by_property",
    "record_counts",
    "property_problems",
}
RECORDS = BindingSpec("profile/records", "profile_records", records=True)
TOPIC = "profile.records"


def record(id_: str, *devices: str, day: int = 1, **properties: Any) -> dict[str, Any]:
    """A profile/records document: `anon:A` is A's anonymous record, anything else a person's."""
    doc: dict[str, Any] = {"id": id_}
    if not id_.startswith("anon:"):
        doc["userId"] = id_
    invalid = properties.pop("invalid", None)
    doc |= {
        "anonymousIds": sorted(devices or ([id_[5:]] if id_.startswith("anon:") else [])),
        "properties": properties,
        **({"invalid": invalid} if invalid else {}),
        "groups": [],
        "createdAt": "2024-05-01T10:00:00Z",
        "updatedAt": f"2024-05-{day:02d}T12:30:00.5+02:00",
    }
    return doc


def at(partition: int, offset: int, doc: dict[str, Any] | str) -> Record:
    """The record at an offset: a document, or a tombstone for the key given as a string."""
    if isinstance(doc, str):
        return Record(TOPIC, partition, offset, doc.encode(), None)
    return Record(TOPIC, partition, offset, doc["id"].encode(), orjson.dumps(doc))


def make_sink(catalog: Catalog, dsn: str, schema: str, *bindings: BindingSpec) -> PostgresSink:
    spec = catalog.materializations["profile-records"]
    spec = type(spec)(
        spec.name, spec.kind, {"dsn": dsn, "schema": schema}, bindings or (RECORDS,), True
    )
    return PostgresSink(spec, {b.source.replace("/", "."): b for b in spec.bindings})


def table(dsn: str, schema: str, name: str = "profile_records") -> list[Any]:
    with psycopg.connect(dsn) as conn:
        query = sql.SQL("select document from {} order by 1").format(sql.Identifier(schema, name))
        return [row[0] for row in conn.execute(query).fetchall()]


async def test_the_table_has_the_spec_columns(
    catalog: Catalog, postgres: str, pg_schema: str
) -> None:
    async with make_sink(catalog, postgres, pg_schema):
        pass
    with psycopg.connect(postgres) as conn:
        columns = conn.execute(
            "select table_name, column_name, data_type from information_schema.columns"
            " where table_schema = %s order by table_name, ordinal_position",
            (pg_schema,),
        ).fetchall()
        keys = conn.execute(
            "select k.table_name, k.column_name from information_schema.table_constraints c"
            " join information_schema.key_column_usage k using (constraint_schema, constraint_name)"
            " where c.constraint_type = 'PRIMARY KEY' and c.table_schema = %s"
            " order by k.table_name, k.ordinal_position",
            (pg_schema,),
        ).fetchall()
    assert [(c, k) for t, c, k in columns if t == "profile_records"] == [
        ("id", "text"),
        ("user_id", "text"),
        ("anonymous_ids", "ARRAY"),
        ("properties", "jsonb"),
        ("invalid", "jsonb"),
        ("groups", "ARRAY"),
        ("created_at", "timestamp with time zone"),
        ("updated_at", "timestamp with time zone"),
        ("document", "jsonb"),
    ]
    assert [(c, k) for t, c, k in columns if t == "profile_records_devices"] == [
        ("device", "text"),
        ("record_id", "text"),
    ]
    assert ("profile_records", "id") in keys and ("profile_records_devices", "device") in keys


async def test_columns_are_the_documents(catalog: Catalog, postgres: str, pg_schema: str) -> None:
    doc = record("u1", "d1", "d2", day=3, ltv=12.5, invalid={"phone": "'x' is not a phone number"})
    async with make_sink(catalog, postgres, pg_schema) as sink:
        await sink.apply(RECORDS, [at(0, 0, doc)])
        await sink.flush()
    with psycopg.connect(postgres) as conn:
        row = conn.execute(
            sql.SQL("select * from {}").format(sql.Identifier(pg_schema, "profile_records"))
        ).fetchone()
    assert row == (
        "u1",
        "u1",
        ["d1", "d2"],
        {"ltv": 12.5},
        {"phone": "'x' is not a phone number"},
        [],
        datetime(2024, 5, 1, 10, tzinfo=UTC),
        datetime(2024, 5, 3, 10, 30, 0, 500000, tzinfo=UTC),  # the offset read as an instant
        doc,
    )


async def test_the_survivor_deletes_the_merged_rows_in_its_own_transaction(
    catalog: Catalog, postgres: str, pg_schema: str
) -> None:
    async with make_sink(catalog, postgres, pg_schema) as sink:
        await sink.apply(RECORDS, [at(0, 0, record("anon:d1")), at(0, 1, record("anon:d9"))])
        await sink.apply(RECORDS, [at(1, 0, record("anon:d2"))])
        await sink.flush()
        assert [d["id"] for d in table(postgres, pg_schema)] == ["anon:d1", "anon:d2", "anon:d9"]
        # The merge's tombstones alone change nothing: the row goes with the survivor's write.
        await sink.apply(RECORDS, [at(0, 2, "anon:d1")])
        await sink.flush()
        assert [d["id"] for d in table(postgres, pg_schema)] == ["anon:d1", "anon:d2", "anon:d9"]
        await sink.apply(RECORDS, [at(2, 0, record("u1", "d1", "d2", ltv=3))])
        await sink.flush()
    assert table(postgres, pg_schema) == [record("anon:d9"), record("u1", "d1", "d2", ltv=3)]


@pytest.mark.parametrize("together", [False, True], ids=["later-write", "same-write"])
async def test_a_stale_anonymous_document_never_brings_its_row_back(
    catalog: Catalog, postgres: str, pg_schema: str, together: bool
) -> None:
    """Partitions are read independently: an anonymous record's last document may come after
    the survivor that absorbed it, in a later write or in the same one (before or after it)."""
    survivor = record("u1", "d1", "d2")
    async with make_sink(catalog, postgres, pg_schema) as sink:
        await sink.apply(RECORDS, [at(2, 0, survivor)])
        if not together:
            await sink.flush()
        await sink.apply(RECORDS, [at(0, 0, record("anon:d1")), at(0, 1, record("anon:d7"))])
        await sink.apply(RECORDS, [at(3, 0, record("anon:d2"))])
        await sink.flush()
    assert table(postgres, pg_schema) == [record("anon:d7"), survivor]


async def test_replayed_writes_change_nothing(
    catalog: Catalog, postgres: str, pg_schema: str
) -> None:
    first = [at(0, 0, record("anon:d1")), at(0, 1, record("anon:d3"))]
    second = [at(1, 0, record("u1", "d1", ltv=1)), at(1, 1, record("u1", "d1", ltv=2))]
    async with make_sink(catalog, postgres, pg_schema) as sink:
        for batch in (first, second):
            await sink.apply(RECORDS, batch)
            await sink.flush()
    written = table(postgres, pg_schema)
    assert written == [record("anon:d3"), record("u1", "d1", ltv=2)]
    async with make_sink(catalog, postgres, pg_schema) as restarted:
        for batch in (second, first, [second[0]]):  # a restart re-applies, in any order
            await restarted.apply(RECORDS, batch)
            await restarted.flush()
    assert table(postgres, pg_schema) == written


async def test_a_tombstone_deletes_its_row_in_a_table_of_whole_documents(
    catalog: Catalog, postgres: str, pg_schema: str
) -> None:
    """A collection without its own shape (key and document) loses a deleted key's row."""
    generic = BindingSpec("other/records", "records_by_key")
    async with make_sink(catalog, postgres, pg_schema, generic) as sink:
        await sink.apply(generic, [at(0, 0, record("anon:d1")), at(0, 1, record("anon:d2"))])
        await sink.flush()
        await sink.apply(generic, [at(0, 2, "anon:d1"), at(0, 3, record("u1", "d1"))])
        await sink.flush()
    assert table(postgres, pg_schema, "records_by_key") == [record("anon:d2"), record("u1", "d1")]


async def test_the_record_queries_answer_correctly(
    catalog: Catalog, postgres: str, pg_schema: str
) -> None:
    docs = [
        record("u1", "d1", "d2", ltv=120.5, purchases=3, email="a@example.com"),
        record("u2", "d3", ltv=80, purchases=1, invalid={"phone": "'12' is not a phone number"}),
        record("u3", purchases=0, invalid={"phone": "'x' is not a phone number", "ltv": "'?'"}),
        record("anon:d4", pages=["/", "/pricing"]),
    ]
    async with make_sink(catalog, postgres, pg_schema) as sink:
        await sink.apply(RECORDS, [at(0, i, doc) for i, doc in enumerate(docs)])
        await sink.flush()
    queries = load_queries(QUERIES)
    assert set(queries) >= PROFILE_QUERIES
    with psycopg.connect(postgres) as conn:
        conn.execute(sql.SQL("set search_path to {}").format(sql.Identifier(pg_schema)))

        def run(name: str, **params: Any) -> list[tuple[Any, ...]]:
            return conn.execute(queries[name], params).fetchall()  # type: ignore[arg-type]

        by_device = run("record_of", who="d2")
        assert [r[:4] for r in by_device] == [("u1", "u1", ["d1", "d2"], [])]
        assert by_device == run("record_of", who="u1")
        assert [r[0] for r in run("record_of", who="d4")] == ["anon:d4"]
        assert run("record_of", who="nobody") == []
        assert run("record_properties", id="u2") == [
            ("ltv", 80, "number", None),
            ("phone", None, None, "'12' is not a phone number"),
            ("purchases", 1, "number", None),
        ]
        assert run("top_records_by_property", property="ltv", limit=5) == [
            ("u1", "u1", Decimal("120.5")),
            ("u2", "u2", Decimal(80)),
        ]
        assert run("record_counts") == [(4, 3, 1, 3)]
        assert run("property_problems") == [
            ("phone", 2, "'12' is not a phone number"),
            ("ltv", 1, "'?'"),
        ]
