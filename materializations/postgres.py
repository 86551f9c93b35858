"""The Postgres materialization: one table per binding, upserted in batches with its checkpoint.

Each write is one transaction, sent in one round trip (psycopg's pipeline mode): per binding and
partition, one `insert ... select ... on conflict do update` whose rows Postgres computes from a
single JSON array parameter (the records' own text, joined, parsed once), then the checkpoint
moves forward. Python neither decodes the documents nor builds rows, and a write waits on the
network once however many tables and partitions it covers; that matters because the worker's
event loop is busy deriving between round trips. A failed write leaves nothing behind and is
simply called again. A partition whose checkpoint is already at or past the batch's end (a
replay after a crash, a zombie writer) is skipped, so a table never goes back in time.

A record no row can hold (Postgres raises a data error for it: SQLSTATE class 22, 23 or 54 —
a NUL character, a value out of range, an index entry too large) never blocks the others: the
write is done again in the same way, but each binding and partition inside a savepoint, halving
a part that fails until the offending records stand alone (k bad records among n cost
about 2k·log2(n) statements). Those are **parked** — produced to the materialization's
dead-letter topic with the error and their topic, partition, offset and key, and acknowledged
there *before* the transaction that moves the checkpoint past them commits — so nothing is lost
and everybody else's rows land. `segflow dlq replay` re-sends the current document of each
parked key.

Writes commit with `synchronous_commit = off`: a commit Postgres loses in a crash takes its
checkpoint with it, so those records are simply written again from the broker; nothing is lost
or doubled.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import ConsumerRecord, TopicPartition
from psycopg import sql

from materializations.base import BatchingSink
from pipeline.catalog import BindingSpec, MaterializationSpec
from pipeline.errors import SegflowError
from pipeline.figures import SECONDS, SIZES, Figure, Histogram

log = logging.getLogger(__name__)

CHECKPOINTS = "segflow_checkpoints"


DeadLetter = Callable[[bytes, dict[str, str]], Awaitable[None]]

DATA_ERRORS = (
    psycopg.errors.DataError,  # class 22: a value the column's type cannot take
    psycopg.errors.IntegrityError,  # class 23
    psycopg.errors.ProgramLimitExceeded,  # class 54: e.g. an index entry too large
)
"""What Postgres raises about a row's data, as opposed to the connection or the server."""


@dataclass(frozen=True)
class Parked:
    """A record no row of its table can hold, and why."""

    binding: BindingSpec
    record: ConsumerRecord
    reason: str
    sqlstate: str


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


