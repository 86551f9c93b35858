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


def reference(
    records: list[dict[str, Any]], unique: list[str], seniority: Mapping[str, Seniority]
) -> list[dict[str, Any]]:
    """Records documents with uniqueness applied at once, for tests and explanations: for each
    unique property and value, every record but the holder loses it."""
    claims: dict[str, Entry] = {}
    for doc in records:
        for prop in unique:
            if prop in doc["properties"]:
                key = index_key(prop, doc["properties"][prop])
                claims[key] = claim(claims.get(key, {}), doc["id"], seniority[doc["id"]])
    out = []
    for doc in records:
        doc = {**doc, "properties": dict(doc["properties"])}
        invalid = dict(doc.get("invalid", {}))
        for prop in unique:
            if prop not in doc["properties"]:
                continue
            kept_by = holder(claims[index_key(prop, doc["properties"][prop])])
            if kept_by != doc["id"]:
                assert kept_by is not None
                del doc["properties"][prop]
                invalid[prop] = duplicate_reason(kept_by)
        doc.pop("invalid", None)
        if invalid:
            doc = _with_invalid(doc, invalid)
        out.append(doc)
    return out


def _with_invalid(doc: dict[str, Any], invalid: dict[str, str]) -> dict[str, Any]:
    """`invalid` placed after `properties`, as records documents have it."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        out[key] = value
        if key == "properties":
            out["invalid"] = invalid
    return out
