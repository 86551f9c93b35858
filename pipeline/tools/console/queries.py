"""What the console reads besides the worker's counters: segment sizes, a person or record, and
the dead letters. Postgres for what analysts see (the materialized tables, SPEC 5 and 8), the
broker for what only it holds (dead letters; the events behind a group's "why", SPEC 8.4)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import psycopg
from psycopg import sql

from derivations.profiles.explain import explain, render
from derivations.profiles.instants import from_epoch_ns
from pipeline.catalog import Catalog
from pipeline.errors import SegflowError
from pipeline.runtime.settings import Settings
from pipeline.runtime.topics import Names, read_to_end
from pipeline.tools.dlq import describe, targets
from pipeline.tools.explain import read_record
from pipeline.tools.read import topic_partitions

LETTERS_SHOWN = 50
TOGGLES_SHOWN = 20


def _table(settings: Settings, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(settings.postgres_schema), sql.Identifier(name))


async def _connect(settings: Settings) -> psycopg.AsyncConnection[Any]:
    if not settings.postgres:
        raise SegflowError(
            "the console reads segments and records from Postgres: set SEGFLOW_POSTGRES"
        )
    return await psycopg.AsyncConnection.connect(settings.postgres, autocommit=True)


async def _rows(
    conn: psycopg.AsyncConnection[Any], query: sql.Composed, params: tuple[Any, ...]
) -> list[tuple[Any, ...]]:
    """The rows, or none while the table does not exist yet (no write has created it)."""
    try:
        return await (await conn.execute(query, params)).fetchall()
    except psycopg.errors.UndefinedTable:
        return []


async def segment_sizes(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    """One sample of every segment's size: members now and ever, per vendor and name."""
    vendor = catalog.profiles.group_vendor if catalog.profiles is not None else None
    async with await _connect(settings) as conn:
        rows = await _rows(
            conn,
            sql.SQL(
                "select vendor, segment_name, count(*) filter (where member), count(*)"
                " from {} group by vendor, segment_name"
            ).format(_table(settings, "segment_memberships")),
            (),
        )
    return {
        "t": round(time.time(), 3),
        "sizes": {
            f"{v}/{name}": {
                "vendor": v,
                "name": name,
                "members": members,
                "ever": ever,
                "group": v == vendor,
            }
            for v, name, members, ever in rows
        },
    }


def segments_view(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Each segment's size now and over the samples, and the biggest movers over them."""
    if not samples:
        return {"segments": [], "movers": []}
    last, first = samples[-1], samples[0]
    segments = []
    for key, now in sorted(last["sizes"].items(), key=lambda kv: (not kv[1]["group"], kv[0])):
        series = [[s["t"], s["sizes"].get(key, {}).get("members", 0)] for s in samples]
        before = first["sizes"].get(key, {}).get("members", 0)
        label = now["name"] if now["group"] else key
        segments.append(
            {**now, "key": key, "label": label, "series": series, "change": now["members"] - before}
        )
    movers = sorted(
        (s for s in segments if s["change"]), key=lambda s: (-abs(s["change"]), s["key"])
    )
    return {
        "since": first["t"],
        "segments": segments,
        "movers": [{"label": s["label"], "change": s["change"]} for s in movers[:5]],
    }


async def lookup(
    settings: Settings, catalog: Catalog, bootstrap: str, wanted: str
) -> dict[str, Any]:
    """A person or record by id (a userId, `anon:<device>` or a bare device id): the record and
    why it is or is not in each group, its segment profile, memberships and recent toggles."""
    found: dict[str, Any] = {"id": wanted, "record": None, "profile": None, "groups": []}
    async with await _connect(settings) as conn:
        record_id = wanted
        if catalog.profiles is not None:
            owners = await _rows(
                conn,
                sql.SQL("select record_id from {} where device = %s").format(
                    _table(settings, "profile_records_devices")
                ),
                (wanted.removeprefix("anon:"),),
            )
            if owners and owners[0][0]:
                record_id = owners[0][0]
            for candidate in dict.fromkeys([record_id, f"anon:{wanted}"]):
                rows = await _rows(
                    conn,
                    sql.SQL("select document from {} where id = %s").format(
                        _table(settings, "profile_records")
                    ),
                    (candidate,),
                )
                if rows:
                    found["record"], record_id = _json(rows[0][0]), candidate
                    break
        found["id"] = record_id
        profile = await _rows(
            conn,
            sql.SQL("select document from {} where user_id = %s").format(
                _table(settings, "segment_profiles")
            ),
            (record_id,),
        )
        found["profile"] = _json(profile[0][0]) if profile else None
        found["memberships"] = [
            {"vendor": v, "segment": n, "member": m, "first": _iso(f), "last": _iso(la)}
            for v, n, m, f, la in await _rows(
                conn,
                sql.SQL(
                    'select vendor, segment_name, member, "first", "last" from {}'
                    " where user_id = %s order by member desc, vendor, segment_name"
                ).format(_table(settings, "segment_memberships")),
                (record_id,),
            )
        ]
        found["toggles"] = [
            {"event": str(e), "vendor": v, "segment": n, "remove": r, "timestamp": _iso(t)}
            for e, v, n, r, t in await _rows(
                conn,
                sql.SQL(
                    'select event, vendor, segment_name, remove, "timestamp" from {}'
                    ' where user_id = %s order by "timestamp" desc limit %s'
                ).format(_table(settings, "segment_toggles")),
                (record_id, TOGGLES_SHOWN),
            )
        ]
    if found["record"] is not None and catalog.profiles is not None and catalog.profiles.groups:
        found["groups"] = await _why(catalog, bootstrap, settings, record_id)
    return found


async def _why(
    catalog: Catalog, bootstrap: str, settings: Settings, record_id: str
) -> list[dict[str, Any]]:
    """Each group's "why" (SPEC 8.4), as `segflow explain` prints it."""
    profiles = catalog.profiles
    assert profiles is not None
    try:
        record, events = await read_record(
            bootstrap, catalog, profiles, Names(settings.topic_prefix), record_id
        )
    except SegflowError as exc:  # not yet in the records topic
        return [{"name": g, "member": None, "why": [str(exc)]} for g in profiles.groups]
    now = from_epoch_ns(time.time_ns())
    out = []
    for name in profiles.groups:
        explanation = explain(profiles, name, record, events, now)
        out.append({"name": name, "member": explanation.member, "why": render(explanation)})
    return out


async def dead_letters(settings: Settings, catalog: Catalog, bootstrap: str) -> dict[str, Any]:
    """Every dead-letter topic: how many letters, the last ones with their reasons, and the
    command that replays them (all topics read together, to their ends)."""
    chosen = targets(catalog, Names(settings.topic_prefix))
    by_topic = {t.topic: t for t in chosen}
    counts = dict.fromkeys(by_topic, 0)
    shown: dict[str, list[dict[str, Any]]] = {topic: [] for topic in by_topic}
    starts = {tp: 0 for tp in await topic_partitions(bootstrap, list(by_topic))}
    async for records in read_to_end(bootstrap, starts):
        for record in records:
            counts[record.topic] += 1
            kept = shown[record.topic]
            kept.append(describe(by_topic[record.topic], record))
            del kept[:-LETTERS_SHOWN]
    return {
        "targets": [
            {
                "name": t.name,
                "kind": t.kind,
                "topic": t.topic,
                "count": counts[t.topic],
                "letters": sorted(shown[t.topic], key=lambda d: -d["timestamp"]),
                "replay": f"segflow dlq replay {t.name}",
            }
            for t in chosen
        ]
    }


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
