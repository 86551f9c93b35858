"""Reading an implementation's three tables: cheap progress aggregates and the full row check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from bench.harness.workload import Expected, digest, membership_row, profile_row, toggle_row

TABLES = {
    "memberships": "segment_memberships",
    "profiles": "segment_profiles",
    "toggles": "segment_toggles",
}


@dataclass
class Progress:
    memberships: int = 0
    members: int = 0
    last_seconds: int = 0
    profiles: int = 0
    toggles: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "memberships": self.memberships,
            "profiles": self.profiles,
            "toggles": self.toggles,
        }

    def counts_match(self, want: Expected) -> bool:
        return self.counts() == want.counts()

    def aggregates_match(self, want: Expected) -> bool:
        return (
            self.counts_match(want)
            and self.members == want.members
            and self.last_seconds == want.last_seconds
        )


def _t(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, TABLES[name])


async def progress(conn: psycopg.AsyncConnection[Any], schema: str) -> Progress:
    """Counts (one scan per table: polled every 100 ms, it loads Postgres for every
    implementation alike); zeros while the tables do not exist yet."""
    query = sql.SQL(
        "select m.*, (select count(*) from {p}), (select count(*) from {t}) from"
        " (select count(*), count(*) filter (where member),"
        " coalesce(sum(floor(extract(epoch from last))::bigint), 0) from {m}) as m"
    ).format(m=_t(schema, "memberships"), p=_t(schema, "profiles"), t=_t(schema, "toggles"))
    try:
        cur = await conn.execute(query)
        row = await cur.fetchone()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return Progress()
    assert row is not None
    return Progress(int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))


async def rows(conn: psycopg.AsyncConnection[Any], schema: str) -> dict[str, set[bytes]]:
    """Every row of the three tables, canonical as in `workload.Expected`."""
    out: dict[str, set[bytes]] = {}
    cur = await conn.execute(
        sql.SQL(
            "select vendor, segment_name, user_id, member, value,"
            " (extract(epoch from first) * 1000000)::bigint,"
            " (extract(epoch from last) * 1000000)::bigint from {}"
        ).format(_t(schema, "memberships"))
    )
    out["memberships"] = {membership_row(*r) for r in await cur.fetchall()}
    cur = await conn.execute(
        sql.SQL("select user_id, document from {}").format(_t(schema, "profiles"))
    )
    out["profiles"] = {profile_row(*r) for r in await cur.fetchall()}
    cur = await conn.execute(
        sql.SQL("select event::text, previous_event::text, remove from {}").format(
            _t(schema, "toggles")
        )
    )
    out["toggles"] = {toggle_row(*r) for r in await cur.fetchall()}
    return out


async def check(conn: psycopg.AsyncConnection[Any], schema: str, want: Expected) -> dict[str, Any]:
    """Counts, digests and differences of each table against the reference."""
    try:
        got = await rows(conn, schema)
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        return {"ok": False, "error": str(exc).strip()}
    tables: dict[str, Any] = {}
    ok = True
    for name, expected_rows in want.tables().items():
        actual = got[name]
        same = actual == expected_rows
        ok = ok and same
        tables[name] = {
            "rows": len(actual),
            "expected": len(expected_rows),
            "digest": digest(actual),
            "expected_digest": want.digests[name],
            "missing": len(expected_rows - actual),
            "unexpected": len(actual - expected_rows),
        }
        if not same:  # a few examples help whoever debugs it
            tables[name]["examples_missing"] = [
                r.decode() for r in sorted(expected_rows - actual)[:2]
            ]
            tables[name]["examples_unexpected"] = [
                r.decode() for r in sorted(actual - expected_rows)[:2]
            ]
    return {"ok": ok, "tables": tables}


async def drop_schema(dsn: str, schema: str) -> None:
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema))
            )
    except psycopg.Error:
        pass
