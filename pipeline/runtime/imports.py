"""Imports (SPEC 10): rows of a Postgres table or query, read by high watermark, into records.

A run reads the rows whose watermark is at least the last one seen, in watermark order, a page at
a time, and turns each row into an import document
`{"id", "import": NAME, "userId" | "anonymousId", "occurredAt", "values": {column: value}}`.
A row naming a userId goes straight to the records stage (`{"r": userId, "im": document}` in
`<records>.identified`, partitioned by record: its record is the userId, there is no link to
look up); a row naming an anonymousId goes into the identity stage's shuffle topic, keyed like
that device's product events, and follows their path (links, merges) to its record. The records
stage drops a row it has applied (the events collection's dedup window) and sets the import's
properties (`derivations.profiles.extract.ImportProperty`).

Paging never loses a row, even when many rows share a watermark across a page boundary:
- a page is `watermark >= W order by watermark limit pageSize`; the next one starts at the last
  row's watermark again, so the rows of that watermark the page cut off are read with it (those
  already read are read twice: same document id, dropped);
- a page whose rows all share one watermark W (there may be more of them than a page holds) is
  followed by the rows of W in the order of their text (`s::text`), a page at a time, by keyset
  (`s::text > the last row's`), and then by `watermark > W`.
The document id is a function of the import and the row's text, so a row read twice changes
nothing and a row that changed (its watermark did) is applied as the change it is. Rows get
increasing occurredAt (microseconds, never going back, kept in the checkpoint) in the order they
are read, so the property takes the row with the greatest watermark.

The checkpoint (watermark text as Postgres writes it, the paging mode, the keyset row, the last
occurredAt) is kept in Segflow's own Postgres, `segflow_import_checkpoints`, and saved after each
page once the page's documents are acknowledged by the broker: a restart resumes at the page it
was in. A source that cannot be reached is retried with backoff (`ImportStats.errors`), a row
without an identity is skipped with a warning (`skipped`): it names nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from psycopg import sql
from psycopg.rows import dict_row

from derivations.profiles.extract import ImportProperty, compile_all
from pipeline.catalog import Catalog
from pipeline.catalog.profiles import identified
from pipeline.catalog.specs import ImportSpec
from pipeline.errors import SegflowError
from pipeline.runtime.batches import BatchWriter
from pipeline.runtime.groups import record_key
from pipeline.runtime.topics import Names, partition_for

log = logging.getLogger(__name__)

_ROW_IDS = uuid.UUID("2b7f4f0e-8c1a-5d3e-b6a4-0f9c3e5d7a21")
"""Namespace of import documents' ids (uuid5 of the import and the row's text)."""
_WATERMARK, _ROW = "__segflow_watermark", "__segflow_row"
_AS_IS = frozenset({str, int, bool, type(None)})
"""Column value types that are JSON already (`json_value` converts the others)."""


@dataclass
class Checkpoint:
    """Where an import resumes. `mode`: 'from' (rows with watermark >= `watermark`), 'after'
    (> `watermark`) or 'tie' (rows of `watermark` whose text is after `row`)."""

    watermark: str | None = None
    mode: str = "from"
    row: str | None = None
    sequence: int = 0
    """The last occurredAt given to a row, in microseconds since the epoch."""


@dataclass
class ImportStats:
    """One import's counters (the worker's `/metrics`)."""

    runs: int = 0
    pages: int = 0
    rows: int = 0
    skipped: int = 0
    errors: int = 0
    last_run_at: float = 0.0
    last_reread: int = 0
    """Rows of the last run at the watermark it began at (read again: dropped if seen)."""
    warned: set[str] = field(default_factory=set)


class Checkpoints:
    """`segflow_import_checkpoints` in Segflow's Postgres."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema
        self.table = sql.Identifier(schema, "segflow_import_checkpoints")

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        await conn.execute(
            sql.SQL(
                "create table if not exists {} (name text primary key, watermark text,"
                " mode text not null, row_text text, sequence bigint not null,"
                " updated_at timestamptz not null default now())"
            ).format(self.table)
        )
        return conn

    async def lock(self, conn: psycopg.AsyncConnection[Any], name: str, wait: bool) -> bool:
        """Take the import's lock for the connection's life (False: another holds it)."""
        which = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
        cursor = await conn.execute(
            sql.SQL("select {}(hashtextextended(%s, 0))").format(sql.Identifier(which)),
            (f"segflow import {self.schema}.{name}",),
        )
        found = await cursor.fetchone()
        return wait or bool(found and found[0])

    async def load(self, conn: psycopg.AsyncConnection[Any], name: str) -> Checkpoint:
        cursor = await conn.execute(
            sql.SQL("select watermark, mode, row_text, sequence from {} where name = %s").format(
                self.table
            ),
            (name,),
        )
        found = await cursor.fetchone()
        return Checkpoint() if found is None else Checkpoint(*found)

    async def save(self, conn: psycopg.AsyncConnection[Any], name: str, at: Checkpoint) -> None:
        await conn.execute(
            sql.SQL(
                "insert into {} (name, watermark, mode, row_text, sequence) values"
                " (%s, %s, %s, %s, %s) on conflict (name) do update set watermark ="
                " excluded.watermark, mode = excluded.mode, row_text = excluded.row_text,"
                " sequence = excluded.sequence, updated_at = now()"
            ).format(self.table),
            (name, at.watermark, at.mode, at.row, at.sequence),
        )