class PostgresSink(BatchingSink):
    """Upserts each binding's documents into its table, atomically with the checkpoint."""

    def __init__(
        self,
        spec: MaterializationSpec,
        topics: Mapping[str, BindingSpec],
        dead_letter: DeadLetter | None = None,
    ) -> None:
        super().__init__(spec, topics)
        self._dsn = spec.config["dsn"]
        self._schema = spec.config["schema"]
        self._dead_letter = dead_letter
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._upserts: dict[BindingSpec, sql.Composed] = {}
        self.rows = Histogram(SIZES)
        """Rows per write (one transaction), after combining per key."""
        self.seconds = Histogram(SECONDS)
        """Duration of each write that committed."""
        self.parked = 0
        """Records parked because no row could hold them."""

    def figures(self) -> Sequence[Figure]:
        return (
            Figure("postgres_write_rows", "histogram", "Rows upserted per transaction.", self.rows),
            Figure(
                "postgres_write_seconds", "histogram", "Duration of committed writes.", self.seconds
            ),
            Figure(
                "postgres_records_parked_total",
                "counter",
                "Records parked in the dead-letter topic because Postgres rejected their data.",
                self.parked,
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
        """Merge every binding's records and move the checkpoint, in one transaction; park
        the records Postgres rejects for their data and write the others."""
        conn = await self._connection()
        began = time.monotonic()
        parts = [
            (binding, tp, some)
            for binding, records in batch.items()
            for tp, some in _by_partition(records).items()
        ]
        try:
            async with conn.pipeline(), conn.transaction():
                await self._begin(conn, through)
                for binding, tp, some in parts:
                    await conn.execute(
                        self._upsert(binding), self._parameters(binding, some, tp, through)
                    )
                await self._move_checkpoint(conn, through)
        except (*DATA_ERRORS, _Unreadable):
            # Some record cannot be a row: write the batch again, isolating it.
            async with conn.transaction():
                await self._begin(conn, through)
                parked = []
                for binding, tp, some in parts:
                    parked += await self._isolate(conn, binding, tp, some, through)
                await self._move_checkpoint(conn, through)
                # Parked before the checkpoint passes them: a crash here parks them again.
                await self._park(parked)
        self.seconds.observe(time.monotonic() - began)
        self.rows.observe(sum(len(records) for records in batch.values()))

    async def _begin(
        self, conn: psycopg.AsyncConnection[Any], through: Mapping[TopicPartition, int]
    ) -> None:
        await conn.execute("set local synchronous_commit = off")
        # Per-partition locks, in one order, fence concurrent writers of a partition.
        for tp in sorted(through):
            await conn.execute(
                "select pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"segflow:{self.spec.name}:{tp.topic}:{tp.partition}",),
            )

    async def _move_checkpoint(
        self, conn: psycopg.AsyncConnection[Any], through: Mapping[TopicPartition, int]
    ) -> None:
        async with conn.cursor() as cur:
            await cur.executemany(
                sql.SQL(
                    "insert into {} as c (materialization, topic, partition, next_offset)"
                    " values (%s, %s, %s, %s)"
                    " on conflict (materialization, topic, partition) do update"
                    " set next_offset = greatest(c.next_offset, excluded.next_offset)"
                ).format(self._table(CHECKPOINTS)),
                [(self.spec.name, tp.topic, tp.partition, end) for tp, end in through.items()],
            )

    def _upsert(self, binding: BindingSpec) -> sql.Composed:
        statement = self._upserts.get(binding)
        if statement is None:
            statement = self._upserts[binding] = _upsert(
                self._table(_table_name(binding)), self._table(CHECKPOINTS), _shape(binding)
            )
        return statement

    def _parameters(
        self,
        binding: BindingSpec,
        records: Sequence[ConsumerRecord],
        tp: TopicPartition,
        through: Mapping[TopicPartition, int],
    ) -> tuple[Any, ...]:
        """The upsert's parameters for one partition's records: skipped by Postgres if that
        partition's checkpoint is already at or past `through`."""
        source: tuple[Any, ...]
        try:
            if _shape(binding).keyed:
                source = ([_text(r.key) for r in records], [r.value.decode() for r in records])
            else:
                source = ((b"[" + b",".join([r.value for r in records]) + b"]").decode(),)
        except (TypeError, AttributeError, UnicodeDecodeError) as exc:  # no value, not UTF-8
            raise _Unreadable(str(exc)) from exc
        return (*source, self.spec.name, tp.topic, tp.partition, through[tp])

    async def _isolate(
        self,
        conn: psycopg.AsyncConnection[Any],
        binding: BindingSpec,
        tp: TopicPartition,
        records: Sequence[ConsumerRecord],
        through: Mapping[TopicPartition, int],
    ) -> list[Parked]:
        """Write `records` inside a savepoint; on a data error, each half the same way, down
        to the records that fail alone. Returns those."""
        try:
            parameters = self._parameters(binding, records, tp, through)
            async with conn.transaction():  # a savepoint
                await conn.execute(self._upsert(binding), parameters)
            return []
        except DATA_ERRORS as exc:
            if len(records) == 1:
                state = exc.sqlstate or ""
                return [Parked(binding, records[0], f"{type(exc).__name__}: {exc}", state)]
        except _Unreadable as exc:
            if len(records) == 1:
                return [Parked(binding, records[0], f"not a UTF-8 JSON document: {exc}", "")]
        half = len(records) // 2
        return [
            *await self._isolate(conn, binding, tp, records[:half], through),
            *await self._isolate(conn, binding, tp, records[half:], through),
        ]

    async def _park(self, parked: Sequence[Parked]) -> None:
        for item in parked:
            record = item.record
            log.error(
                "%s: parking the record at %s[%d]@%d (key %r): table %r cannot hold it: %s",
                self.spec.name,
                record.topic,
                record.partition,
                record.offset,
                record.key,
                _table_name(item.binding),
                item.reason,
            )
            if self._dead_letter is None:
                raise DocumentError(item.reason)
            headers = {
                "materialization": self.spec.name,
                "table": _table_name(item.binding),
                "collection": item.binding.source,
                "error": item.reason,
                "sqlstate": item.sqlstate,
                "topic": record.topic,
                "partition": str(record.partition),
                "offset": str(record.offset),
                "key": _shown(record.key),
            }
            try:
                await self._dead_letter(record.value or b"", headers)
            except Exception as exc:  # whatever the producer raises: the write is retried
                raise ParkingFailed(f"{self.spec.name}: cannot park a record ({exc!r})") from exc
            self.parked += 1

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


class _Unreadable(Exception):
    """A record's key or value is not text Postgres can be given (absent, not UTF-8)."""


class ParkingFailed(SegflowError):
    """The dead-letter topic did not take a parked record; the write is tried again."""

    retriable = True


class DocumentError(SegflowError):
    """A record no row can hold, and no dead-letter topic to park it in. Not retriable."""

    retriable = False


def _by_partition(records: Sequence[ConsumerRecord]) -> dict[TopicPartition, list[ConsumerRecord]]:
    parts: dict[TopicPartition, list[ConsumerRecord]] = {}
    for record in records:
        parts.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
    return parts


def _shown(key: bytes | None) -> str:
    if key is None:
        return ""
    try:
        return key.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(key).decode()


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
