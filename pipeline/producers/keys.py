"""API keys for the ingestion API: created and revoked with the CLI, stored hashed in Postgres,
scoped to the collections they may write (Grouparoo's `apiKeys`).

A key is `sfk_` plus 32 random bytes in URL-safe base64 (43 characters). Only its SHA-256 is
stored. A fast hash suffices, no slow KDF: a key carries 256 bits of entropy, so nobody can guess
one from its hash, and a fast hash lets every request look its key up by an indexed equality
instead of comparing against every stored hash. Keys are never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from pipeline.catalog import Catalog, load_catalog
from pipeline.errors import SegflowError
from pipeline.runtime.settings import Settings

PREFIX = "sfk_"
TABLE = "segflow_api_keys"
_KEY = re.compile(r"sfk_[A-Za-z0-9_-]{43}")
_COLUMNS = sql.SQL("name, producer_id, collections, created_at, revoked_at")


@dataclass(frozen=True)
class KeyInfo:
    """What is known about a key, never the key or its hash."""

    name: str
    producer_id: str
    collections: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None

    def may_write(self, collection: str) -> bool:
        return collection in self.collections


class KeyStoreUnavailable(SegflowError):
    """Postgres could not be asked about a key; the request may be retried."""


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def well_formed(key: str) -> bool:
    """Whether `key` could be a Segflow key at all (checked before asking Postgres)."""
    return _KEY.fullmatch(key) is not None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None when there is none."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}").format(sql.Identifier(schema, TABLE))


def _info(row: Sequence[Any]) -> KeyInfo:
    name, producer_id, collections, created_at, revoked_at = row
    return KeyInfo(name, str(producer_id), tuple(collections), created_at, revoked_at)


async def ensure_table(conn: psycopg.AsyncConnection[Any], schema: str) -> None:
    """Create the schema and the keys table if missing."""
    async with conn.transaction():
        # Serialises processes starting at once: `if not exists` alone races in the catalog.
        await conn.execute(
            "select pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"segflow:ddl:{schema}",)
        )
        cur = await conn.execute("select 1 from pg_namespace where nspname = %s", (schema,))
        if await cur.fetchone() is None:
            await conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
        await conn.execute(
            sql.SQL(
                "create table if not exists {} (name text primary key, key_hash text not null,"
                " producer_id uuid not null, collections text[] not null,"
                " created_at timestamptz not null default now(), revoked_at timestamptz)"
            ).format(_table(schema))
        )
        await conn.execute(
            sql.SQL("create unique index if not exists {} on {} (key_hash)").format(
                sql.Identifier(f"{TABLE}_key_hash"), _table(schema)
            )
        )


async def _connect(dsn: str, schema: str) -> psycopg.AsyncConnection[Any]:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        await ensure_table(conn, schema)
    except BaseException:
        await conn.close()
        raise
    return conn


async def create_key(dsn: str, schema: str, name: str, collections: Sequence[str]) -> str:
    """Store a new key allowed to write `collections` and return it: the only time it is seen."""
    key = new_key()
    async with await _connect(dsn, schema) as conn:
        try:
            await conn.execute(
                sql.SQL(
                    "insert into {} (name, key_hash, producer_id, collections)"
                    " values (%s, %s, %s, %s)"
                ).format(_table(schema)),
                (name, hash_key(key), uuid.uuid4(), list(collections)),
            )
        except psycopg.errors.UniqueViolation:
            raise SegflowError(f"an API key named {name!r} already exists") from None
    return key


async def list_keys(dsn: str, schema: str) -> list[KeyInfo]:
    """Every key, revoked ones included, oldest first."""
    async with await _connect(dsn, schema) as conn:
        cur = await conn.execute(
            sql.SQL("select {} from {} order by created_at, name").format(_COLUMNS, _table(schema))
        )
        return [_info(row) for row in await cur.fetchall()]


async def revoke_key(dsn: str, schema: str, name: str) -> bool:
    """Revoke the key `name`; False when there is no such key that is not revoked already."""
    async with await _connect(dsn, schema) as conn:
        cur = await conn.execute(
            sql.SQL(
                "update {} set revoked_at = now() where name = %s and revoked_at is null"
            ).format(_table(schema)),
            (name,),
        )
        return cur.rowcount == 1


class KeyStore:
    """Looks keys up for the API over one connection, caching hits for `ttl` seconds.

    Revocation takes effect within `ttl`. A lookup costs a round trip to Postgres; a 1,000
    document request costs far more, so the cache mainly helps many small requests.
    """

    def __init__(self, dsn: str, schema: str, *, ttl: float = 1.0) -> None:
        self._dsn = dsn
        self._schema = schema
        self._ttl = ttl
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._cache: dict[str, tuple[float, KeyInfo]] = {}

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await _connect(self._dsn, self._schema)
        return self._conn

    async def open(self) -> None:
        async with self._lock:
            await self._connection()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def lookup(self, key: str) -> KeyInfo | None:
        """The key's info when it exists and is not revoked. Raises KeyStoreUnavailable."""
        if not well_formed(key):
            return None
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        query = sql.SQL("select {} from {} where key_hash = %s and revoked_at is null").format(
            _COLUMNS, _table(self._schema)
        )
        try:
            async with self._lock:
                conn = await self._connection()
                row = await (await conn.execute(query, (digest,))).fetchone()
        except psycopg.Error as exc:
            raise KeyStoreUnavailable(f"cannot look up API keys in Postgres: {exc}") from exc
        if row is None:
            self._cache.pop(digest, None)
            return None
        info = _info(row)
        if self._ttl > 0:
            if len(self._cache) > 10_000:  # only live keys are cached, so this is rare
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, info)
        return info


