"""How a collection's documents become rows: columns computed by Postgres from the document
text, the key, and the create-table and upsert statements built from them.

Apart from the sink so adding a collection's table is one entry in `SHAPES`, read without the
transaction logic around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from psycopg import sql

from pipeline.catalog import BindingSpec
from pipeline.errors import SegflowError


@dataclass(frozen=True)
class Column:
    """A table column and how Postgres computes it from a document `d` (jsonb) and its record
    key `k` (text): the value at `path` cast to `kind`, or `expression` as written."""

    name: str
    kind: str
    path: tuple[str, ...] = ()
    expression: str | None = None

    def sql(self) -> sql.Composable:
        # Kinds, paths and expressions come from SHAPES (constants), never from input.
        if self.expression is not None:
            return sql.SQL(self.expression)
        path = sql.Literal("{" + ",".join(self.path) + "}")
        operator = "#>" if self.kind in ("json", "jsonb") else "#>>"
        return sql.SQL("(d {} {})::{}").format(sql.SQL(operator), path, sql.SQL(self.kind))


DOCUMENT = Column("document", "jsonb", expression="d::jsonb")


@dataclass(frozen=True)
class Shape:
    """How a collection's documents become rows: columns and key."""

    columns: tuple[Column, ...]
    key: tuple[str, ...]
    keyed: bool = False
    """Whether a column needs the record key (`k`); Postgres then gets the keys as well."""


# Timestamps go to Postgres as the documents' RFC 3339 text; it parses the offsets itself.
SHAPES: Mapping[str, Shape] = {
    "segment/memberships": Shape(
        columns=(
            Column("vendor", "int", ("segment", "vendor")),
            Column("segment_name", "text", ("segment", "name")),
            Column("user_id", "text", ("user",)),
            Column("first", "timestamptz", ("first",)),
            Column("last", "timestamptz", ("last",)),
            Column("member", "boolean", ("member",)),
            Column("value", "text", ("value",)),
            DOCUMENT,
        ),
        key=("vendor", "segment_name", "user_id"),
    ),
    # `segments` is json, not jsonb, so `json_array_elements(segments)` works as analysts write it.
    "segment/profiles": Shape(
        columns=(
            Column("user_id", "text", ("user",)),
            Column("segments", "json", ("segments",)),
            DOCUMENT,
        ),
        key=("user_id",),
    ),
    "segment/toggles": Shape(
        columns=(
            Column("event", "uuid", ("event",)),
            Column("user_id", "text", ("user",)),
            Column("vendor", "int", ("segment", "vendor")),
            Column("segment_name", "text", ("segment", "name")),
            Column("remove", "boolean", expression="coalesce((d ->> 'remove')::boolean, false)"),
            Column("timestamp", "timestamptz", ("timestamp",)),
            Column("previous_event", "uuid", ("previous", "event")),
            DOCUMENT,
        ),
        key=("event",),
    ),
}

GENERIC = Shape(
    columns=(Column("key", "text", expression="k"), DOCUMENT),
    key=("key",),
    keyed=True,
)
"""A collection without its own shape: the record key and the whole document."""


def shape_of(binding: BindingSpec) -> Shape:
    """The binding's collection's shape; GENERIC for one without its own."""
    return SHAPES.get(binding.source, GENERIC)


def table_name(binding: BindingSpec) -> str:
    """The binding's table; the catalog checks it is there, this says so if it is not."""
    if binding.table is None:
        raise SegflowError(f"binding of '{binding.source}': a Postgres binding needs a 'table'")
    return binding.table


def create(table: sql.Identifier, shape: Shape) -> sql.Composed:
    """`create table if not exists` for a shape, keyed by its row key."""
    # Types come from SHAPES (constants), never from input, so sql.SQL on them is safe.
    columns = [
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.kind)) for c in shape.columns
    ]
    key = sql.SQL(", ").join(sql.Identifier(k) for k in shape.key)
    return sql.SQL("create table if not exists {} ({}, primary key ({}))").format(
        table, sql.SQL(", ").join(columns), key
    )


def upsert(table: sql.Identifier, checkpoints: sql.Identifier, shape: Shape) -> sql.Composed:
    """One partition's documents into `table`: rows computed by Postgres from a JSON array (or,
    for a keyed shape, arrays of record keys and documents), the last one per row key kept,
    skipped whole when the partition's checkpoint is at or past the given end.

    Parameters: the documents (keyed: keys, documents), then materialization, topic, partition,
    end.
    """
    names = [column.name for column in shape.columns]
    columns = sql.SQL(", ").join(sql.Identifier(n) for n in names)
    computed = sql.SQL(", ").join(
        sql.SQL("{} as {}").format(column.sql(), sql.Identifier(column.name))
        for column in shape.columns
    )
    source = sql.SQL(
        "unnest(%s::text[], %s::text[]) with ordinality as e(k, d, n)"
        if shape.keyed
        else "jsonb_array_elements(%s::jsonb) with ordinality as e(d, n)"
    )
    key = sql.SQL(", ").join(sql.Identifier(k) for k in shape.key)
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = excluded.{0}").format(sql.Identifier(n)) for n in names if n not in shape.key
    )
    return sql.SQL(
        "insert into {table} ({columns})"
        " select distinct on ({key}) {columns} from ("
        "select {computed}, n from {source}"
        " where (select coalesce(max(next_offset), -1) from {checkpoints}"
        " where materialization = %s and topic = %s and partition = %s) < %s"
        ") as rows order by {key}, n desc"
        " on conflict ({key}) do update set {updates}"
    ).format(
        table=table,
        columns=columns,
        key=key,
        computed=computed,
        source=source,
        checkpoints=checkpoints,
        updates=updates,
    )
