"""The segmentation derivations of Estuary's demo: memberships, profiles and toggles."""

from __future__ import annotations

from typing import Any

Document = dict[str, Any]


def _detail(event: Document) -> Document:
    """What one event says about its (segment, user) membership, before reduction."""
    detail: Document = {"segment": event["segment"], "last": event["timestamp"]}
    if event.get("remove"):
        detail["member"] = False
    else:
        detail["first"] = event["timestamp"]
        detail["member"] = True
        if "value" in event:
            detail["value"] = event["value"]
    return detail


class Memberships:
    """segment/memberships: one document per (segment, user), reduced by the schema."""

    def publish(self, source: Document, register: None, previous: None) -> list[Document]:
        doc = _detail(source)
        doc["user"] = source["user"]
        return [doc]


class Profiles:
    """segment/profiles: one document per user with every segment's membership detail."""

    def publish(self, source: Document, register: None, previous: None) -> list[Document]:
        return [{"user": source["user"], "segments": [_detail(source)]}]


class Toggles:
    """segment/toggles: events that change a user's status in a segment.

    The register (per segment and user) remembers whether the user was ever added and the
    last event. An event toggles iff the user was added before it, and the last event's
    remove-status differs from its own.
    """

    def update(self, source: Document) -> list[Document]:
        return [{"added": not source.get("remove", False), "last": source}]

    def publish(
        self, source: Document, register: Document, previous: Document | None
    ) -> list[Document]:
        if not previous or not previous.get("added"):
            return []
        last = previous.get("last")
        if last is None or bool(last.get("remove")) == bool(source.get("remove")):
            return []
        return [{**source, "previous": last}]
