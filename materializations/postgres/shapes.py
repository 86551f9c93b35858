"""How a collection's documents become rows: columns computed by Postgres from the document
text, the key, and the create-table and upsert statements built from them.

Apart from the sink so adding a collection's table is one entry in `SHAPES`, read without the
transaction logic around it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    """How a collection's documents become rows: columns and key.

    A deleted document (a tombstone: a record without a value) removes its row in a keyed
    shape; a shape with its own `statement` decides itself, and the others have none.
    """

    columns: tuple[Column, ...]
    key: tuple[str, ...]
    keyed: bool = False
    """Whether a column needs the record key (`k`); Postgres then gets the keys as well."""
    statement: Callable[[str, str, sql.Identifier, Shape], sql.Composed] | None = None
    """Builds the write instead of `upsert`, from the same arguments, with the same
    parameters."""
    companions: Callable[[str, str], list[sql.Composed]] | None = None
    """Creates, given the schema and table name, what `statement` needs besides the table."""


def _text_array(field: str) -> str:
    return f"array(select jsonb_array_elements_text(d -> '{field}'))"


def _devices(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, f"{name}_devices")


def _records_companions(schema: str, name: str) -> list[sql.Composed]:
    return [
        sql.SQL(
            "create table if not exists {} (device text primary key, record_id text not null)"
        ).format(_devices(schema, name))
    ]


def _records(schema: str, name: str, checkpoints: sql.Identifier, shape: Shape) -> sql.Composed:
    """profile/records: `upsert`, and a merged record's row goes in the same statement.

    `<table>_devices` maps each device (anonymousId) of an identified person to their record;
    devices never move (the merge guard). Writing an identified record adds its new devices
    and deletes their `anon:` rows; an `anon:` row is not written when its device is linked,
    before or in this statement: records topics are read partition by partition, so an
    anonymous record's last document may come after the survivor that absorbed it. The
    tombstones a merge leaves in the topic are therefore not needed here: records never
    split, so every merged device is listed by its survivor. Every lookup is by primary key.
    """
    return sql.SQL(
        "with rows as ("
        "select distinct on (id) {columns} from ("
        "select {computed}, n from {source}{guard}"
        ") as r order by id, n desc"
        "), linked as ("
        "insert into {devices} (device, record_id)"
        " select a.device, rows.id from rows, unnest(rows.anonymous_ids) as a(device)"
        " where rows.user_id is not null"
        " on conflict (device) do nothing returning device"
        "), merged as ("
        "delete from {table} where id = any(array(select 'anon:' || device from linked))"
        ")"
        " insert into {table} ({columns}) select {columns} from rows"
        " where rows.user_id is not null or ("
        "rows.anonymous_ids[1] not in (select device from linked) and not exists ("
        "select 1 from {devices} as l where l.device = rows.anonymous_ids[1]))"
        " on conflict (id) do update set {updates}"
    ).format(devices=_devices(schema, name), **_parts(schema, name, checkpoints, shape))


RECORDS = Shape(
    columns=(
        Column("id", "text", ("id",)),
        Column("user_id", "text", ("userId",)),
        Column("anonymous_ids", "text[]", expression=_text_array("anonymousIds")),
        Column("properties", "jsonb", ("properties",)),
        Column("invalid", "jsonb", ("invalid",)),
        Column("groups", "text[]", expression=_text_array("groups")),
        Column("created_at", "timestamptz", ("createdAt",)),
        Column("updated_at", "timestamptz", ("updatedAt",)),
        DOCUMENT,
    ),
    key=("id",),
    statement=_records,
    companions=_records_companions,
)
"""profile/records (SPEC 8.5): an anonymous record's `anonymous_ids` is its one device."""


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
    """The binding's collection's shape: RECORDS for the profile records (whatever their
    collection's name), the segment collections' own, GENERIC for any other."""
    if binding.records:
        return RECORDS
    return SHAPES.get(binding.source, GENERIC)