# --- CLI ---------------------------------------------------------------------------------------


def _dsn(settings: Settings) -> str:
    if not settings.postgres:
        raise SegflowError("SEGFLOW_POSTGRES is not set: which Postgres holds the API keys?")
    return settings.postgres


def parse_collections(text: str, catalog: Catalog) -> list[str]:
    """'a,b' -> ['a', 'b'], each a collection of the catalog that may be ingested."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise SegflowError("--collections: expected at least one collection name")
    writable = catalog.captured()
    for name in names:
        if name in catalog.collections and name not in writable:
            source = catalog.captured_source(name)
            how = f"derived from {source!r}" if source != name else "written by the records stage"
            raise SegflowError(
                f"collection {name!r} is {how} and cannot be ingested; expected one of {writable}"
            )
        if name not in catalog.collections:
            raise SegflowError(f"unknown collection {name!r}; expected one of {writable}")
    return names


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    dsn = _dsn(settings)
    name = args.name.strip()
    if not name:
        raise SegflowError("--name: expected a non-empty name")
    collections = parse_collections(args.collections, load_catalog(settings.catalog))
    key = asyncio.run(create_key(dsn, settings.postgres_schema, name, collections))
    print(f"created API key {name!r} for {', '.join(collections)}")
    print("The key is shown only once; store it now:")
    print(key, flush=True)
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    keys = asyncio.run(list_keys(_dsn(settings), settings.postgres_schema))
    if not keys:
        print("no API keys")
        return 0
    rows = [("NAME", "PRODUCER", "COLLECTIONS", "CREATED", "REVOKED")]
    for k in keys:
        rows.append(
            (
                k.name,
                k.producer_id,
                ",".join(k.collections),
                k.created_at.isoformat(timespec="seconds"),
                k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    if not asyncio.run(revoke_key(_dsn(settings), settings.postgres_schema, args.name)):
        raise SegflowError(f"no active API key named {args.name!r}")
    print(f"revoked API key {args.name!r}")
    return 0


def add_keys_parser(subparsers: Any) -> None:
    """`segflow keys create|list|revoke`."""
    keys = subparsers.add_parser("keys", help="API keys of the ingestion API (SEGFLOW_POSTGRES)")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="create a key and print it, once")
    create.add_argument("--name", required=True, help="who uses it, e.g. 'web'")
    create.add_argument(
        "--collections", required=True, help="comma-separated collections it may write"
    )
    create.set_defaults(func=cmd_keys_create)
    sub.add_parser("list", help="list keys (never the keys themselves)").set_defaults(
        func=cmd_keys_list
    )
    revoke = sub.add_parser("revoke", help="revoke a key; the API refuses it within a second")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_keys_revoke)
