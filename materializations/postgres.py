"""The Postgres materialization: one table per binding, upserted in batches with its checkpoint.

Each write is one transaction: per binding, COPY the batch into a temporary table and merge it
into the target (`insert ... on conflict do update`), then move `segflow_checkpoints` forward.
A failed write leaves nothing behind and is simply called again. A partition whose checkpoint is
already at or past the batch's end (a replay after a crash, a zombie writer) is skipped, so a
table never goes back in time.

The temporary tables live as long as the connection (emptied at each commit): creating and
dropping them in every transaction costs Postgres more than the rows do at a steady rate. Writes
commit with `synchronous_commit = off`: a commit Postgres loses in a crash takes its checkpoint
with it, so those records are simply written again from the broker; nothing is lost or doubled.
"""

from __future__ import annotations

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

CHECKPOINTS = "segflow_checkpoints"

Row = tuple[Any, ...]


class DocumentError(SegflowError):
    """A document does not have the shape its table needs. Not retriable."""

    retriable = False


@dataclass(frozen=True)
class Shape:
    """How a collection's documents become rows: columns (name, SQL type), key, row function."""

    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    row: Callable[[bytes | None, Any, str], Row]
    """(record key, document, its JSON text) -> values in column order."""


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


# `document` columns take the record's own JSON text: no second encoding.
# Timestamps go to Postgres as the documents' RFC 3339 text; it parses the offsets itself.
SHAPES: Mapping[str, Shape] = {
    "segment/memberships": Shape(
        columns=(
            ("vendor", "int"),
            ("segment_name", "text"),
            ("user_id", "text"),
            ("first", "timestamptz"),
            ("last", "timestamptz"),
            ("member", "boolean"),
            ("value", "text"),
            ("document", "jsonb"),
        ),
        key=("vendor", "segment_name", "user_id"),
        row=lambda _, d, text: (
            d["segment"]["vendor"],
            d["segment"]["name"],
            d["user"],
            d.get("first"),
            d["last"],
            d["member"],
            d.get("value"),
            text,
        ),
    ),
    # `segments` is json, not jsonb, so `json_array_elements(segments)` works as analysts write it.
    "segment/profiles": Shape(
        columns=(("user_id", "text"), ("segments", "json"), ("document", "jsonb")),
        key=("user_id",),
        row=lambda _, d, text: (d["user"], _json(d["segments"]), text),
    ),
    "segment/toggles": Shape(
        columns=(
            ("event", "uuid"),
            ("user_id", "text"),
            ("vendor", "int"),
            ("segment_name", "text"),
            ("remove", "boolean"),
            ("timestamp", "timestamptz"),
            ("previous_event", "uuid"),
            ("document", "jsonb"),
        ),
        key=("event",),
        row=lambda _, d, text: (
            d["event"],
            d["user"],
            d["segment"]["vendor"],
            d["segment"]["name"],
            bool(d.get("remove")),
            d["timestamp"],
            d["previous"]["event"],
            text,
        ),
    ),
}

GENERIC = Shape(
    columns=(("key", "text"), ("document", "jsonb")),
    key=("key",),
    row=lambda key, _, text: (key.decode() if key is not None else None, text),
)
"""A collection without its own shape: the record key and the whole document."""


