"""`unique: true` (SPEC 8.3): at most one record holds a value of a unique property.

Records claim the values of their unique properties at an index keyed by (property, value);
the index keeps every claimant with its *seniority* and tells claimants who holds the value.
The holder is the claimant created first: the least seniority (the order of the record's
earliest event, `createdAt`'s order), then the least record id. "The first keeps it" is read as
the record that existed first, not the claim that arrived first, because arrival order differs
between runs, partitions and replays, while seniority does not: whatever order claims, releases
and merges arrive in, the holder is the same, so a record merged from an anonymous one still
equals the record built as if every event had gone to the person (8.2), unique values included.
A record that lost a value keeps no value for the property and gets
`invalid: {name: "duplicate of record <holder>"}`; its aggregate state is untouched, so it takes
the value back the moment the holder lets it go (changes it, or is merged away).

All of it is plain JSON, for RocksDB and the changelog: an index entry is
`{record id: seniority}`; a record remembers, per unique property, the value it claimed and the
holder it was told (`Held`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .instants import parse_instant

Seniority = list[Any]
Entry = dict[str, Seniority]
"""An index entry: every record claiming the value, with its seniority."""


def value_key(value: Any) -> str:
    """A value as the text the index is keyed by (JSON: 3 and "3" stay apart)."""
    return orjson.dumps(value).decode()


def index_key(prop: str, value: Any) -> str:
    """The index entry of a property's value (the shuffle key of claims)."""
    return f"{prop}\x00{value_key(value)}"


def holder(entry: Mapping[str, Seniority]) -> str | None:
    """The claimant that keeps the value: least seniority, then least record id."""
    if not entry:
        return None
    return min(entry, key=lambda record: (entry[record], record))


def claim(entry: Entry, record: str, seniority: Seniority) -> Entry:
    """`entry` with `record` claiming at `seniority` (a changed seniority replaces the old)."""
    if entry.get(record) == seniority:
        return entry
    return {**entry, record: seniority}


def release(entry: Entry, record: str) -> Entry:
    """`entry` without `record`."""
    if record not in entry:
        return entry
    return {r: s for r, s in entry.items() if r != record}


def to_tell(before: Mapping[str, Seniority], after: Mapping[str, Seniority]) -> list[str]:
    """The claimants whose holder changed, or who are new: each is told the holder. (A
    released record is not told: it no longer claims the value.)"""
    was, now = holder(before), holder(after)
    if was != now:
        return sorted(after)
    return sorted(r for r in after if r not in before or before[r] != after[r])


def duplicate_reason(held_by: str) -> str:
    return f"duplicate of record {held_by}"


def seniority_of(created_at: str) -> Seniority:
    """The seniority of a record created at `created_at` (RFC 3339): its instant."""
    instant = parse_instant(created_at)
    assert instant is not None, "createdAt is an occurredAt, checked by the events schema"
    return [instant.seconds, instant.fraction]


def losing(doc: dict[str, Any], lost: Mapping[str, str]) -> dict[str, Any]:
    """A records document without the values of `lost` ({property: holder}), each with its
    `invalid` reason; `invalid` stays after `properties`, where records documents have it."""
    if not lost:
        return doc
    invalid = {**doc.get("invalid", {}), **{p: duplicate_reason(h) for p, h in lost.items()}}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "invalid":
            continue
        if key == "properties":
            value = {p: v for p, v in value.items() if p not in lost}
        out[key] = value
        if key == "properties":
            out["invalid"] = invalid
    return out


def reference(records: list[dict[str, Any]], unique: list[str]) -> list[dict[str, Any]]:
    """Records documents with uniqueness applied at once, for tests and explanations: for each
    unique property and value, every record but the holder (by createdAt, then id) loses it."""
    claims: dict[str, Entry] = {}
    for doc in records:
        for prop in unique:
            if prop in doc["properties"]:
                key = index_key(prop, doc["properties"][prop])
                claims[key] = claim(claims.get(key, {}), doc["id"], seniority_of(doc["createdAt"]))
    out = []
    for doc in records:
        lost = {}
        for prop in unique:
            if prop in doc["properties"]:
                kept_by = holder(claims[index_key(prop, doc["properties"][prop])])
                assert kept_by is not None
                if kept_by != doc["id"]:
                    lost[prop] = kept_by
        out.append(losing(doc, lost))
    return out
