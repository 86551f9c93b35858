"""The Postgres materialization: one table per binding, upserted in batches with its checkpoint.

Each write is one transaction, sent in one round trip (psycopg's pipeline mode): per binding and
partition, one `insert ... select ... on conflict do update` whose rows Postgres computes from a
single JSON array parameter (the records' own text, joined, parsed once), then the checkpoint
moves forward. Python neither decodes the documents nor builds rows, and a write waits on the
network once however many tables and partitions it covers; that matters because the worker's
event loop is busy deriving between round trips. A failed write leaves nothing behind and is
simply called again. A partition whose checkpoint is already at or past the batch's end (a
replay after a crash, a zombie writer) is skipped, so a table never goes back in time. When
Postgres rejects a batch's data, each record is checked in Python to name the one that does not
fit.

Writes commit with `synchronous_commit = off`: a commit Postgres loses in a crash takes its
checkpoint with it, so those records are simply written again from the broker; nothing is lost
or doubled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from aiokafka import ConsumerRecord, TopicPartition
from psycopg import sql

from materializations.base import BatchingSink
from pipeline.catalog import BindingSpec, MaterializationSpec
from pipeline.errors import SegflowError
from pipeline.metrics import SECONDS, SIZES, Figure, Histogram

CHECKPOINTS = "segflow_checkpoints"


class DocumentError(SegflowError):
    """A document does not have the shape its table needs. Not retriable."""

    retriable = False


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
    """How a collection's documents become rows: columns, key, and `check`, the same in Python
    (run only to name the record Postgres rejected)."""

    columns: tuple[Column, ...]
    key: tuple[str, ...]
    check: Callable[[bytes | None, Any], object]
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
        check=lambda _, d: (d["segment"]["vendor"], d["segment"]["name"], d["user"], d["last"]),
    ),
    # `segments` is json, not jsonb, so `json_array_elements(segments)` works as analysts write it.
    "segment/profiles": Shape(
        columns=(
            Column("user_id", "text", ("user",)),
            Column("segments", "json", ("segments",)),
            DOCUMENT,
        ),
        key=("user_id",),
        check=lambda _, d: (d["user"], d["segments"]),
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
        check=lambda _, d: (d["event"], d["timestamp"], d["previous"]["event"]),
    ),
}

GENERIC = Shape(
    columns=(Column("key", "text", expression="k"), DOCUMENT),
    key=("key",),
    check=lambda key, _: _text(key),
    keyed=True,
)
"""A collection without its own shape: the record key and the whole document."""


class PostgresSink(BatchingSink):
    """Upserts each binding's documents into its table, atomically with the checkpoint."""

    def __init__(self, spec: MaterializationSpec, topics: Mapping[str, BindingSpec]) -> None:
        super().__init__(spec, topics)
        self._dsn = spec.config["dsn"]
        self._schema = spec.config["schema"]
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._upserts: dict[BindingSpec, sql.Composed] = {}
        self.rows = Histogram(SIZES)
        """Rows per write (one transaction), after combining per key."""
        self.seconds = Histogram(SECONDS)
        """Duration of each write that committed."""

    def figures(self) -> Sequence[Figure]:
        return (
            Figure("postgres_write_rows", "histogram", "Rows upserted per transaction.", self.rows),
            Figure(
                "postgres_write_seconds", "histogram", "Duration of committed writes.", self.seconds
            ),
        )

    def _table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self._schema, name)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        # A connection lost in a failed write is replaced on the next call.
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=False)
        return self._conn

    async def open(self) -> None:
        conn = await self._connection()
        async with conn.transaction():
            # Serialises workers starting at once: `if not exists` alone races in the catalog.
            await conn.execute(
                "select pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"segflow:ddl:{self._schema}",),
            )
            cur = await conn.execute(
                "select 1 from pg_namespace where nspname = %s", (self._schema,)
            )
            if await cur.fetchone() is None:
                await conn.execute(sql.SQL("create schema {}").format(sql.Identifier(self._schema)))
            for binding in self.spec.bindings:
                await conn.execute(_create(self._table(_table_name(binding)), _shape(binding)))
            await conn.execute(
                sql.SQL(
                    "create table if not exists {} (materialization text, topic text,"
                    " partition int, next_offset bigint not null,"
                    " primary key (materialization, topic, partition))"
                ).format(self._table(CHECKPOINTS))
            )

    async def positions(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        conn = await self._connection()
        async with conn.transaction():
            stored = await self._checkpoints(conn, partitions)
        return {tp: stored.get(tp) for tp in partitions}

    async def write(
        self,
        batch: Mapping[BindingSpec, list[ConsumerRecord]],
        through: Mapping[TopicPartition, int],
    ) -> None:
        """Merge every binding's records and move the checkpoint, in one transaction."""
        conn = await self._connection()
        began = time.monotonic()
        try:
            async with conn.pipeline(), conn.transaction():
                await conn.execute("set local synchronous_commit = off")
                # Per-partition locks, in one order, fence concurrent writers of a partition.
                for tp in sorted(through):
                    await conn.execute(
                        "select pg_advisory_xact_lock(hashtextextended(%s, 0))",
                        (f"segflow:{self.spec.name}:{tp.topic}:{tp.partition}",),
                    )
                for binding, records in batch.items():
                    await self._merge(conn, binding, records, through)
                async with conn.cursor() as cur:
                    await cur.executemany(
                        sql.SQL(
                            "insert into {} as c (materialization, topic, partition, next_offset)"
                            " values (%s, %s, %s, %s)"
                            " on conflict (materialization, topic, partition) do update"
                            " set next_offset = greatest(c.next_offset, excluded.next_offset)"
                        ).format(self._table(CHECKPOINTS)),
                        [
                            (self.spec.name, tp.topic, tp.partition, end)
                            for tp, end in through.items()
                        ],
                    )
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            for binding, records in batch.items():
                _check(binding, records, exc)
            raise
        self.seconds.observe(time.monotonic() - began)
        self.rows.observe(sum(len(records) for records in batch.values()))

    async def _merge(
        self,
        conn: psycopg.AsyncConnection[Any],
        binding: BindingSpec,
        records: list[ConsumerRecord],
        through: Mapping[TopicPartition, int],
    ) -> None:
        """Queue one upsert per partition of `records`, each skipped by Postgres if that
        partition's checkpoint is already at or past `through`."""
        shape = _shape(binding)
        statement = self._upserts.get(binding)
        if statement is None:
            statement = self._upserts[binding] = _upsert(
                self._table(_table_name(binding)), self._table(CHECKPOINTS), shape
            )
        by_partition: dict[TopicPartition, list[ConsumerRecord]] = {}
        for record in records:
            by_partition.setdefault(TopicPartition(record.topic, record.partition), []).append(
                record
            )
        for tp, some in by_partition.items():
            source: tuple[Any, ...]
            try:
                if shape.keyed:
                    source = ([_text(r.key) for r in some], [r.value.decode() for r in some])
                else:
                    source = ((b"[" + b",".join([r.value for r in some]) + b"]").decode(),)
            except (TypeError, AttributeError, UnicodeDecodeError) as exc:  # no value, not UTF-8
                _check(binding, some, exc)
                raise
            guard = (self.spec.name, tp.topic, tp.partition, through[tp])
            await conn.execute(statement, (*source, *guard))

    async def _checkpoints(
        self, conn: psycopg.AsyncConnection[Any], partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        cur = await conn.execute(
            sql.SQL(
                "select topic, partition, next_offset from {}"
                " where materialization = %s and topic = any(%s)"
            ).format(self._table(CHECKPOINTS)),
            (self.spec.name, sorted({tp.topic for tp in partitions})),
        )
        wanted = set(partitions)
        stored = {TopicPartition(t, p): int(o) for t, p, o in await cur.fetchall()}
        return {tp: o for tp, o in stored.items() if tp in wanted}

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def _shape(binding: BindingSpec) -> Shape:
    return SHAPES.get(binding.source, GENERIC)


def _table_name(binding: BindingSpec) -> str:
    if binding.table is None:
        raise SegflowError(f"binding of '{binding.source}': a Postgres binding needs a 'table'")
    return binding.table


def _create(table: sql.Identifier, shape: Shape) -> sql.Composed:
    # Types come from SHAPES (constants), never from input, so sql.SQL on them is safe.
    columns = [
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.kind)) for c in shape.columns
    ]
    key = sql.SQL(", ").join(sql.Identifier(k) for k in shape.key)
    return sql.SQL("create table if not exists {} ({}, primary key ({}))").format(
        table, sql.SQL(", ").join(columns), key
    )


