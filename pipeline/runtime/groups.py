"""Groups in the profile stages (SPEC 8.4): memberships kept with each record, durable timers
for relative rules, every membership change as a segment event, and manual memberships handed to
the identity stage (`MembersTask`).

`Grouping` is the part of `RecordsTask` (`pipeline.runtime.profiles`) that deals with groups;
`derivations.profiles.membership` is the logic. What it keeps in a partition's state:
- in each record's state, `"g"` (change counts), `"t"` (next flips) and `"M"` (manual
  memberships), written with the record;
- one timer per record waiting for a flip, `T:<due, 8-byte big-endian ns><record id>`, so the
  due ones are the first keys from `T:` on. Timers are state like any other: in the changelog,
  restored after a crash, committed with the batch that sets or fires them.

Firing is exactly once in effect: a pass's documents are produced before its state commits
(`pipeline.runtime.state`), so a crash in between fires the same timers again after restart; the
changes are computed at the flips' own instants from the same state, so they are the same
documents, and their segment events have the same ids, which segment/events drops as
redeliveries. A timer due while no worker ran fires at start-up, with the instant it was due.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from derivations.profiles.groups import compile_groups
from derivations.profiles.instants import Instant, format_instant, from_epoch_ns, to_epoch_ns
from derivations.profiles.membership import Change, Memberships, due
from pipeline.catalog import Catalog
from pipeline.catalog.profiles import SEGMENT_EVENTS
from pipeline.documents import pointers
from pipeline.runtime.state import Changes, PartitionState
from pipeline.runtime.task import BatchResult, Output

Record = dict[str, Any]
Show = Callable[[str, Record], dict[str, Any]]
"""A record's document as shown (uniqueness applied), from its id and state."""

RECORD = b"R:"
"""Key prefix of record states (`R:<id>`), shared with the records stage."""
TIMER = b"T:"
_LAST_NS = 2**64 - 1
"""The latest due time a timer key can hold (8 bytes)."""
TIMERS_PER_PASS = 5000
"""Records whose timers one pass fires at most: a cohort flipping in the same second is
spread over several passes, so the loop keeps serving events between them."""
_CHANGE_IDS = uuid.UUID("5e9f1c2a-6d1b-4c36-9a51-2f0b7f3c8e10")
"""Namespace of the ids of membership changes in segment/events (uuid5)."""
_NAMESPACE = _CHANGE_IDS.bytes
ARRIVED = "_t"
"""A forwarded membership's record timestamp (ms), which the identity stage takes as its own."""
NOT_MOVED = ("g", "t", "w")
"""The parts of a record's state that stay with its id when it merges into another."""


def record_key(text: str) -> bytes:
    """The Kafka key of a record id, or of any id keyed by one JSON pointer (as
    `pointers.key_encoder(["/id"])` writes it)."""
    return orjson.dumps([text])


class Grouping:
    """The groups of a catalog, as the records stage applies them."""

    def __init__(self, catalog: Catalog, topic_of: Callable[[str], str]) -> None:
        profiles = catalog.profiles
        assert profiles is not None
        manual = [name for name, group in profiles.groups.items() if group.manual]
        self.memberships = Memberships(compile_groups(profiles), manual)
        self.vendor = profiles.group_vendor
        events = catalog.collections[SEGMENT_EVENTS]
        self.segments = Output(
            events, topic_of(events.name), pointers.key_encoder(events.key), None, b""
        )
        """segment/events: the changes, written to the owner's partition and routed on there."""

    @classmethod
    def of(cls, catalog: Catalog, topic_of: Callable[[str], str]) -> Grouping | None:
        """The catalog's groups, or None when it has none."""
        profiles = catalog.profiles
        return cls(catalog, topic_of) if profiles is not None and profiles.groups else None

    def changed(
        self,
        record_id: str,
        before: Record | None,
        record: Record,
        document: dict[str, Any],
        changed: set[str] | None,
        now: Instant,
        result: BatchResult,
    ) -> Record:
        """A record changed from `before` (None: new) to `record`, shown as `document`:
        evaluate its groups (`Memberships.on_change`; `changed` None: all of them), set the
        document's `groups`, publish the changes; returns the state to store. A record waiting
        for a merge's state (`"w"`) keeps its groups as they are until it has it."""
        if record.get("w"):
            document["groups"] = self.memberships.members(record)
            return record
        manual = None if before is None else before.get("M")
        after, made = self.memberships.on_change(
            record, document["properties"], changed, now, manual
        )
        updated = {**record, **after}
        _move_timer(record_id, before, updated, result.changes)
        document["groups"] = self.memberships.members(after)
        self._publish(record_id, made, result)
        return updated

    def deleted(self, record_id: str, before: Record, now: Instant, result: BatchResult) -> None:
        """A record merged away: it leaves every group, and its timer goes."""
        _move_timer(record_id, before, None, result.changes)
        self._publish(record_id, self.memberships.leave_all(before, now), result)

    def fire(
        self,
        state: PartitionState,
        now_ns: int,
        show: Show,
        documents: Output,
        limit: int = TIMERS_PER_PASS,
    ) -> BatchResult | None:
        """Fire the timers due by `now_ns` (at most `limit` records' worth): each record whose
        group flips gets its new groups, a new document into `documents` and its segment
        events, at the instants of the flips (`Memberships.fire`). None when nothing was due."""
        due_keys = []
        for key in state.keys_from(TIMER):
            if not key.startswith(TIMER) or int.from_bytes(key[2:10], "big") > now_ns:
                break
            due_keys.append(key)
            if len(due_keys) >= limit:
                break
        if not due_keys:
            return None
        memberships = self.memberships
        now = from_epoch_ns(now_ns)
        result = BatchResult(timers_fired=len(due_keys))
        changes = result.changes
        evaluated = memberships.evaluated
        for timer in due_keys:
            record_id = timer[10:].decode()
            key = RECORD + record_id.encode()
            stored = state.get(key)
            if stored is None:  # not expected: a deleted record's timer goes with it
                changes[timer] = None
                continue
            record = orjson.loads(stored)
            if record.get("w"):
                continue  # waiting for a merge's state, which evaluates every group anyway
            document = show(record_id, record)
            after, made = memberships.fire(record, document["properties"], now)
            updated = {**record, **after}
            _move_timer(record_id, record, updated, changes)
            changes[key] = orjson.dumps(updated)
            if made:
                document["groups"] = memberships.members(after)
                result.documents.append((documents, record_key(record_id), orjson.dumps(document)))
                self._publish(record_id, made, result)
        result.evaluations = memberships.evaluated - evaluated
        return result

    def _publish(self, record_id: str, made: list[Change], result: BatchResult) -> None:
        """Each change as a segment event (SPEC 8.4): a join, or a leave with `remove`, whose
        id derives from (record, group, change number)."""
        dumps = orjson.dumps
        out = result.documents
        for change in made:
            event_id = change_id(f"{record_id}\n{change.group}\n{change.number}")
            doc: dict[str, Any] = {
                "event": event_id,
                "timestamp": _text(change.at),
                "user": record_id,
                "segment": {"vendor": self.vendor, "name": change.group},
            }
            if not change.joined:
                doc["remove"] = True
            out.append((self.segments, record_key(event_id), dumps(doc)))
        result.group_changes += len(made)


