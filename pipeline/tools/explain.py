"""`segflow explain RECORD GROUP` (SPEC 8.4 "Why"): why a record is or is not in a group.

It reads the current profile/records documents (the catalog's `profiles.records`) to find the
record, then the product events (`profiles.events`) to their end, keeps the record's
(`derivations.profiles.explain.belongs`), and prints `explain.render` of the record at the wall
clock's now (or `--at`).

Decisions where the spec is silent:
- It reads topics only, never the runtime's state: the explanation is rebuilt from what the
  runtime published and what it read, and says so where the two disagree.
- Events that fail the events schema are left out: the runtime sent them to the dead-letter topic.
  Across partitions, arrival order is the record timestamp, then partition and offset.
- An unknown record is an error naming it, with the record it was likely meant to be: the
  record holding it as an anonymousId (an `anon:` record merged into a person), else the closest
  id.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from derivations.profiles.explain import belongs, explain, render, unknown_group
from derivations.profiles.identity import ANON
from derivations.profiles.instants import Instant, from_epoch_ns, parse_instant
from derivations.profiles.model import ProfilesSpec
from derivations.profiles.wording import did_you_mean
from pipeline.catalog import Catalog, load_catalog
from pipeline.documents.validation import Validator
from pipeline.errors import SegflowError
from pipeline.runtime.settings import Settings
from pipeline.runtime.topics import Names, read_to_end
from pipeline.tools.read import current_documents, partitions_of

Events = list[tuple[dict[str, Any], int]]


def missing_record(record_id: str, documents: Sequence[dict[str, Any]], topic: str) -> SegflowError:
    """The error for a record that `documents` (the current records) do not hold."""
    device = record_id.removeprefix(ANON)
    owner = next((d["id"] for d in documents if device in d.get("anonymousIds", ())), None)
    if owner is not None:
        merged = " (merged into it)" if record_id.startswith(ANON) else ""
        hint = f"; '{device}' is an anonymousId of record '{owner}'{merged}"
    else:
        hint = did_you_mean(record_id, [d["id"] for d in documents])
    return SegflowError(f"record '{record_id}' is not in {topic}{hint}")


async def read_record(
    bootstrap: str, catalog: Catalog, profiles: ProfilesSpec, names: Names, record_id: str
) -> tuple[dict[str, Any], Events]:
    """The record's current document and its product events (with record timestamps, ms), in
    arrival order."""
    records_topic = names.collection(profiles.records)
    documents = await current_documents(
        bootstrap, records_topic, catalog.collections[profiles.records]
    )
    record = next((d for d in documents if d.get("id") == record_id), None)
    if record is None:
        raise missing_record(record_id, documents, records_topic)
    validator = Validator(catalog.collections[profiles.events].schema)
    events_topic = names.collection(profiles.events)
    starts = {tp: 0 for tp in await partitions_of(bootstrap, events_topic)}
    found: list[tuple[tuple[int, int, int], dict[str, Any]]] = []
    async for batch in read_to_end(bootstrap, starts):
        for r in batch:
            try:
                event = orjson.loads(r.value) if r.value is not None else None
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict) and belongs(event, record) and validator.is_valid(event):
                found.append(((r.timestamp, r.partition, r.offset), event))
    found.sort(key=lambda item: item[0])
    return record, [(event, arrival[0]) for arrival, event in found]


def _now(at: str | None) -> Instant:
    if at is None:
        return from_epoch_ns(time.time_ns())
    instant = parse_instant(at)
    if instant is None:
        raise SegflowError(f"--at {at!r} is not an RFC 3339 date-time like 2024-05-01T10:00:00Z")
    return instant


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    catalog = load_catalog(settings.catalog)
    profiles = catalog.profiles
    if profiles is None:
        raise SegflowError(f"catalog {settings.catalog} has no profiles: section, so no groups")
    if args.group not in profiles.groups:
        raise unknown_group(profiles, args.group)
    now = _now(args.at)
    if not settings.broker:
        raise SegflowError("SEGFLOW_BROKER is not set: which broker holds the records?")
    names = Names(settings.topic_prefix)
    record, events = asyncio.run(
        read_record(settings.broker, catalog, profiles, names, args.record)
    )
    for line in render(explain(profiles, args.group, record, events, now)):
        sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return 0


def add_explain_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `explain` to the `segflow` command."""
    p = subparsers.add_parser(
        "explain", help="why a record is or is not in a group: each rule, its value, its events"
    )
    p.add_argument("record", help="a record id: a userId, or anon:<anonymousId>")
    p.add_argument("group", help="a group of the catalog's profiles: section")
    p.add_argument("--at", help="evaluate at this RFC 3339 instant instead of now")
    p.set_defaults(func=cmd_explain)
