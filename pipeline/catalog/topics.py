"""What a collection's topic keeps: compacted by key, or records kept for a time.

A collection block may say it with `topic: {cleanup: compact | delete, retention: 7d | forever}`;
what it does not say follows from what the collection is (`topic_policy`):

- captured collections (producers write them) and collections a derivation reads: `delete`,
  records kept `DEFAULT_RETENTION`, or the collection's dedup window when that is longer. Their
  records share record keys (producers key events by user), so compaction would drop events.
- derived collections with one document per source document (their key is the source's key:
  `segment/toggles`), and what the records stage forwards: `delete` too. Their keys never
  repeat, so a compacted topic would keep every document forever.
- every other derived collection (`segment/memberships`, `segment/profiles`,
  `profile/records`): `compact`. Each document replaces the last one of its key, so a consumer
  reading from the start gets the current documents.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.catalog.places import Place
from pipeline.catalog.readers import duration, kind, mapping
from pipeline.catalog.specs import Catalog, CollectionSpec, TopicSpec

TOPIC_KEYS = ("cleanup", "retention")
CLEANUPS = ("compact", "delete")
DEFAULT_RETENTION = 7 * 86400.0
FOREVER = math.inf


@dataclass(frozen=True)
class TopicPolicy:
    """The settings of a collection's topic."""

    cleanup: str
    """'compact' or 'delete'."""
    retention: float | None
    """Seconds a `delete` topic keeps a record (`FOREVER`: no limit); None when compacted."""


def check_topic(place: Place, value: Any, dedup: float | None) -> TopicSpec | None:
    """A collection's `topic:` block, checked for shape and against its dedup window."""
    body = mapping(place, value, TOPIC_KEYS, "topic")
    if body is None:
        return None
    cleanup = body.get("cleanup")
    if cleanup is not None and cleanup not in CLEANUPS:
        place.at("cleanup").report(
            f"topic cleanup must be 'compact' or 'delete', not {kind(cleanup)}"
        )
        return None
    retention: float | None = None
    if "retention" in body:
        if (retention := _retention(place.at("retention"), body["retention"])) is None:
            return None
        if dedup is not None and retention < dedup:
            place.at("retention").report(
                f"topic retention {_written(retention)} is shorter than the dedup window"
                f" {_written(dedup)}: keep the events at least as long as a redelivery of them"
                " is recognised"
            )
            return None
    return TopicSpec(cleanup, retention)


def _retention(place: Place, value: Any) -> float | None:
    """A positive duration, or 'forever'."""
    if value == "forever":
        return FOREVER
    return duration(place, value, "topic retention (or 'forever')")


def _written(seconds: float) -> str:
    """'7d', '36h', '90m' or '45s': a duration as a catalog would write it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def topic_policy(catalog: Catalog, name: str) -> TopicPolicy:
    """The settings of collection `name`'s topic: its own `topic:` block over the default."""
    spec = catalog.collections[name]
    what = collection_kind(catalog, spec)
    cleanup = spec.topic_spec.cleanup or ("compact" if what == "keyed" else "delete")
    if cleanup == "compact":
        return TopicPolicy(cleanup, None)
    retention = spec.topic_spec.retention
    if retention is None:
        retention = max(DEFAULT_RETENTION, spec.dedup_window or 0.0)
    return TopicPolicy(cleanup, retention)


_WHY = {
    "captured": "captured: producers' events, which share record keys (they are keyed by user)",
    "read": "read by a derivation, whose input must stay until it has been read",
    "forwarded": "append-only: one record per forwarded event",
    "append": "append-only: one document per source document, whose keys never repeat",
    "keyed": "derived by key: each document replaces the last one of its key",
}


def collection_kind(catalog: Catalog, spec: CollectionSpec) -> str:
    """'captured', 'read' (by a derivation), 'forwarded', 'append' or 'keyed' (module doc)."""
    if spec.name in catalog.captured():
        return "captured"
    if any(d.source == spec.name for d in catalog.derivations.values()):
        return "read"
    writers = [d for d in catalog.derivations.values() if d.collection == spec.name]
    if not writers:
        return "forwarded"
    sources = [catalog.collections.get(d.source) for d in writers]  # None: an invalid block
    if all(source is not None and source.key == spec.key for source in sources):
        return "append"
    return "keyed"


def check_topics(catalog: Catalog, places: Mapping[str, Place]) -> None:
    """What a `topic:` block asks that contradicts what its collection is (reported at
    `places`, by collection): compacting records that share keys, or a retention on a
    compacted topic."""
    for name, place in places.items():
        if name not in catalog.collections:
            continue  # its block has problems of its own, already reported
        spec = catalog.collections[name]
        what = collection_kind(catalog, spec)
        cleanup = spec.topic_spec.cleanup
        if cleanup == "compact" and what in ("captured", "read"):
            place.at("topic", "cleanup").report(
                "topic cleanup 'compact' would keep only the last record of each key, and this"
                f" collection is {_WHY[what]}; expected 'delete'"
            )
        elif spec.topic_spec.retention is not None and (cleanup or what) in ("compact", "keyed"):
            place.at("topic", "retention").report(
                "topic retention applies to cleanup 'delete' only, and this collection's topic"
                f" is compacted ({_WHY['keyed']}): remove retention, or set cleanup: delete"
            )