def change_id(name: str) -> str:
    """`str(uuid.uuid5(_CHANGE_IDS, name))`, without building UUID objects (a third of the
    cost of a change, measured)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@functools.lru_cache(maxsize=1024)
def _text(at: Instant) -> str:
    """RFC 3339 text of a change's time: the changes of a batch share its clock reading."""
    return format_instant(at)


def changed_properties(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """The properties whose aggregate state is not the one loaded (the records logic keeps the
    untouched ones as they are, so identity tells)."""
    out = {name for name, part in after.items() if before.get(name) is not part}
    out.update(name for name in before if name not in after)
    return out


def _move_timer(
    record_id: str, before: Record | None, after: Record | None, changes: Changes
) -> None:
    """Move the record's timer from the earliest flip of `before` to that of `after` (None: no
    record)."""
    old = None if before is None else due(before)
    new = None if after is None else due(after)
    if old == new:
        return
    if old is not None:
        changes[_timer_key(old, record_id)] = None
    if new is not None:
        changes[_timer_key(new, record_id)] = b"1"


def _timer_key(at: Instant, record_id: str) -> bytes:
    # occurredAt goes up to year 9999: a flip past 2554 (2**64 ns) waits at the last key.
    due_ns = min(max(to_epoch_ns(at), 0), _LAST_NS)
    return TIMER + due_ns.to_bytes(8, "big") + record_id.encode()


class MembersTask:
    """The members stage: manual memberships (profile/group-members) into the identity stage's
    shuffle topic, keyed like product events, so each resolves to its person's record through
    the identity links and follows it through merges. A missing occurredAt is filled from the
    record timestamp here, where that is still the producer's, and the timestamp travels in the
    document (`ARRIVED`): it is the arrival that orders memberships of the same occurredAt."""

    def __init__(self, catalog: Catalog, source: str, shuffle_of: Callable[[str], str]) -> None:
        profiles = catalog.profiles
        assert profiles is not None
        (spec,) = catalog.derivations_from(source)
        self.source = catalog.collections[source]
        self.shuffle_key = spec.shuffle_encoder()
        (identity,) = catalog.derivations_from(profiles.events)
        events = catalog.collections[profiles.events]
        self.into_identity = identity.shuffle_encoder()
        self.output = Output(events, shuffle_of(events.name), self.into_identity, None, b"", True)
        self.outputs = [self.output]

    def process_documents(
        self, items: Sequence[tuple[Any, int]], state: PartitionState
    ) -> BatchResult:
        result = BatchResult(events=len(items))
        out, output, key_of, dumps = result.documents, self.output, self.into_identity, orjson.dumps
        for doc, timestamp in items:
            doc = {**doc, ARRIVED: timestamp}
            if "occurredAt" not in doc:
                doc["occurredAt"] = format_instant(from_epoch_ns(timestamp * 10**6))
            out.append((output, key_of(doc), dumps(doc)))
        return result
