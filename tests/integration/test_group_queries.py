"""The group queries of docs/queries.sql (SPEC 8.5) against the session's embedded Postgres: the
tables made and filled by the sinks themselves, from memberships, toggles and records built here
the way the pipeline writes them (a group is a segment of vendor groupVendor)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from materializations.postgres import PostgresSink, load_queries
from pipeline.catalog import Catalog
from tests.fixtures.records import Record
from tests.integration.test_profile_records_sink import QUERIES, RECORDS, at, record
from tests.integration.test_profile_records_sink import make_sink as make_records_sink

pytestmark = pytest.mark.integration

GROUP_QUERIES = {"group_members", "record_groups", "group_sizes", "recent_group_joins"}


def text(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


class Segments:
    """Memberships and toggles as segment/memberships and segment/toggles publish them (SPEC 2),
    built (vendor, segment, user) by (vendor, segment, user) from each one's history: its
    changes in arrival order (join, leave, join, ...), each so many hours before `now`, and
    maybe a join `again` after the last of them (a repeated add: no toggle)."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.memberships: list[dict[str, Any]] = []
        self.toggles: list[dict[str, Any]] = []

    def ago(self, hours: float) -> datetime:
        return self.now - timedelta(hours=hours)

    def add(
        self, vendor: int, name: str, user: str, *history: float, again: float | None = None
    ) -> None:
        segment = {"vendor": vendor, "name": name}
        previous: dict[str, Any] | None = None
        for change, hours in enumerate(history):
            event: dict[str, Any] = {
                "event": str(uuid.uuid4()),
                "timestamp": text(self.ago(hours)),
                "user": user,
                "segment": segment,
            }
            if change % 2:
                event["remove"] = True
            if previous is not None:  # every change after the first join is a toggle
                self.toggles.append(event | {"previous": previous})
            previous = event
        joins = [*history[::2], *([] if again is None else [again])]
        self.memberships.append(
            {
                "segment": segment,
                "user": user,
                "first": text(self.ago(max(joins))),  # the earliest add
                "last": text(self.ago(min([*history, *joins]))),  # the latest event
                "member": len(history) % 2 == 1,  # the last to arrive
            }
        )


def segment_sink(catalog: Catalog, dsn: str, schema: str) -> PostgresSink:
    spec = replace(catalog.materializations["postgres"], config={"dsn": dsn, "schema": schema})
    return PostgresSink(spec, {b.source.replace("/", "."): b for b in spec.bindings})


async def write(
    sink: PostgresSink, source: str, docs: list[dict[str, Any]], key: Callable[[Any], Any]
) -> None:
    binding = next(b for b in sink.spec.bindings if b.source == source)
    topic = source.replace("/", ".")
    await sink.apply(
        binding,
        [Record(topic, 0, i, orjson.dumps(key(d)), orjson.dumps(d)) for i, d in enumerate(docs)],
    )


def membership_key(doc: dict[str, Any]) -> list[Any]:
    return [doc["segment"]["vendor"], doc["segment"]["name"], doc["user"]]


