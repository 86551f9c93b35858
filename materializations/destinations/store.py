"""What a destination acknowledged, kept in Segflow's own Postgres (`SEGFLOW_POSTGRES`, schema
`SEGFLOW_POSTGRES_SCHEMA`); the tables are created if missing:

- `segflow_destination_acks(destination, record, partition, position, view jsonb)`: per
  record, the view the destination last acknowledged (null: it holds nothing) and the
  records-topic offset of the document it reflects. A row with a null view is kept only
  while its position is at or past the checkpoint (it tells a document read again after a
  restart from a new one); later ones are deleted with the checkpoint that passes them.
- `segflow_destination_checkpoints(destination, topic, partition, next_offset)`: where each
  source partition resumes.
- `segflow_destination_outbox(destination, partition, webhook_id, body, through jsonb,
  changes jsonb, exports, events)`: the request a lane has prepared and not yet settled, with
  the offsets it covers (`through`, per topic) and what its answer changes.

A lane writes its outbox row in one transaction before it sends, and settles in another —
baselines, checkpoint, the row deleted — once answered. Operations are shielded from
cancellation (a revoked lane's transaction completes or rolls back whole). Each lane has a
connection of its own, used by one operation at a time (each is a few statements), so lanes do
not queue behind each other's round trips; start-up and assignment use another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb, set_json_loads

from materializations.destinations.batches import Baseline, Change
from materializations.destinations.exports import View

ACKS = "segflow_destination_acks"
CHECKPOINTS = "segflow_destination_checkpoints"
OUTBOX = "segflow_destination_outbox"

T = TypeVar("T")
SHARED = -1
"""The connection of operations on several partitions (start-up, assignment)."""


@dataclass
class Outbox:
    """A prepared request (an empty body: nothing to send, only the checkpoint moves)."""

    partition: int
    message_id: str
    body: bytes
    through: dict[str, int]
    changes: list[Change]
    exports: int
    events: int
    written: bool = False
    """Whether its row is in the outbox table (a row read back at start is)."""
    outcome: str | None = None
    """'ok', 'skipped' (404 in enrich mode) or 'parked' once answered; None before."""


class Store:
    """One destination's tables."""

    def __init__(self, dsn: str, schema: str, destination: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self.destination = destination
        self._conns: dict[int, psycopg.AsyncConnection[Any]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        """A connection per lane (partition), each used by one operation at a time, so lanes
        do not wait for each other's round trips; `SHARED` for the rest."""

    def _table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    async def open(self) -> None:
        async def create(conn: psycopg.AsyncConnection[Any]) -> None:
            # Serialises workers starting at once: `if not exists` alone races in the catalog.
            await conn.execute(
                "select pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"segflow:ddl:{self.schema}",),
            )
            await conn.execute(
                sql.SQL("create schema if not exists {}").format(sql.Identifier(self.schema))
            )
            for statement in (
                "create table if not exists {acks} (destination text, record text,"
                " partition int not null, position bigint not null, view jsonb,"
                " primary key (destination, record))",
                "create index if not exists {gone} on {acks} (destination, partition, position)"
                " where view is null",
                "create table if not exists {checkpoints} (destination text, topic text,"
                " partition int, next_offset bigint not null,"
                " primary key (destination, topic, partition))",
                "create table if not exists {outbox} (destination text, partition int,"
                " webhook_id text not null, body bytea not null, through jsonb not null,"
                " changes jsonb not null, exports int not null, events int not null,"
                " primary key (destination, partition))",
            ):
                await conn.execute(
                    sql.SQL(statement).format(
                        acks=self._table(ACKS),
                        gone=sql.Identifier(ACKS + "_gone"),
                        checkpoints=self._table(CHECKPOINTS),
                        outbox=self._table(OUTBOX),
                    )
                )

        await self._run(create)

    async def close(self) -> None:
        for slot in list(self._locks):
            async with self._locks[slot]:  # after every operation already under way
                conn = self._conns.pop(slot, None)
                if conn is not None:
                    await conn.close()

    async def settled(self) -> None:
        """Return once every operation already under way has finished (a revoked lane's)."""
        for lock in list(self._locks.values()):
            async with lock:
                pass

    async def checkpoints(self, partitions: Collection[int]) -> dict[tuple[str, int], int]:
        """(topic, partition) -> next offset, for the partitions that have one."""

        async def read(conn: psycopg.AsyncConnection[Any]) -> dict[tuple[str, int], int]:
            cursor = await conn.execute(
                sql.SQL(
                    "select topic, partition, next_offset from {} where destination = %s"
                    " and partition = any(%s)"
                ).format(self._table(CHECKPOINTS)),
                (self.destination, list(partitions)),
            )
            return {(topic, p): offset for topic, p, offset in await cursor.fetchall()}

        return await self._run(read)

    async def outboxes(self, partitions: Collection[int]) -> dict[int, Outbox]:
        """The requests prepared and not settled before a stop or crash, by partition."""

        async def read(conn: psycopg.AsyncConnection[Any]) -> dict[int, Outbox]:
            cursor = await conn.execute(
                sql.SQL(
                    "select partition, webhook_id, body, through, changes, exports, events"
                    " from {} where destination = %s and partition = any(%s)"
                ).format(self._table(OUTBOX)),
                (self.destination, list(partitions)),
            )
            found = {}
            for p, msg_id, body, through, changes, exports, events in await cursor.fetchall():
                found[p] = Outbox(
                    p, msg_id, bytes(body), through, _changes(changes), exports, events, True
                )
            return found

        return await self._run(read)

    async def baselines(self, records: Collection[str], partition: int) -> dict[str, Baseline]:
        """What the destination acknowledged of each of `records` that it has a row for."""

        async def read(conn: psycopg.AsyncConnection[Any]) -> dict[str, Baseline]:
            cursor = await conn.execute(
                sql.SQL(
                    "select record, position, view from {} where destination = %s"
                    " and record = any(%s)"
                ).format(self._table(ACKS)),
                (self.destination, list(records)),
            )
            return {
                record: Baseline(position, None if view is None else View.from_json(view))
                for record, position, view in await cursor.fetchall()
            }

        return await self._run(read, partition)

    async def write(self, outbox: Outbox) -> None:
        """The outbox row, before the request is sent."""

        async def insert(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                sql.SQL(
                    "insert into {} (destination, partition, webhook_id, body, through, changes,"
                    " exports, events) values (%s, %s, %s, %s, %s, %s::jsonb, %s, %s)"
                    # A write whose commit was not confirmed is done again: the same row.
                    " on conflict (destination, partition) do update set"
                    " webhook_id = excluded.webhook_id, body = excluded.body,"
                    " through = excluded.through, changes = excluded.changes,"
                    " exports = excluded.exports, events = excluded.events"
                ).format(self._table(OUTBOX)),
                (
                    self.destination,
                    outbox.partition,
                    outbox.message_id,
                    outbox.body,
                    Jsonb(outbox.through),
                    orjson.dumps([_change_json(c) for c in outbox.changes]).decode(),
                    outbox.exports,
                    outbox.events,
                ),
            )

        await self._run(insert, outbox.partition)

    async def settle(self, outbox: Outbox, records_topic: str) -> None:
        """Record what the answer changed, move the checkpoint, delete the outbox row: at once.
        Views change only if the destination acknowledged; positions whatever the answer."""
        acknowledged = outbox.outcome == "ok"

        async def apply(conn: psycopg.AsyncConnection[Any]) -> None:
            p = outbox.partition
            # Two statements, each taking its rows as one JSON array (one round trip, no
            # per-row adaptation): acknowledged views replace the baseline, the rest only
            # move the position.
            views = [
                [c.record, c.position, None if c.view is None else c.view.as_json()]
                for c in outbox.changes
                if acknowledged and c.touched
            ]
            positions = [
                [c.record, c.position] for c in outbox.changes if not (acknowledged and c.touched)
            ]
            for rows, view, keep in (
                (views, "nullif(r -> 2, 'null'::jsonb)", "excluded.view"),
                (positions, "null::jsonb", "a.view"),
            ):
                if not rows:
                    continue
                await conn.execute(
                    sql.SQL(
                        "insert into {acks} as a (destination, record, partition, position, view)"
                        " select %s, r ->> 0, %s, (r ->> 1)::bigint, {view}"
                        " from jsonb_array_elements(%s::jsonb) as r"
                        " on conflict (destination, record) do update set"
                        " position = greatest(a.position, excluded.position), view = {keep}"
                    ).format(acks=self._table(ACKS), view=sql.SQL(view), keep=sql.SQL(keep)),
                    (self.destination, p, orjson.dumps(rows).decode()),
                )
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    sql.SQL(
                        "insert into {} as c (destination, topic, partition, next_offset)"
                        " values (%s, %s, %s, %s) on conflict (destination, topic, partition)"
                        " do update set next_offset = greatest(c.next_offset, excluded.next_offset)"
                    ).format(self._table(CHECKPOINTS)),
                    [(self.destination, t, p, o) for t, o in sorted(outbox.through.items())],
                )
            if records_topic in outbox.through:
                await conn.execute(
                    sql.SQL(
                        "delete from {} where destination = %s and partition = %s"
                        " and view is null and position < %s"
                    ).format(self._table(ACKS)),
                    (self.destination, p, outbox.through[records_topic]),
                )
            if outbox.written:
                await conn.execute(
                    sql.SQL("delete from {} where destination = %s and partition = %s").format(
                        self._table(OUTBOX)
                    ),
                    (self.destination, p),
                )

        await self._run(apply, outbox.partition)

    async def _run(
        self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], slot: int = SHARED
    ) -> T:
        """`work` in one transaction on `slot`'s connection, shielded from the caller's
        cancellation."""
        task = asyncio.ensure_future(self._locked(work, slot))
        task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    async def _locked(
        self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], slot: int
    ) -> T:
        lock = self._locks.setdefault(slot, asyncio.Lock())
        async with lock:
            conn = self._conns.get(slot)
            if conn is None or conn.closed or conn.broken:
                conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=False)
                set_json_loads(orjson.loads, conn)  # baselines come back as jsonb: fast
                self._conns[slot] = conn
            try:
                async with conn.transaction():
                    return await work(conn)
            except psycopg.OperationalError:
                await conn.close()  # the next operation connects again
                raise


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a shielded operation's failure as seen when its caller was cancelled meanwhile."""
    if not task.cancelled():
        task.exception()


def _change_json(change: Change) -> list[Any]:
    view = None if change.view is None else change.view.as_json()
    return [change.record, change.position, change.touched, view]


def _changes(raw: Iterable[list[Any]]) -> list[Change]:
    return [
        Change(record, position, touched, None if view is None else View.from_json(view))
        for record, position, touched, view in raw
    ]