def json_value(value: Any) -> Any:
    """A column value as the JSON an event would carry: numbers, strings, booleans, RFC 3339
    date-times (a `date` at midnight UTC, a timestamp without zone as UTC), JSON as it is."""
    if value is None or isinstance(value, bool | int | str | dict | list):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return f"{value.isoformat()}T00:00:00Z"
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return str(value)


class ImportRunner:
    """Runs one import: `run_once` reads everything new, page by page (module docstring)."""

    def __init__(
        self,
        spec: ImportSpec,
        catalog: Catalog,
        names: Names,
        checkpoints: Checkpoints,
        producer: AIOKafkaProducer,
    ) -> None:
        profiles = catalog.profiles
        assert profiles is not None, "the catalog checks that imports feed properties"
        self.spec = spec
        self.checkpoints = checkpoints
        self.producer = producer
        self._id_prefix = _ROW_IDS.bytes + spec.name.encode() + b"\0"
        self._second, self._prefix = -1, ""
        self.stats = ImportStats()
        self.identity_key, self.identity_column = spec.identity
        self.direct = self.identity_key == "userId"
        """Rows naming a userId go straight to the records stage (the record id is the userId:
        there is no link to look up); rows naming an anonymousId go through the identity
        stage, which knows the device's person."""
        if self.direct:
            middle = identified(profiles.records)
            self.key_of: Callable[[Any], bytes] = _routed_key
            self.topic = names.collection(middle)
            self.partitions = catalog.collections[middle].partitions
        else:
            (identity,) = catalog.derivations_from(profiles.events)
            self.key_of = identity.shuffle_encoder()
            self.topic = names.shuffle(profiles.events)
            self.partitions = catalog.collections[profiles.events].partitions
        self.columns = tuple(
            prop.column
            for prop in compile_all(profiles).values()
            if isinstance(prop, ImportProperty) and prop.source == spec.name
        )

    def _source(self) -> sql.Composed | sql.SQL:
        spec = self.spec
        if spec.table is not None:
            table = sql.Identifier(*spec.table.split(".", 1))
            return sql.SQL("select * from {}").format(table)
        assert spec.query is not None
        return sql.SQL(spec.query)

    def _page(self, at: Checkpoint) -> tuple[sql.Composed, tuple[Any, ...]]:
        wm = sql.Identifier(self.spec.watermark)
        select = sql.SQL(
            "select s.*, s.{wm}::text as {w}, s::text as {r} from ({src}) as s"
        ).format(wm=wm, w=sql.Identifier(_WATERMARK), r=sql.Identifier(_ROW), src=self._source())
        limit = sql.Literal(self.spec.page_size)
        if at.mode == "tie":
            where = sql.SQL("s.{} = %s").format(wm)
            params: tuple[Any, ...] = (at.watermark,)
            if at.row is not None:
                where = sql.SQL("{} and s::text > %s").format(where)
                params += (at.row,)
            order: sql.Composed | sql.SQL = sql.SQL("s::text")
        else:
            order = sql.SQL("s.{}").format(wm)
            where = sql.SQL("s.{} is not null").format(wm)
            params = ()
            if at.watermark is not None:
                op = sql.SQL(">=" if at.mode == "from" else ">")
                where = sql.SQL("s.{} {} %s").format(wm, op)
                params = (at.watermark,)
        query = sql.SQL("{} where {} order by {} limit {}").format(select, where, order, limit)
        return query, params

    async def run_once(
        self, should_stop: Callable[[], bool] = lambda: False, *, wait_for_lock: bool = True
    ) -> int | None:
        """Read every row new since the checkpoint; the number of rows written, or None when
        another process runs the import now and `wait_for_lock` is off. The lock is Postgres'
        (an advisory lock on the checkpoint's connection): one runner per import at a time."""
        conn = await self.checkpoints.connect()
        try:
            if not await self.checkpoints.lock(conn, self.spec.name, wait_for_lock):
                return None
            at = await self.checkpoints.load(conn, self.spec.name)
            began, self.stats.last_reread = at.watermark, 0
            async with await psycopg.AsyncConnection.connect(
                self.spec.dsn, autocommit=True, row_factory=dict_row
            ) as source:
                await source.execute("set time zone 'UTC'")
                written = 0
                while not should_stop():
                    query, params = self._page(at)
                    rows = await (await source.execute(query, params)).fetchall()
                    written += await self._write(rows, at)
                    if began is not None:
                        self.stats.last_reread += sum(r[_WATERMARK] == began for r in rows)
                    at = self._next(at, rows)
                    await self.checkpoints.save(conn, self.spec.name, at)
                    self.stats.pages += 1
                    if at.mode == "from" and len(rows) < self.spec.page_size:
                        break
        finally:
            await conn.close()
        self.stats.runs += 1
        self.stats.last_run_at = time.time()
        return written

    def _next(self, at: Checkpoint, rows: list[dict[str, Any]]) -> Checkpoint:
        """The checkpoint after `rows`, the page read at `at` (module docstring)."""
        full = len(rows) == self.spec.page_size
        if at.mode == "tie":
            if full:
                return Checkpoint(at.watermark, "tie", rows[-1][_ROW], at.sequence)
            return Checkpoint(at.watermark, "after", None, at.sequence)
        if not rows:
            return Checkpoint(at.watermark, "from", None, at.sequence)
        top = rows[-1][_WATERMARK]
        if full and rows[0][_WATERMARK] == top:
            return Checkpoint(top, "tie", None, at.sequence)  # more of `top` may follow
        return Checkpoint(top, "from", None, at.sequence)

    async def _write(self, rows: list[dict[str, Any]], at: Checkpoint) -> int:
        """Send the page's documents, wait for the broker to have them all; advances
        `at.sequence` (the occurredAt of the last row)."""
        writer = BatchWriter(self.producer)
        topic, partitions, key_of, dumps = self.topic, self.partitions, self.key_of, orjson.dumps
        written = 0
        now_ms = time.time_ns() // 1_000_000
        for row in rows:
            doc = self._document(row, at)
            if doc is None:
                continue
            if self.direct:
                doc = {"r": str(doc["userId"]), "im": doc, "t": now_ms}
            key = key_of(doc)
            writer.add(topic, partition_for(key, partitions), key, dumps(doc))
            written += 1
        await writer.flush()
        self.stats.rows += written
        return written

    def _document(self, row: Mapping[str, Any], at: Checkpoint) -> dict[str, Any] | None:
        name, column = self.spec.name, self.identity_column
        identity = row.get(column)
        if identity is None or identity == "":
            self.stats.skipped += 1
            self._warn(
                f"no-identity:{column}",
                f"import {name}: skipping rows without {column} ({self.identity_key}): a row"
                " that names nobody cannot be a record's",
            )
            return None
        if type(identity) is not str and not (
            self.identity_key == "userId" and type(identity) is int
        ):
            identity = str(identity)
        values = {}
        for wanted in self.columns:
            if wanted in row:
                value = row[wanted]
                values[wanted] = value if type(value) in _AS_IS else json_value(value)
            else:
                self._warn(f"column:{wanted}", f"import {name}: its rows have no column {wanted!r}")
        at.sequence = max(at.sequence + 1, time.time_ns() // 1000)
        return {
            "id": _row_id(self._id_prefix + row[_ROW].encode()),
            "import": name,
            self.identity_key: identity,
            "occurredAt": self._when(at.sequence),
            "values": values,
        }

    def _when(self, micros: int) -> str:
        """RFC 3339 in UTC with microseconds; the whole-second part is formatted once."""
        seconds, fraction = divmod(micros, 1_000_000)
        if seconds != self._second:
            when = dt.datetime.fromtimestamp(seconds, dt.UTC)
            self._second, self._prefix = seconds, when.strftime("%Y-%m-%dT%H:%M:%S.")
        return f"{self._prefix}{fraction:06d}Z"

    def _warn(self, what: str, message: str) -> None:
        if what not in self.stats.warned:
            self.stats.warned.add(what)
            log.warning(message)


def _routed_key(doc: Any) -> bytes:
    return record_key(doc["r"])


def _row_id(name: bytes) -> str:
    """`str(uuid.uuid5(_ROW_IDS, name))` (`name` already holds the namespace's bytes), without
    building UUID objects."""
    digest = bytearray(hashlib.sha1(name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


async def run_schedule(runner: ImportRunner, stopping: asyncio.Event) -> None:
    """Run `runner` every `interval` until `stopping` is set: where no other process runs it
    now (a worker skips a round another holds the lock for). Errors of the source, Segflow's
    Postgres or the broker are retried with capped exponential backoff; the checkpoint only
    advances past pages the broker has, so nothing is skipped."""
    spec, delay = runner.spec, 1.0
    while not stopping.is_set():
        wait = spec.interval
        try:
            written = await runner.run_once(stopping.is_set, wait_for_lock=False)
            if written:
                again = runner.stats.last_reread
                log.info(
                    "import %s: %d rows read (%d of them at the watermark the run began at,"
                    " dropped if seen before)",
                    spec.name,
                    written,
                    again,
                )
            delay = 1.0
        except (psycopg.Error, OSError, KafkaError, SegflowError) as error:
            runner.stats.errors += 1
            log.warning("import %s: %s; retrying in %.1fs", spec.name, error, delay)
            wait, delay = delay, min(delay * 2, 60.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), wait)
