"""The two stages that build profile records (SPEC 8.2), run by the Deriver like any task.

Identity (`IdentityTask`), source `profile/events` shuffled by anonymousId: drops redeliveries
(the collection's dedup window), resolves each event's record with `derivations.profiles.identity`
(the links are its state, `l:<anonymousId>`), fills a missing occurredAt from the record
timestamp, and writes into `<records>.identified`, partitioned by record id:
- `{"r": record, "e": event, "t": arrival ms, "a": anonymousId it links?}` for every event;
- `{"r": "anon:A", "into": U, "m": event id}` when A links to U and `anon:A` exists.

Records (`RecordsTask`), source `<records>.identified`: keeps each record's state (`R:<id>`),
applies events, and writes each changed record's document once per batch into `profile/records`.
A merge moves state across partitions: the owner of `anon:A` sends `{"r": U, "s": state, "m": id}`
into `<records>.identified` (so to U's owner), deletes its state and writes a tombstone.

Every hop is at least once (a batch is replayed after a crash before its commit), so both stages
make their effects idempotent: the records stage remembers the events (`d:<event id>`) and moves
(`m:<event id>`) it applied, for the events collection's dedup window. A replayed merge command
finds no state and does nothing; a replayed move is dropped by its id. Processing is a function
of each partition's input order, so a replay routes every event as the first run did (given one
input path per device: see README, Guarantees).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from derivations.profiles.identity import resolve, user_id_of
from derivations.profiles.instants import format_instant, from_epoch_ns
from derivations.profiles.records import Record, Records
from pipeline.catalog import Catalog
from pipeline.catalog.profiles import identified
from pipeline.documents import pointers
from pipeline.runtime.state import PartitionState
from pipeline.runtime.task import BatchResult, Output, deduplicate

log = logging.getLogger(__name__)

LINK = b"l:"
RECORD = b"R:"
APPLIED = b"d:"
MOVED = b"m:"
_DELETED: Record = {}


def _key(text: str) -> bytes:
    """The record key of a record id (as `pointers.key_encoder(["/id"])` writes it)."""
    return orjson.dumps([text])


def _window_ms(catalog: Catalog, collection: str) -> int | None:
    window = catalog.collections[collection].dedup_window
    return None if window is None else int(window * 1000)


class IdentityTask:
    """Stage 1: events to record ids (module docstring)."""

    def __init__(self, catalog: Catalog, source: str, topic_of: Callable[[str], str]) -> None:
        assert catalog.profiles is not None
        (spec,) = catalog.derivations_from(source)
        self.source = catalog.collections[source]
        self.shuffle_key = spec.shuffle_encoder()
        self.dedup_key = pointers.key_encoder(self.source.key)
        self.dedup_window_ms = _window_ms(catalog, source)
        target = catalog.collections[identified(catalog.profiles.records)]
        self.output = Output(target, topic_of(target.name), _record_key, None, b"", by_key=True)
        self.outputs = [self.output]

    def process_documents(
        self, items: Sequence[tuple[Any, int]], state: PartitionState
    ) -> BatchResult:
        result = BatchResult(events=len(items))
        if self.dedup_window_ms is not None:
            items = deduplicate(items, state, result, self.dedup_key, self.dedup_window_ms)
        links: dict[bytes, str | None] = {}
        out = result.documents
        output = self.output
        dumps = orjson.dumps
        for event, timestamp in items:
            anonymous = event.get("anonymousId")
            link = None
            if anonymous is not None:
                link_key = LINK + anonymous.encode()
                if link_key in links:
                    link = links[link_key]
                else:
                    stored = state.get(link_key)
                    link = None if stored is None else stored.decode()
            user = user_id_of(event)
            resolved = resolve(user, anonymous, link)
            if anonymous is not None and resolved.link != link:
                links[link_key] = resolved.link
            if resolved.conflict is not None:
                result.conflicts += 1
                log.warning(
                    "identity: event %s of userId %r has anonymousId %r, linked to %r already;"
                    " it goes to %r and the two stay apart",
                    event.get("id"),
                    user,
                    anonymous,
                    resolved.conflict,
                    user,
                )
            if "occurredAt" not in event:
                event = {**event, "occurredAt": format_instant(from_epoch_ns(timestamp * 10**6))}
            if resolved.merge is not None:
                move = {"r": resolved.merge, "into": resolved.record, "m": event["id"]}
                out.append((output, _key(resolved.merge), dumps(move)))
            routed: dict[str, Any] = {"r": resolved.record, "e": event, "t": timestamp}
            if resolved.linked is not None:
                routed["a"] = resolved.linked
            out.append((output, _key(resolved.record), dumps(routed)))
        for key, value in links.items():
            result.changes[key] = None if value is None else value.encode()
        return result


class RecordsTask:
    """Stage 2: record states and documents, and the merges between them (module docstring)."""

    def __init__(self, catalog: Catalog, source: str, topic_of: Callable[[str], str]) -> None:
        profiles = catalog.profiles
        assert profiles is not None
        (spec,) = catalog.derivations_from(source)
        self.source = catalog.collections[source]
        self.shuffle_key = spec.shuffle_encoder()
        self.records = Records.of(profiles)
        self.window_ms = _window_ms(catalog, profiles.events)
        target = catalog.collections[profiles.records]
        self.documents = Output(target, topic_of(target.name), _record_key, None, b"")
        self.moves = Output(self.source, topic_of(self.source.name), _record_key, None, b"", True)
        self.outputs = [self.documents, self.moves]

    def process_documents(
        self, items: Sequence[tuple[Any, int]], state: PartitionState
    ) -> BatchResult:
        result = BatchResult(events=len(items))
        records: dict[str, Record] = {}
        seen: dict[bytes, int] = {}
        records_logic = self.records

        def load(record_id: str) -> Record | None:
            found = records.get(record_id)
            if found is None:
                stored = state.get(RECORD + record_id.encode())
                found = _DELETED if stored is None else orjson.loads(stored)
                records[record_id] = found
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

        touched: dict[str, None] = {}
        current: Record | None
        for doc, timestamp in items:
            record_id = doc["r"]
            if "e" in doc:
                event = doc["e"]
                if applied(APPLIED + event["id"].encode(), timestamp):
                    result.redeliveries += 1
                    continue
                current = load(record_id) or records_logic.empty()
                records[record_id] = records_logic.apply(current, event, doc["t"], doc.get("a"))
            elif "into" in doc:
                current = load(record_id)
                if current is None:
                    continue  # moved already (a replayed command), or never anonymous
                move = {"r": doc["into"], "s": current, "m": doc["m"]}
                result.documents.append((self.moves, _key(doc["into"]), orjson.dumps(move)))
                records[record_id] = _DELETED
                result.merges += 1
            elif "s" in doc:
                if applied(MOVED + doc["m"].encode(), timestamp):
                    result.redeliveries += 1
                    continue
                current = load(record_id)
                merged = doc["s"] if current is None else records_logic.merge(current, doc["s"])
                records[record_id] = merged
            else:
                log.warning("records: ignoring an internal document of unknown form: %r", doc)
                continue
            touched[record_id] = None
        changes = result.changes
        for record_id in touched:
            record = records[record_id]
            key = RECORD + record_id.encode()
            if record is _DELETED:
                changes[key] = None
                result.documents.append((self.documents, _key(record_id), None))
            else:
                changes[key] = orjson.dumps(record)
                document = records_logic.document(record_id, record, [])
                result.documents.append((self.documents, _key(record_id), orjson.dumps(document)))
        for key, timestamp in seen.items():
            changes[key] = timestamp.to_bytes(8, "big")
        return result


def _record_key(doc: Any) -> bytes:
    return _key(doc["r"] if "r" in doc else doc["id"])
