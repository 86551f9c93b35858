"""PostgresSink: opening the tables, positions, the write with its checkpoint in one
transaction, and isolating and parking the records Postgres rejects (the write path and the
parking are explained in the package docstring).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from aiokafka import ConsumerRecord, TopicPartition
from psycopg import sql

from materializations.base import BatchingSink
from materializations.postgres.parking import (
    DATA_ERRORS,
    DeadLetter,
    Parked,
    Unreadable,
    park,
)
from materializations.postgres.shapes import create, shape_of, table_name, upsert
from pipeline.catalog import BindingSpec, MaterializationSpec
from pipeline.figures import SECONDS, SIZES, Figure, Histogram

# The package's name, as before the split: log lines read the same.
log = logging.getLogger("materializations.postgres")

CHECKPOINTS = "segflow_checkpoints"


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
                for statement in create(self._schema, table_name(binding), shape_of(binding)):
                    await conn.execute(statement)
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
        except (*DATA_ERRORS, Unreadable):
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
            statement = self._upserts[binding] = upsert(
                self._schema, table_name(binding), self._table(CHECKPOINTS), shape_of(binding)
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
            if shape_of(binding).keyed:
                source = ([_text(r.key) for r in records], [_document(r.value) for r in records])
            else:
                # Tombstones: only a keyed shape deletes rows by key; a shape with its own
                # statement handles deletions from the documents (profile/records).
                values = [r.value for r in records if r.value is not None]
                source = ((b"[" + b",".join(values) + b"]").decode(),)
        except (TypeError, AttributeError, UnicodeDecodeError) as exc:  # no value, not UTF-8
            raise Unreadable(str(exc)) from exc
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
        except Unreadable as exc:
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
                table_name(item.binding),
                item.reason,
            )
            headers = {"materialization": self.spec.name, "table": table_name(item.binding)}
            await park(self._dead_letter, item, self.spec.name, headers)
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


def _by_partition(records: Sequence[ConsumerRecord]) -> dict[TopicPartition, list[ConsumerRecord]]:
    parts: dict[TopicPartition, list[ConsumerRecord]] = {}
    for record in records:
        parts.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
    return parts


def _text(key: bytes | None) -> str | None:
    return key.decode() if key is not None else None


def _document(value: bytes | None) -> str | None:
    """A record's document text; None for a tombstone (its row is deleted)."""
    return value.decode() if value is not None else None