class PostgresSink(BatchingSink):
    """Upserts each binding's documents into its table, atomically with the checkpoint."""

    def __init__(self, spec: MaterializationSpec, topics: Mapping[str, BindingSpec]) -> None:
        super().__init__(spec, topics)
        self._dsn = spec.config["dsn"]
        self._schema = spec.config["schema"]
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._staged = False
        """Whether the current connection has its temporary tables."""

    def _table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self._schema, name)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        # A connection lost in a failed write is replaced on the next call.
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=False)
            self._staged = False
        return self._conn

    async def _stage(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Create the connection's temporary tables, one per binding, in their own transaction
        (a failed write must not take them with it)."""
        if self._staged:
            return
        async with conn.transaction():
            for index, binding in enumerate(self.spec.bindings):
                await conn.execute(
                    sql.SQL(
                        "create temp table {} (like {} including defaults) on commit delete rows"
                    ).format(_stage_name(index), self._table(_table_name(binding)))
                )
        self._staged = True

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
        await self._stage(conn)
        async with conn.transaction():
            await conn.execute("set local synchronous_commit = off")
            # Per-partition locks, in one order, fence concurrent writers of the same partition.
            for tp in sorted(through):
                await conn.execute(
                    "select pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"segflow:{self.spec.name}:{tp.topic}:{tp.partition}",),
                )
            stored = await self._checkpoints(conn, list(through))
            done = {tp for tp, end in through.items() if stored.get(tp, -1) >= end}
            for binding, records in batch.items():
                fresh = [r for r in records if (r.topic, r.partition) not in done]
                if fresh:
                    await self._merge(conn, binding, fresh)
            fresh_through = [(tp, end) for tp, end in through.items() if tp not in done]
            if fresh_through:
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
                            for tp, end in fresh_through
                        ],
                    )

    async def _merge(
        self,
        conn: psycopg.AsyncConnection[Any],
        binding: BindingSpec,
        records: list[ConsumerRecord],
    ) -> None:
        shape = _shape(binding)
        table = _table_name(binding)
        names = [name for name, _ in shape.columns]
        key_at = [names.index(k) for k in shape.key]
        rows: dict[Row, Row] = {}
        for record in records:
            try:
                text = record.value.decode()
                row = shape.row(record.key, orjson.loads(text), text)
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise DocumentError(
                    f"table '{table}' (from '{binding.source}'): document at"
                    f" {record.topic}[{record.partition}]@{record.offset} with key"
                    f" {record.key!r} does not fit its columns ({type(exc).__name__}: {exc}):"
                    f" {record.value!r:.200}"
                ) from exc
            # Two record keys naming the same row: the later wins, as the upsert would.
            rows[tuple(row[i] for i in key_at)] = row
        columns = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        stage = _stage_name(self.spec.bindings.index(binding))
        async with conn.cursor() as cur:
            copy_stmt = sql.SQL("copy {} ({}) from stdin").format(stage, columns)
            async with cur.copy(copy_stmt) as copy:
                for row in rows.values():
                    await copy.write_row(row)
        await conn.execute(_upsert(self._table(table), stage, shape))

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


def _stage_name(index: int) -> sql.Identifier:
    return sql.Identifier(f"segflow_stage_{index}")


def _table_name(binding: BindingSpec) -> str:
    if binding.table is None:
        raise SegflowError(f"binding of '{binding.source}': a Postgres binding needs a 'table'")
    return binding.table


def _create(table: sql.Identifier, shape: Shape) -> sql.Composed:
    # Types come from SHAPES (constants), never from input, so sql.SQL on them is safe.
    columns = [
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in shape.columns
    ]
    key = sql.SQL(", ").join(sql.Identifier(k) for k in shape.key)
    return sql.SQL("create table if not exists {} ({}, primary key ({}))").format(
        table, sql.SQL(", ").join(columns), key
    )


def _upsert(table: sql.Identifier, stage: sql.Identifier, shape: Shape) -> sql.Composed:
    """`insert into table select from stage on conflict (key) do update` every other column."""
    names = [name for name, _ in shape.columns]
    columns = sql.SQL(", ").join(sql.Identifier(n) for n in names)
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = excluded.{0}").format(sql.Identifier(n)) for n in names if n not in shape.key
    )
    key = sql.SQL(", ").join(sql.Identifier(k) for k in shape.key)
    return sql.SQL(
        "insert into {table} ({columns}) select {columns} from {stage}"
        " on conflict ({key}) do update set {updates}"
    ).format(table=table, columns=columns, stage=stage, key=key, updates=updates)


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
