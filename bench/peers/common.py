"""What both peers share: configuration from the environment, the Postgres tables, and the
per-(segment, user) reduction of SPEC §2 written as a pure function over plain dicts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Doc = dict[str, Any]


@dataclass(frozen=True)
class Config:
    broker: str
    topic: str
    postgres: str
    schema: str
    webhook_url: str
    group: str
    state_dir: str

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        return cls(
            broker=env["BENCH_BROKER"],
            topic=env["BENCH_TOPIC"],
            postgres=env["BENCH_POSTGRES"],
            schema=env.get("BENCH_SCHEMA", "public"),
            webhook_url=env["BENCH_WEBHOOK_URL"],
            group=env["BENCH_GROUP"],
            state_dir=env.get("BENCH_STATE_DIR", "./bench-state"),
        )


def ddl(schema: str) -> list[str]:
    return [
        f'create schema if not exists "{schema}"',
        f"""create table if not exists "{schema}".segment_memberships (
            vendor int, segment_name text, user_id text, first timestamptz, last timestamptz,
            member boolean, value text, document jsonb,
            primary key (vendor, segment_name, user_id))""",
        f"""create table if not exists "{schema}".segment_profiles (
            user_id text primary key, segments json, document jsonb)""",
        f"""create table if not exists "{schema}".segment_toggles (
            event uuid primary key, user_id text, vendor int, segment_name text, remove boolean,
            timestamp timestamptz, previous_event uuid, document jsonb)""",
    ]


def upsert_membership_sql(schema: str) -> str:
    return f"""insert into "{schema}".segment_memberships
        (vendor, segment_name, user_id, first, last, member, value, document)
        values (%s, %s, %s, %s, %s, %s, %s, %s)
        on conflict (vendor, segment_name, user_id) do update set
        first = excluded.first, last = excluded.last, member = excluded.member,
        value = excluded.value, document = excluded.document"""


def upsert_profile_sql(schema: str) -> str:
    return f"""insert into "{schema}".segment_profiles (user_id, segments, document)
        values (%s, %s, %s)
        on conflict (user_id) do update set
        segments = excluded.segments, document = excluded.document"""


def insert_toggle_sql(schema: str) -> str:
    return f"""insert into "{schema}".segment_toggles
        (event, user_id, vendor, segment_name, remove, timestamp, previous_event, document)
        values (%s, %s, %s, %s, %s, %s, %s, %s)
        on conflict (event) do nothing"""


def membership_params(m: Doc, dumps) -> tuple:  # type: ignore[no-untyped-def]
    return (
        m["segment"]["vendor"],
        m["segment"]["name"],
        m["user"],
        m.get("first"),
        m["last"],
        m["member"],
        m.get("value"),
        dumps(m),
    )


def profile_params(p: Doc, dumps) -> tuple:  # type: ignore[no-untyped-def]
    segments = dumps(p["segments"])
    return (p["user"], segments, dumps(p))


def toggle_params(t: Doc, dumps) -> tuple:  # type: ignore[no-untyped-def]
    return (
        t["event"],
        t["user"],
        t["segment"]["vendor"],
        t["segment"]["name"],
        bool(t.get("remove")),
        t["timestamp"],
        t["previous"]["event"],
        dumps(t),
    )


def instant(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def segment_key(e: Doc) -> str:
    return f"{e['segment']['vendor']}|{e['segment']['name']}|{e['user']}"


def reduce_event(
    e: Doc, membership: Doc | None, register: Doc | None
) -> tuple[Doc, Doc, Doc | None]:
    """One new (not redelivered) event against its (segment, user)'s membership and register
    (`{"last": last event, "added": ever added}`): the new membership, register and toggle."""
    removing = bool(e.get("remove"))
    m: Doc = dict(membership) if membership else {"segment": e["segment"], "user": e["user"]}
    stamp = e["timestamp"]
    if not removing and ("first" not in m or instant(stamp) < instant(m["first"])):
        m["first"] = stamp
    if "last" not in m or instant(stamp) >= instant(m["last"]):
        m["last"] = stamp
    m["member"] = not removing
    if not removing and "value" in e:
        m["value"] = e["value"]
    toggle = None
    previous = register["last"] if register else None
    added = bool(register and register["added"])
    if added and previous is not None and bool(previous.get("remove")) != removing:
        toggle = {**e, "previous": previous}
    return m, {"last": e, "added": added or not removing}, toggle


def with_membership(profile: Doc | None, user: str, m: Doc) -> Doc:
    """The user's profile with `m` put in place of that segment's previous entry, sorted."""
    segments = [s for s in (profile["segments"] if profile else []) if s["segment"] != m["segment"]]
    segments.append({k: v for k, v in m.items() if k != "user"})
    segments.sort(key=lambda d: (d["segment"]["name"], d["segment"]["vendor"]))
    return {"user": user, "segments": segments}