def table_name(binding: BindingSpec) -> str:
    """The binding's table; the catalog checks it is there, this says so if it is not."""
    if binding.table is None:
        raise SegflowError(f"binding of '{binding.source}': a Postgres binding needs a 'table'")
    return binding.table


def create(schema: str, name: str, shape: Shape) -> list[sql.Composed]:
    """`create table if not exists` for a shape, keyed by its row key, and its companions."""
    # Types come from SHAPES (constants), never from input, so sql.SQL on them is safe.
    table = sql.Identifier(schema, name)
    columns = [
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.kind)) for c in shape.columns
    ]
    key = sql.SQL(", ").join(sql.Identifier(k) for k in shape.key)
    statements = [
        sql.SQL("create table if not exists {} ({}, primary key ({}))").format(
            table, sql.SQL(", ").join(columns), key
        )
    ]
    if shape.companions is not None:
        statements += shape.companions(schema, name)
    return statements


def upsert(schema: str, name: str, checkpoints: sql.Identifier, shape: Shape) -> sql.Composed:
    """One partition's documents into `table`: rows computed by Postgres from a JSON array (or,
    for a keyed shape, arrays of record keys and documents), the last one per row key kept,
    skipped whole when the partition's checkpoint is at or past the given end.

    Parameters: the documents (keyed: keys, documents), then materialization, topic, partition,
    end. In a keyed shape a null document (a tombstone) deletes the key's row instead.
    """
    if shape.statement is not None:
        return shape.statement(schema, name, checkpoints, shape)
    parts = _parts(schema, name, checkpoints, shape)
    if not shape.keyed:
        return sql.SQL(
            "insert into {table} ({columns})"
            " select distinct on ({key}) {columns} from ("
            "select {computed}, n from {source}{guard}"
            ") as rows order by {key}, n desc"
            " on conflict ({key}) do update set {updates}"
        ).format(**parts)
    same = sql.SQL(" and ").join(
        sql.SQL("t.{0} = rows.{0}").format(sql.Identifier(k)) for k in shape.key
    )
    return sql.SQL(
        "with rows as ("
        "select distinct on ({key}) {columns}, d is null as deleted from ("
        "select {computed}, d, n from {source}{guard}"
        ") as r order by {key}, n desc"
        "), removed as (delete from {table} as t using rows where rows.deleted and {same})"
        " insert into {table} ({columns}) select {columns} from rows where not rows.deleted"
        " on conflict ({key}) do update set {updates}"
    ).format(same=same, **parts)


def _parts(
    schema: str, name: str, checkpoints: sql.Identifier, shape: Shape
) -> dict[str, sql.Composable]:
    """The pieces every write statement is made of: the table, its columns, the columns
    computed from each document `d` (its position `n`), the row key, the updates of a row
    that exists, where the documents come from, and the guard that skips a partition whose
    checkpoint is at or past the given end."""
    names = [column.name for column in shape.columns]
    return {
        "table": sql.Identifier(schema, name),
        "columns": sql.SQL(", ").join(sql.Identifier(n) for n in names),
        "computed": sql.SQL(", ").join(
            sql.SQL("{} as {}").format(column.sql(), sql.Identifier(column.name))
            for column in shape.columns
        ),
        "key": sql.SQL(", ").join(sql.Identifier(k) for k in shape.key),
        "updates": sql.SQL(", ").join(
            sql.SQL("{0} = excluded.{0}").format(sql.Identifier(n))
            for n in names
            if n not in shape.key
        ),
        "source": sql.SQL(
            "unnest(%s::text[], %s::text[]) with ordinality as e(k, d, n)"
            if shape.keyed
            else "jsonb_array_elements(%s::jsonb) with ordinality as e(d, n)"
        ),
        "guard": sql.SQL(
            " where (select coalesce(max(next_offset), -1) from {checkpoints}"
            " where materialization = %s and topic = %s and partition = %s) < %s"
        ).format(checkpoints=checkpoints),
    }