def _upsert(table: sql.Identifier, checkpoints: sql.Identifier, shape: Shape) -> sql.Composed:
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


def _text(key: bytes | None) -> str | None:
    return key.decode() if key is not None else None


def _check(binding: BindingSpec, records: Sequence[ConsumerRecord], cause: BaseException) -> None:
    """Raise DocumentError for the first record that cannot be a row of `binding`'s table;
    return if every one can (the error was something else)."""
    shape = _shape(binding)
    for record in records:
        try:
            shape.check(record.key, orjson.loads(record.value.decode()))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise DocumentError(
                f"table '{_table_name(binding)}' (from '{binding.source}'): document at"
                f" {record.topic}[{record.partition}]@{record.offset} with key"
                f" {record.key!r} does not fit its columns ({type(exc).__name__}: {exc}):"
                f" {record.value!r:.200}"
            ) from cause


def load_queries(path: str | Path) -> dict[str, str]:
    """The named queries of a file like docs/queries.sql: `-- name: <slug>` starts each one.

    Comment lines are dropped and so is the final semicolon; placeholders stay `%(name)s`.
    """
    queries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("-- name:"):
            name = stripped.removeprefix("-- name:").strip()
            if not name or name in queries:
                what = "an empty name" if not name else f"a second query named '{name}'"
                raise SegflowError(f"{path}: line {number}: {what}")
            current = queries[name] = []
        elif stripped.startswith("--") or not stripped:
            continue
        elif current is None:
            raise SegflowError(f"{path}: line {number}: SQL before the first '-- name:' line")
        else:
            current.append(line.rstrip())
    result = {
        name: "\n".join(lines).strip().removesuffix(";").strip() for name, lines in queries.items()
    }
    empty = [name for name, text in result.items() if not text]
    if empty:
        raise SegflowError(f"{path}: query '{empty[0]}' has no SQL")
    return result
