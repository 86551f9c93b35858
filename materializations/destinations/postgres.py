"""PostgresDestination: a destination (SPEC 9) kept as a table of its own database.

`<schema>.<table>` in the database of `config['dsn']` (not necessarily Segflow's) holds a row
`(record, properties, groups, updated_at)` per record the destination has. From each record's
newest document in a write (`exports.view_of`; a tombstone is a record merged away):
- in a tracked group: `sync` and `additive` upsert its mapped properties and sorted tags;
  `enrich` updates its row and never inserts one (a record without a row is *skipped*);
- not in (it left its last tracked group, or was merged away): `sync` deletes the row,
  `additive` and `enrich` keep it without tags (with the current mapped properties while the
  record exists).
A row whose values would not change is not written, so `updated_at` is when the record's view
last changed. With `events`, enriched events (`exports.enriched`, from the forwarded
collection) go to `<table>_events`, one row per product event id (redeliveries ignored; in
`enrich` mode only those of records the table has).

A write is one transaction in one round trip (pipeline mode): per-partition advisory locks, at
most one statement per kind (upsert, update, delete, events) reading its rows from one JSON
parameter, then the checkpoint in `<schema>.segflow_destination_checkpoints` of that same
database. Each statement leaves out the rows of a partition whose checkpoint is at or past the
write's end (a replay, a zombie writer), so the table never goes back in time. As in
`materializations.postgres`, what Postgres rejects for its data is isolated by halving inside
savepoints and parked in the dead-letter topic before the checkpoint passes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from aiokafka import ConsumerRecord, TopicPartition
from psycopg import sql

from materializations.base import BatchingSink
from materializations.destinations.exports import enriched, mapped_properties, view_of
from materializations.postgres.parking import (
    DATA_ERRORS,
    DeadLetter,
    Parked,
    park,
)
from pipeline.catalog import BindingSpec, MaterializationSpec
from pipeline.catalog.profiles import forwarded
from pipeline.catalog.specs import DestinationSpec
from pipeline.errors import SegflowError
from pipeline.figures import SECONDS, SIZES, Figure, Histogram

log = logging.getLogger(__name__)

CHECKPOINTS = "segflow_destination_checkpoints"

# The tables' columns (SPEC 9 fixes the destination's own).
TABLE = "record text primary key, properties jsonb, groups text[], updated_at timestamptz"
EVENTS_TABLE = (
    "event uuid primary key, record text, type text, occurred_at timestamptz,"
    " properties jsonb, groups text[], document jsonb"
)
CHECKPOINTS_TABLE = (
    "destination text, topic text, partition int, next_offset bigint not null,"
    " primary key (destination, topic, partition)"
)

UPSERT, UPDATE, DELETE, EVENTS, CHECKPOINT = "upsert", "update", "delete", "events", "checkpoint"
"""A write's statements: one per kind of rows it has, in this order, then the checkpoint."""

Row = tuple[ConsumerRecord, dict[str, Any]]
"""A statement's row (as JSON) and the record it comes from, parked if no row can hold it."""

_RECORD_COLUMNS = "k int, r text, p jsonb, g text[]"
_EVENT_COLUMNS = "k int, e uuid, r text, t text, o timestamptz, p jsonb, g text[], d jsonb"
"""An event row: `d` is the product event; the document is the enriched event (SPEC 9)."""


