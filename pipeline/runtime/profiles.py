"""The stages that build profile records (SPEC 8.2), run by the Deriver like any task.

Identity (`IdentityTask`, in `pipeline.runtime.identity`), source `profile/events` shuffled by
anonymousId: drops redeliveries (the collection's dedup window), resolves each event's record
with `derivations.profiles.identity` (the links are its state, `l:<anonymousId>`), fills a
missing occurredAt from the record timestamp, and writes into `<records>.identified`,
partitioned by record id:
- `{"r": record, "e": event, "t": arrival ms, "a": anonymousId it links?}` for every event, and
  the same with `"gm"` for a manual group membership (`MembersTask` hands those over) and with
  `"im"` for an import row naming an anonymousId (`pipeline.runtime.imports`, which writes a
  row naming a userId here itself);
- `{"r": "anon:A", "into": U, "m": event id}` when A links to U and `anon:A` exists.

Records (`RecordsTask`), source `<records>.identified`: keeps each record's state (`R:<id>`),
applies events and import rows, and writes each changed record's document once per batch into
`profile/records`; an event of a type an enabled destination lists goes on, with that document,
into `profile/records.forwarded` (SPEC 9, enriched events).
A merge moves state across partitions: the owner of `anon:A` sends `{"r": U, "s": state, "m": id}`
into `<records>.identified` (so to U's owner), deletes its state and writes a tombstone.

Unique (`pipeline.runtime.unique`, only when a property is `unique: true`), source
`<records>.claims` partitioned by (property, value): the records stage compares each changed
record's unique values and seniority with what it claimed (`u:<id>`) and writes `{"k": index
key, "r", "p", "v", "s"}` to claim a value (again when its seniority changes) or the same without
`"s"` to release one (a changed value, a merged-away record). The unique stage keeps every
value's claimants (`U:<key>`) and tells those whose holder changed, with `{"r", "k": property,
"v", "h": holder}` into `<records>.identified`; a record that is not the holder of its value
shows no value and `invalid: "duplicate of record <holder>"` (`derivations.profiles.uniqueness`).
Until told, a record shows its value (so being told it holds it writes no new document). Claims
and tells set, never add, so their replays change nothing.

Groups (`pipeline.runtime.groups`): the records stage evaluates each changed record's groups,
keeps their state and timers with the record, and writes each membership change into
segment/events. A sign-in that merges `anon:A` into U carries `"w": event id` to U, which waits
for that move (`"s"`, or `"s": null` when the command finds nothing to move) before its groups
are evaluated.

Every hop is at least once (a batch is replayed after a crash before its commit), so the stages
make their effects idempotent: the records stage remembers the events (`d:<event id>`) and moves
(`m:<event id>`) it applied, for the events collection's dedup window. A replayed merge command
finds no state and moves nothing (it answers `"s": null`); a replayed move is dropped by its id.
Processing is a function of each partition's input order, so a replay routes every event as the
first run did (given one input path per device: see README, Guarantees).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from derivations.profiles import uniqueness
from derivations.profiles.instants import from_epoch_ns
from derivations.profiles.membership import merge_manual, set_manual
from derivations.profiles.records import Record, Records, order_of
from pipeline.catalog import Catalog
from pipeline.catalog.profiles import claims, forwarded
from pipeline.runtime.clock import Clock, wall_clock
from pipeline.runtime.groups import (
    NOT_MOVED,
    RECORD,
    Grouping,
    changed_properties,
    record_key,
)
from pipeline.runtime.identity import Stage, dedup_window_ms, record_key_of
from pipeline.runtime.state import PartitionState
from pipeline.runtime.task import BatchResult, Output, expire

log = logging.getLogger(__name__)

APPLIED = b"d:"
MOVED = b"m:"
CLAIMED = b"u:"
INDEX = b"U:"
_DELETED: Record = {}


class RecordsTask(Stage):
    """Stage 2: record states and documents, and the merges between them (module docstring)."""

    def __init__(
        self,
        catalog: Catalog,
        source: str,
        topic_of: Callable[[str], str],
        clock: Clock = wall_clock,
    ) -> None:
        super().__init__(catalog, source, topic_of)
        profiles = self.profiles
        self.clock = clock
        self.records = Records.of(profiles)
        self.window_ms = dedup_window_ms(catalog, profiles.events)
        target = catalog.collections[profiles.records]
        self.documents = Output(target, topic_of(target.name), record_key_of, None, b"")
        self.moves = self.into_records  # its own source
        self.outputs = [self.documents, self.moves]
        self.unique = profiles.unique
        if self.unique:
            index = catalog.collections[claims(profiles.records)]
            self.claims = Output(index, topic_of(index.name), _claim_key, None, b"", True)
            self.outputs.append(self.claims)
        self.forwarding = frozenset(
            kind
            for destination in catalog.destinations.values()
            if destination.enabled
            for kind in destination.events
        )
        """The event types destinations forward enriched (into `forwarded(records)`)."""
        if self.forwarding:
            out = catalog.collections[forwarded(profiles.records)]
            self.forwarded = Output(out, topic_of(out.name), record_key_of, None, b"", True)
            self.outputs.append(self.forwarded)
        self.grouping = Grouping.of(catalog, topic_of)
        if self.grouping is not None:
            self.outputs.append(self.grouping.segments)

    def process_documents(
        self, items: Sequence[tuple[Any, int]], state: PartitionState
    ) -> BatchResult:
        result = BatchResult(events=len(items))
        if self.window_ms is not None:
            expire(items, state, result, self.window_ms)
        records: dict[str, Record] = {}
        loaded: dict[str, Record] = {}
        """Each record's state as stored before the batch (`_DELETED`: none)."""
        seen: dict[bytes, int] = {}
        records_logic = self.records

        def load(record_id: str) -> Record | None:
            found = records.get(record_id)
            if found is None:
                stored = state.get(RECORD + record_id.encode())
                found = _DELETED if stored is None else orjson.loads(stored)
                records[record_id] = loaded[record_id] = found
            return None if found is _DELETED else found

        def applied(key: bytes, timestamp: int) -> bool:
            """Whether `key` was applied within the window before `timestamp` (else: note it)."""
            first = seen.get(key)
            if first is None:
                stored = state.get(key)
                first = None if stored is None else int.from_bytes(stored, "big")
            window = self.window_ms
            if first is not None and (window is None or timestamp - first <= window):
                return True
            seen[key] = timestamp
            return False

        held: dict[str, Held] = {}
        held_before: dict[str, Held] = {}

        def claimed(record_id: str) -> Held:
            found = held.get(record_id)
            if found is None:
                stored = state.get(CLAIMED + record_id.encode())
                found = _NOTHING_HELD if stored is None else orjson.loads(stored)
                held[record_id] = held_before[record_id] = found
            return found

        touched: dict[str, None] = {}
        told: dict[str, None] = {}
        revealed: dict[str, set[str]] = {}
        """Unique properties whose holder a tell changed, per record: their shown values did."""
        merged: set[str] = set()
        forward: list[tuple[str, Any]] = []
        """Events of a type some destination forwards, with their records (SPEC 9)."""
        current: Record | None
        for doc, timestamp in items:
            record_id = doc["r"]
            if "e" in doc:
                event = doc["e"]
                if applied(APPLIED + event["id"].encode(), timestamp):
                    result.redeliveries += 1
                    continue
                current = load(record_id) or records_logic.empty()
                current = records_logic.apply(current, event, doc["t"], doc.get("a"))
                records[record_id] = _awaiting(current, doc.get("w"))
                if event.get("type") in self.forwarding:
                    forward.append((record_id, event))
            elif "into" in doc:
                current = load(record_id)
                if current is None:
                    # Moved already (a replayed command), or never anonymous: say so, so the
                    # person's record stops waiting for it.
                    empty = {"r": doc["into"], "s": None, "m": doc["m"]}
                    result.documents.append(
                        (self.moves, record_key(doc["into"]), orjson.dumps(empty))
                    )
                    continue
                moved = {k: v for k, v in current.items() if k not in NOT_MOVED}
                move = {"r": doc["into"], "s": moved, "m": doc["m"]}
                result.documents.append((self.moves, record_key(doc["into"]), orjson.dumps(move)))
                records[record_id] = _DELETED
                result.merges += 1
            elif "s" in doc:
                if applied(MOVED + doc["m"].encode(), timestamp):
                    result.redeliveries += 1
                    continue
                current = load(record_id)
                theirs = doc["s"]
                if theirs is None:  # nothing came: only stop waiting
                    if current is None:
                        continue
                    into = current
                elif current is None:
                    into = theirs
                else:
                    into = records_logic.merge(current, theirs)
                    if "M" in theirs:
                        into["M"] = merge_manual(current.get("M"), theirs["M"])
                records[record_id] = _arrived(into, doc["m"])
                merged.add(record_id)
            elif "im" in doc:
                row = doc["im"]
                if applied(APPLIED + row["id"].encode(), timestamp):
                    result.redeliveries += 1
                    continue
                current = load(record_id) or records_logic.empty()
                current = records_logic.apply_row(current, row, doc["t"], doc.get("a"))
                records[record_id] = _awaiting(current, doc.get("w"))
                result.rows += 1
            elif "gm" in doc:
                member = doc["gm"]
                if applied(APPLIED + member["id"].encode(), timestamp):
                    result.redeliveries += 1
                    continue
                current = records_logic.stamp(
                    load(record_id) or records_logic.empty(), member, doc["t"], doc.get("a")
                )
                order = order_of(member, doc["t"])
                current["M"] = set_manual(
                    current.get("M"), member["group"], not member.get("remove"), order
                )
                records[record_id] = _awaiting(current, doc.get("w"))
            elif "h" in doc:
                mine = claimed(record_id)
                prop = doc["k"]
                if mine["v"].get(prop, _NONE) != doc["v"] or mine["h"].get(prop) == doc["h"]:
                    continue  # told about a value it no longer claims, or nothing new
                held[record_id] = {**mine, "h": {**mine["h"], prop: doc["h"]}}
                if doc["h"] == record_id and mine["h"].get(prop, record_id) == record_id:
                    told[record_id] = None  # shown before and after: no new document
                    continue
                if load(record_id) is None:
                    continue
                revealed.setdefault(record_id, set()).add(prop)
            else:
                log.warning("records: ignoring an internal document of unknown form: %r", doc)
                continue
            touched[record_id] = None
        changes = result.changes
        grouping = self.grouping
        now = from_epoch_ns(self.clock())
        evaluated = 0 if grouping is None else grouping.memberships.evaluated
        shown: dict[str, dict[str, Any]] = {}
        for record_id in touched:
            record = records[record_id]
            key = RECORD + record_id.encode()
            before = loaded[record_id]
            if record is _DELETED:
                changes[key] = None
                result.documents.append((self.documents, record_key(record_id), None))
                if self.unique:
                    mine, stored = claimed(record_id), held_before[record_id]
                    self._claim(record_id, None, mine, stored, result)
                if grouping is not None and before is not _DELETED:
                    grouping.deleted(record_id, before, now, result)
                continue
            document = records_logic.document(record_id, record, [])
            if self.unique:
                mine, stored = claimed(record_id), held_before[record_id]
                lost = self._claim(record_id, document, mine, stored, result)
                document = uniqueness.losing(document, lost)
            if grouping is not None:
                if record_id in merged:
                    changed: set[str] | None = None
                elif before is _DELETED:  # new: changed from the record with no value
                    changed = set(document["properties"])
                else:
                    changed = changed_properties(before["p"], record["p"])
                    changed.update(revealed.get(record_id, ()))
                earlier = None if before is _DELETED else before
                record = grouping.changed(
                    record_id, earlier, record, document, changed, now, result
                )
            changes[key] = orjson.dumps(record)
            result.documents.append((self.documents, record_key(record_id), orjson.dumps(document)))
            shown[record_id] = document
        for record_id, event in forward:
            # After the record's document: what the event led to, as of this batch's end.
            if record_id in shown:
                note = {"r": record_id, "event": event, "document": shown[record_id]}
                result.documents.append((self.forwarded, record_key(record_id), orjson.dumps(note)))
        for record_id in told:
            if record_id not in touched:
                changes[CLAIMED + record_id.encode()] = orjson.dumps(held[record_id])
        for key, timestamp in seen.items():
            changes[key] = timestamp.to_bytes(8, "big")
        if grouping is not None:
            result.evaluations = grouping.memberships.evaluated - evaluated
        return result

    def fire(self, state: PartitionState, now_ns: int) -> BatchResult | None:
        """Fire the timers due by `now_ns` (`Grouping.fire`); None when none were due."""
        if self.grouping is None:
            return None
        return self.grouping.fire(
            state, now_ns, functools.partial(self._show, state), self.documents
        )

    def _show(self, state: PartitionState, record_id: str, record: Record) -> dict[str, Any]:
        """A stored record's document as shown: without the unique values it does not hold."""
        document = self.records.document(record_id, record, [])
        if not self.unique:
            return document
        held = state.get(CLAIMED + record_id.encode())
        told = {} if held is None else orjson.loads(held)["h"]
        return uniqueness.losing(document, {p: h for p, h in told.items() if h != record_id})

    def _claim(
        self,
        record_id: str,
        document: dict[str, Any] | None,
        mine: Held,
        stored: Held,
        result: BatchResult,
    ) -> dict[str, str]:
        """Claim and release what changed of a record's unique values (`document` None: the
        record is gone) since `mine` (what it held, told holders of this batch included), keep
        it if it differs from `stored`, and return the values it does not hold, with their
        holders."""
        values = {} if document is None else document["properties"]
        seniority = None if document is None else uniqueness.seniority_of(document["createdAt"])
        claimed, told = mine["v"], mine["h"]
        now: Held = {"s": seniority, "v": {}, "h": {}}
        dumps = orjson.dumps
        out = result.documents
        for prop in self.unique:
            value = values.get(prop, _NONE)
            before = claimed.get(prop, _NONE)
            same = before is not _NONE and before == value
            if before is not _NONE and not same:
                key = uniqueness.index_key(prop, before)
                release = {"k": key, "r": record_id, "p": prop, "v": before}
                out.append((self.claims, record_key(key), dumps(release)))
            if value is _NONE:
                continue
            now["v"][prop] = value
            if same and prop in told:
                now["h"][prop] = told[prop]
            if not same or seniority != mine["s"]:
                key = uniqueness.index_key(prop, value)
                claim = {"k": key, "r": record_id, "p": prop, "v": value, "s": seniority}
                out.append((self.claims, record_key(key), dumps(claim)))
        if now != stored:
            result.changes[CLAIMED + record_id.encode()] = None if document is None else dumps(now)
        return {p: h for p, h in now["h"].items() if h != record_id}


Held = dict[str, Any]
"""What a record claims (`u:<id>`): `{"s": seniority, "v": {property: value}, "h": {property:
holder it was told}}`."""
_NOTHING_HELD: Held = {"s": None, "v": {}, "h": {}}
_NONE = object()


def _awaiting(record: Record, merge: str | None) -> Record:
    """`record` waiting for the state of the merge `merge` (an event id) too, if given: until
    every awaited state arrived, its groups are not evaluated (it would be evaluated on part of
    its events, and could join and leave a group it never belongs to)."""
    if merge is None:
        return record
    return {**record, "w": sorted({*record.get("w", ()), merge})}


def _arrived(record: Record, merge: str) -> Record:
    """`record` no longer waiting for merge `merge`."""
    waiting = [m for m in record.get("w", ()) if m != merge]
    out = {k: v for k, v in record.items() if k != "w"}
    if waiting:
        out["w"] = waiting
    return out


def _claim_key(doc: Any) -> bytes:
    return record_key(doc["k"])