async def test_the_group_queries_answer_correctly(
    catalog: Catalog, postgres: str, pg_schema: str
) -> None:
    assert catalog.profiles is not None and catalog.profiles.group_vendor is not None
    groups = catalog.profiles.group_vendor
    other = 1  # a segment vendor of its own, with a segment named like a group
    assert other != groups
    # Every instant is hours away from a day's boundary, so the queries' own now() (a little
    # later) sees the same.
    segments = Segments(datetime.now(UTC).replace(microsecond=0))
    ago = segments.ago
    segments.add(groups, "vip", "u1", 72)  # a member for days
    segments.add(groups, "vip", "u2", 2)  # joined two hours ago
    segments.add(groups, "vip", "u3", 120, 1)  # left an hour ago: its `last` is recent
    segments.add(groups, "vip", "u6", 240, 48, 3)  # left two days ago, back three hours ago
    segments.add(groups, "vip", "anon:d4", 30)  # joined a day and six hours ago
    segments.add(groups, "vip", "u9", 96)  # a member whose record has no row
    segments.add(groups, "buyers", "u1", 96, 72, 48)  # back, but two days ago
    segments.add(groups, "buyers", "u3", 6, 4)  # joined and left today
    segments.add(groups, "buyers", "anon:d4", 8, 6, 0.5)  # joined, left, back half an hour ago
    segments.add(groups, "trial", "u2", 50, 40)  # everyone left
    segments.add(other, "vip", "u1", 120, 48, 1)  # back an hour ago, in the other vendor
    segments.add(other, "vip", "u5", 1)
    segments.add(other, "dogs", "u5", 1)
    segments.add(other, "dogs", "u7", 72, again=1)  # in for days, added again an hour ago
    segments.add(other, "dogs", "u8", 72, 2, 5)  # the re-join (5 h ago) came after the leave
    members = {
        (m["segment"]["name"], m["user"])
        for m in segments.memberships
        if m["member"] and m["segment"]["vendor"] == groups
    }
    docs = [
        record("u1", email="a@example.com", ltv=10.5),
        record("u2", ltv=5),
        record("u3", email="c@example.com"),
        record("anon:d4", pages=["/"]),
        record("u5", email="e@example.com"),
        record("u6", email="f@example.com"),
    ]
    for doc in docs:  # as the records stage writes them, beside the memberships
        doc["groups"] = sorted(name for name, user in members if user == doc["id"])

    sink = segment_sink(catalog, postgres, pg_schema)
    async with sink:
        await write(sink, "segment/memberships", segments.memberships, membership_key)
        await write(sink, "segment/toggles", segments.toggles, lambda d: [d["event"]])
        await sink.flush()
    async with make_records_sink(catalog, postgres, pg_schema) as records:
        await records.apply(RECORDS, [at(0, i, doc) for i, doc in enumerate(docs)])
        await records.flush()

    queries = load_queries(QUERIES)
    assert set(queries) >= GROUP_QUERIES
    with psycopg.connect(postgres) as conn:
        conn.execute(sql.SQL("set search_path to {}").format(sql.Identifier(pg_schema)))

        def run(name: str, **params: Any) -> list[tuple[Any, ...]]:
            return conn.execute(queries[name], params).fetchall()

        assert run("group_members", vendor=groups, group="vip", property="email") == [
            ("anon:d4", None),
            ("u1", "a@example.com"),
            ("u2", None),
            ("u6", "f@example.com"),
            ("u9", None),
        ]
        assert run("group_members", vendor=groups, group="buyers", property="ltv") == [
            ("anon:d4", None),
            ("u1", 10.5),
        ]
        assert run("group_members", vendor=groups, group="trial", property="ltv") == []
        assert run("group_members", vendor=groups, group="dogs", property="email") == []

        assert run("record_groups", vendor=groups, id="u1") == [
            ("u1", ["buyers", "vip"], {"email": "a@example.com", "ltv": 10.5})
        ]
        assert run("record_groups", vendor=groups, id="anon:d4") == [
            ("anon:d4", ["buyers", "vip"], {"pages": ["/"]})
        ]
        assert run("record_groups", vendor=groups, id="u2") == [("u2", ["vip"], {"ltv": 5})]
        assert run("record_groups", vendor=groups, id="u3") == [
            ("u3", [], {"email": "c@example.com"})
        ]
        assert run("record_groups", vendor=groups, id="u5") == [
            ("u5", [], {"email": "e@example.com"})
        ]
        assert run("record_groups", vendor=groups, id="u9") == []

        assert run("group_sizes", vendor=groups) == [("buyers", 2), ("trial", 0), ("vip", 5)]
        assert run("group_sizes", vendor=other) == [("dogs", 3), ("vip", 2)]

        assert run("recent_group_joins", vendor=groups) == [
            ("buyers", "anon:d4", ago(0.5), True),
            ("vip", "u2", ago(2), False),
            ("vip", "u6", ago(3), True),
        ]
        assert run("recent_group_joins", vendor=other) == [
            ("dogs", "u5", ago(1), False),
            ("vip", "u1", ago(1), True),
            ("vip", "u5", ago(1), False),
            ("dogs", "u8", ago(5), True),
        ]