class PostgresDestination(BatchingSink):
    """Keeps a destination's table (and events table) in sync with the profile records.

    `spec` and `topics` are the materialization the runtime consumes for it: the records
    collection and, when the destination lists `events`, its forwarded collection
    (`profiles.forwarded`). `settings_postgres` and `settings_schema` (Segflow's own database)
    stand in for a config without `dsn` or `schema`.
    """

    def __init__(
        self,
        destination: DestinationSpec,
        spec: MaterializationSpec,
        topics: Mapping[str, BindingSpec],
        *,
        dead_letter: DeadLetter | None = None,
        settings_postgres: str | None = None,
        settings_schema: str = "public",
    ) -> None:
        super().__init__(spec, topics)
        self.destination = destination
        config = destination.config
        dsn = config.get("dsn") or settings_postgres
        if not dsn or not config.get("table"):
            raise SegflowError(f"destination '{destination.name}': postgres needs a dsn and table")
        self._dsn = dsn
        self._schema = config.get("schema") or settings_schema
        self._name = config["table"]
        self._dead_letter = dead_letter
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._events_from = {b for b in topics.values() if b.source.endswith(forwarded(""))}
        self._events: list[ConsumerRecord] = []
        """Every forwarded record since the last write: events are not combined per key."""
        self._statements = _statements(destination, self._schema, self._name)
        self.upserted = self.deleted = self.events = self.parked = 0
        """Rows inserted or changed (a leaver's tags cleared too), rows deleted, enriched events
        written (not their redeliveries), records parked."""
        self.skipped = 0
        """Records in the destination that `enrich` did not write: the table has no row."""
        self.sizes = Histogram(SIZES)
        """Records and events per write, after combining per record."""
        self.seconds = Histogram(SECONDS)

    def figures(self) -> Sequence[Figure]:
        table = (
            ("rows_upserted_total", "counter", "Rows inserted or changed.", self.upserted),
            ("rows_deleted_total", "counter", "Rows deleted (sync).", self.deleted),
            ("records_skipped_total", "counter", "Records enrich had no row for.", self.skipped),
            ("events_written_total", "counter", "Enriched events written.", self.events),
            ("records_parked_total", "counter", "Records whose data was rejected.", self.parked),
            ("write_records", "histogram", "Records and events per write.", self.sizes),
            ("write_seconds", "histogram", "Duration of committed writes.", self.seconds),
        )
        return tuple(Figure(f"destination_postgres_{n}", k, h, v) for n, k, h, v in table)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        # A connection lost in a failed write is replaced on the next call.
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=False)
        return self._conn

    async def open(self) -> None:
        conn = await self._connection()
        async with conn.transaction():
            # Serialises workers starting at once: `if not exists` alone races in the catalog.
            await _lock(conn, f"segflow:ddl:{self._schema}")
            cur = await conn.execute(
                "select 1 from pg_namespace where nspname = %s", (self._schema,)
            )
            if await cur.fetchone() is None:
                await conn.execute(sql.SQL("create schema {}").format(sql.Identifier(self._schema)))
            for statement in _creates(self._schema, self._name, bool(self.destination.events)):
                await conn.execute(statement)

    async def positions(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        conn = await self._connection()
        async with conn.transaction():
            cur = await conn.execute(
                sql.SQL(
                    "select topic, partition, next_offset from {}"
                    " where destination = %s and topic = any(%s)"
                ).format(sql.Identifier(self._schema, CHECKPOINTS)),
                (self.destination.name, sorted({tp.topic for tp in partitions})),
            )
            stored = {TopicPartition(t, p): int(o) for t, p, o in await cur.fetchall()}
        return {tp: stored.get(tp) for tp in partitions}

    async def apply(self, binding: BindingSpec, records: Sequence[ConsumerRecord]) -> None:
        if binding in self._events_from:
            self._events.extend(records)
        await super().apply(binding, records)

    async def write(
        self,
        batch: Mapping[BindingSpec, list[ConsumerRecord]],
        through: Mapping[TopicPartition, int],
    ) -> None:
        """The batch's statements and the checkpoint, in one transaction; records Postgres
        rejects for their data are parked and the others written."""
        conn = await self._connection()
        began = time.monotonic()
        parts = sorted(through)
        index = {tp: k for k, tp in enumerate(parts)}
        ends = [
            {"k": k, "t": tp.topic, "n": tp.partition, "e": through[tp]} for tp, k in index.items()
        ]
        guard = orjson.dumps(ends).decode()
        records = [r for b, some in batch.items() if b not in self._events_from for r in some]
        plan, unreadable = self._plan(records, self._events, index)
        # Out of the write whatever happens to it: a retried write parks them again.
        await self._park(unreadable)
        cursors: list[tuple[str, psycopg.AsyncCursor[Any]]] = []
        try:
            async with conn.pipeline(), conn.transaction():
                await self._begin(conn, parts)
                for kind, rows in plan.items():
                    cursors.append((kind, await conn.execute(*self._statement(kind, rows, guard))))
                await conn.execute(self._statements[CHECKPOINT], self._parameters(guard))
        except DATA_ERRORS:
            # Some row cannot be stored: write the batch again, isolating it.
            cursors = []
            async with conn.transaction():
                await self._begin(conn, parts)
                parked = []
                for kind, rows in plan.items():
                    parked += await self._isolate(conn, kind, rows, guard, cursors)
                await conn.execute(self._statements[CHECKPOINT], self._parameters(guard))
                # Parked before the checkpoint passes them: a crash here parks them again.
                await self._park(parked)
        for kind, cur in cursors:
            await self._count(kind, cur)
        self._events = []
        self.seconds.observe(time.monotonic() - began)
        self.sizes.observe(len(records) + len(plan.get(EVENTS, ())))

    def _statement(self, kind: str, rows: Sequence[Row], guard: str) -> tuple[sql.Composed, Any]:
        """`kind`'s statement over `rows`, and its parameters (`_statements`)."""
        values = orjson.dumps([row for _, row in rows]).decode()
        return self._statements[kind], {"rows": values, **self._parameters(guard)}

    def _parameters(self, guard: str) -> dict[str, str]:
        return {"parts": guard, "name": self.destination.name}

    def _plan(
        self,
        records: Sequence[ConsumerRecord],
        events: Sequence[ConsumerRecord],
        index: Mapping[TopicPartition, int],
    ) -> tuple[dict[str, list[Row]], list[Parked]]:
        """Each statement's rows (only the statements that have some), and the records that
        cannot be read."""
        spec = self.destination
        rows: dict[str, dict[str, Row]] = {kind: {} for kind in (UPSERT, UPDATE, DELETE, EVENTS)}
        parked: list[Parked] = []
        row: dict[str, Any]
        for record in records:
            try:
                document = None if record.value is None else orjson.loads(record.value)
                r = _record_id(record.key, document)
                view = view_of(spec, document)
                if view is not None:
                    row = {"r": r, "p": view.properties, "g": view.groups}
                    kind = UPDATE if spec.mode == "enrich" else UPSERT
                else:
                    current = None if document is None else mapped_properties(spec, document)
                    row = {"r": r, "p": current, "g": ()}
                    kind = DELETE if spec.mode == "sync" else UPDATE
            except (AttributeError, TypeError, KeyError, ValueError) as exc:
                parked.append(self._unreadable(record, exc))
                continue
            row["k"] = index[TopicPartition(record.topic, record.partition)]
            rows[kind][r] = (record, row)
        for record in events:
            try:
                if record.value is None:
                    continue
                value = orjson.loads(record.value)
                event, document = value["event"], value["document"]
                out = enriched(spec, event, document)
                if out is None or event["id"] in rows[EVENTS]:
                    continue
                occurred = event.get("occurredAt") or _instant(record.timestamp)
            except (AttributeError, TypeError, KeyError, ValueError) as exc:
                parked.append(self._unreadable(record, exc))
                continue
            row = {
                "k": index[TopicPartition(record.topic, record.partition)],
                "e": event["id"],
                "r": out["record"],
                "t": event["type"],
                "o": occurred,
                "p": out["properties"],
                "g": out["groups"],
                "d": out["event"],
            }
            rows[EVENTS][event["id"]] = (record, row)
        return {kind: list(some.values()) for kind, some in rows.items() if some}, parked

    def _unreadable(self, record: ConsumerRecord, exc: Exception) -> Parked:
        return Parked(self.topics[record.topic], record, f"not a readable document: {exc!r}", "")

    async def _begin(
        self, conn: psycopg.AsyncConnection[Any], parts: Sequence[TopicPartition]
    ) -> None:
        await conn.execute("set local synchronous_commit = off")
        # Per-partition locks, in one order, fence concurrent writers of a partition.
        name = self.destination.name
        for tp in parts:
            await _lock(conn, f"segflow:destination:{name}:{tp.topic}:{tp.partition}")

    async def _isolate(
        self,
        conn: psycopg.AsyncConnection[Any],
        kind: str,
        rows: Sequence[Row],
        guard: str,
        cursors: list[tuple[str, psycopg.AsyncCursor[Any]]],
    ) -> list[Parked]:
        """Run `kind` over `rows` inside a savepoint; on a data error, each half the same way,
        down to the rows that fail alone. Returns their records; adds the others' cursors."""
        try:
            async with conn.transaction():  # a savepoint
                cursors.append((kind, await conn.execute(*self._statement(kind, rows, guard))))
            return []
        except DATA_ERRORS as exc:
            if len(rows) == 1:
                reason, state = f"{type(exc).__name__}: {exc}", exc.sqlstate or ""
                return [Parked(self.topics[rows[0][0].topic], rows[0][0], reason, state)]
        half = len(rows) // 2
        return [
            *await self._isolate(conn, kind, rows[:half], guard, cursors),
            *await self._isolate(conn, kind, rows[half:], guard, cursors),
        ]

    async def _park(self, parked: Sequence[Parked]) -> None:
        for item in parked:
            record, name = item.record, self.destination.name
            where = f"{record.topic}[{record.partition}]@{record.offset}"
            log.error("destination %s: parking the record at %s: %s", name, where, item.reason)
            headers = {
                "materialization": self.spec.name,
                "destination": name,
                "table": f"{self._schema}.{self._name}",
            }
            await park(self._dead_letter, item, f"destination {name}", headers)
            self.parked += 1

    async def _count(self, kind: str, cur: psycopg.AsyncCursor[Any]) -> None:
        if kind == UPDATE:  # a row of counts: rows changed, records skipped
            changed, skipped = await cur.fetchone() or (0, 0)
            self.upserted, self.skipped = self.upserted + changed, self.skipped + skipped
        elif kind == UPSERT:
            self.upserted += cur.rowcount
        elif kind == DELETE:
            self.deleted += cur.rowcount
        else:
            self.events += cur.rowcount

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


async def _lock(conn: psycopg.AsyncConnection[Any], name: str) -> None:
    await conn.execute("select pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))


def _record_id(key: bytes | None, document: Mapping[str, Any] | None) -> str:
    """The record's id: its document's, or a tombstone's key's (`["<id>"]`)."""
    if document is not None:
        return str(document["id"])
    if key is None:
        raise ValueError("a tombstone without a key")
    decoded = orjson.loads(key)
    return str(decoded[0] if isinstance(decoded, list) else decoded)


def _instant(timestamp_ms: int) -> str:
    """A Kafka record timestamp as RFC 3339 (an event without `occurredAt`)."""
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat()


def _creates(schema: str, name: str, events: bool) -> list[sql.Composed]:
    """The tables a destination writes, if missing: its own, the checkpoints, and its
    events' when it forwards events."""
    tables = {name: TABLE, CHECKPOINTS: CHECKPOINTS_TABLE} | (
        {name + "_events": EVENTS_TABLE} if events else {}
    )
    return [
        sql.SQL("create table if not exists {} ({})").format(sql.Identifier(schema, t), sql.SQL(c))
        for t, c in tables.items()
    ]


def _statements(spec: DestinationSpec, schema: str, name: str) -> dict[str, sql.Composed]:
    """Each kind's statement. Parameters: `rows` (a JSON array of the kind's rows), `parts`
    (each partition of the write: `k`, topic `t`, partition `n`, end `e`) and `name` (the
    destination's). Rows of a partition whose checkpoint is at or past its end are left out."""
    table, events = sql.Identifier(schema, name), sql.Identifier(schema, name + "_events")
    checkpoints = sql.Identifier(schema, CHECKPOINTS)

    parts = "jsonb_to_recordset(%(parts)s::jsonb) as p(k int, t text, n int, e bigint)"

    def source(columns: str) -> sql.Composed:
        return sql.SQL(
            "with live as (select p.k from " + parts + " where coalesce((select c.next_offset"
            " from {checkpoints} as c where c.destination = %(name)s and c.topic = p.t"
            " and c.partition = p.n), -1) < p.e),"
            " v as (select v.* from jsonb_to_recordset(%(rows)s::jsonb) as v({columns})"
            " where v.k in (select k from live))"
        ).format(checkpoints=checkpoints, columns=sql.SQL(columns))

    rows, enrich = source(_RECORD_COLUMNS), spec.mode == "enrich"
    # In enrich mode a record is in the destination only if the table has it.
    kept = " where exists (select 1 from {table} as t where t.record = v.r)"
    return {
        UPSERT: sql.SQL(
            "{rows} insert into {table} as t (record, properties, groups, updated_at)"
            " select v.r, v.p, v.g, now() from v"
            " on conflict (record) do update set properties = excluded.properties,"
            " groups = excluded.groups, updated_at = excluded.updated_at"
            " where (t.properties, t.groups)"
            " is distinct from (excluded.properties, excluded.groups)"
        ).format(rows=rows, table=table),
        # A row the update does not find is a record enrich skips (when it is in: tags).
        UPDATE: sql.SQL(
            "{rows}, u as (update {table} as t set properties = coalesce(v.p, t.properties),"
            " groups = v.g, updated_at = now() from v where t.record = v.r"
            " and (t.properties, t.groups) is distinct from (coalesce(v.p, t.properties), v.g)"
            " returning 1)"
            " select (select count(*) from u), (select count(*) from v where cardinality(v.g) > 0"
            " and not exists (select 1 from {table} as t where t.record = v.r))"
        ).format(rows=rows, table=table),
        DELETE: sql.SQL("{rows} delete from {table} as t using v where t.record = v.r").format(
            rows=rows, table=table
        ),
        EVENTS: sql.SQL(
            "{rows} insert into {events}"
            " (event, record, type, occurred_at, properties, groups, document)"
            " select v.e, v.r, v.t, v.o, v.p, v.g, jsonb_build_object('event', v.d, 'record', v.r,"
            " 'properties', v.p, 'groups', to_jsonb(v.g)) from v"
            + (kept if enrich else "")
            + " on conflict (event) do nothing"
        ).format(rows=source(_EVENT_COLUMNS), events=events, table=table),
        CHECKPOINT: sql.SQL(
            "insert into {checkpoints} as c (destination, topic, partition, next_offset)"
            " select %(name)s, p.t, p.n, p.e from " + parts + " on conflict"
            " (destination, topic, partition) do update"
            " set next_offset = greatest(c.next_offset, excluded.next_offset)"
        ).format(checkpoints=checkpoints),
    }
