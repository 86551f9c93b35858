"""The identity stage (`IdentityTask`, described with the others in `pipeline.runtime.profiles`)
and what every profile stage shares (`Stage`).

The stage's input are product events, manual memberships (`"group"`: the members stage hands
them over) and import rows (`"import"`: `pipeline.runtime.imports` writes them into this
stage's shuffle topic); each goes on to its record as `"e"`, `"gm"` or `"im"`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from derivations.profiles.identity import resolve, user_id_of
from derivations.profiles.instants import format_instant, from_epoch_ns
from pipeline.catalog import Catalog
from pipeline.catalog.profiles import identified
from pipeline.documents import pointers
from pipeline.runtime.groups import ARRIVED, record_key
from pipeline.runtime.state import PartitionState
from pipeline.runtime.task import BatchResult, Output, deduplicate

log = logging.getLogger("pipeline.runtime.profiles")

LINK = b"l:"


def dedup_window_ms(catalog: Catalog, collection: str) -> int | None:
    window = catalog.collections[collection].dedup_window
    return None if window is None else int(window * 1000)


class Stage:
    """What every profile stage has: the `profiles:` section, its source and shuffle key."""

    def __init__(self, catalog: Catalog, source: str, topic_of: Callable[[str], str]) -> None:
        profiles = catalog.profiles
        assert profiles is not None
        self.profiles = profiles
        (spec,) = catalog.derivations_from(source)
        self.source = catalog.collections[source]
        self.shuffle_key = spec.shuffle_encoder()
        middle = catalog.collections[identified(profiles.records)]
        self.into_records = Output(middle, topic_of(middle.name), record_key_of, None, b"", True)
        """`<records>.identified`, partitioned by record: the records stage's input."""


class IdentityTask(Stage):
    """Stage 1: events to record ids (module docstring)."""

    def __init__(self, catalog: Catalog, source: str, topic_of: Callable[[str], str]) -> None:
        super().__init__(catalog, source, topic_of)
        self.dedup_key = pointers.key_encoder(self.source.key)
        self.dedup_window_ms = dedup_window_ms(catalog, source)
        self.output = self.into_records
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
                out.append((output, record_key(resolved.merge), dumps(move)))
            # A manual membership (from the members stage) goes on as one, under "gm", with the
            # record timestamp it arrived with; an import row under "im".
            kind = "e"
            if "group" in event:
                kind = "gm"
                timestamp = event.pop(ARRIVED, timestamp)
            elif "import" in event:
                kind = "im"
            routed: dict[str, Any] = {"r": resolved.record, kind: event, "t": timestamp}
            if resolved.merge is not None:
                routed["w"] = event["id"]  # the record waits for that merge's state
            if resolved.linked is not None:
                routed["a"] = resolved.linked
            out.append((output, record_key(resolved.record), dumps(routed)))
        for key, value in links.items():
            result.changes[key] = None if value is None else value.encode()
        return result


def record_key_of(doc: Any) -> bytes:
    """The record key of an internal document: its record's (`r`), or a record's own id."""
    return record_key(doc["r"] if "r" in doc else doc["id"])
