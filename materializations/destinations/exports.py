"""What a destination holds of a record, and the export that brings it up to date (SPEC 9).

A record's **view** in a destination is what the destination should hold: the mapped properties
(remote field -> value; `id` and `userId` are the record's own, a property without a value is
left out) and the sorted tags of the tracked groups it is in. A record with no tag is not in the
destination (`view_of` gives None).

`export_of(spec, record, view, acked)` compares the view with what the destination last
**acknowledged** (`acked`, None when it holds nothing) and gives the export to send, or None
when nothing changed:
- nothing acknowledged and the record in: a create (`old*` empty);
- both: an update when properties or tags differ;
- acknowledged and the record out (it left its last tracked group, or was merged away: `view`
  None): `sync` deletes (`toDelete: true`); `additive` and `enrich` keep the remote record and
  clear its tags (`toDelete: false, newGroups: []`), once.
`acked_after(export)` is what the destination holds once it acknowledged `export`: None after a
delete. An acknowledged view with no tags is a record the destination keeps (additive, enrich)
but that is not in it: it gets no export until it enters again.

An export's `id` is a function of the destination, the record and both sides, so the same
export computed again after a restart has the same id (receivers drop redeliveries by it).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.catalog.specs import DestinationSpec

_EXPORT_IDS = uuid.UUID("6f1c0a52-3d0e-5b8e-9a51-5e6a8b2f4c11")
"""Namespace of export ids (uuid5)."""

Export = dict[str, Any]


@dataclass(frozen=True)
class View:
    """What a destination holds (or should hold) of one record."""

    properties: Mapping[str, Any]
    groups: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"properties": dict(self.properties), "groups": list(self.groups)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> View:
        return cls(raw["properties"], tuple(raw["groups"]))


def mapped_properties(spec: DestinationSpec, document: Mapping[str, Any]) -> dict[str, Any]:
    """The record's mapped properties, by remote field (those without a value left out)."""
    shown = document.get("properties", {})
    out: dict[str, Any] = {}
    for remote, name in spec.properties.items():
        if name == "id":
            value = document.get("id")
        elif name == "userId":
            value = document.get("userId")
        else:
            value = shown.get(name)
        if value is not None:
            out[remote] = value
    return out


def tags_of(spec: DestinationSpec, groups: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The sorted tags of the tracked groups among `groups`."""
    tracked = spec.groups
    return tuple(sorted({tracked[g] for g in groups if g in tracked}))


def view_of(
    spec: DestinationSpec,
    document: Mapping[str, Any] | None,
    mapped: dict[str, Any] | None = None,
) -> View | None:
    """The record's view, or None when it is in no tracked group (or gone: `document` None);
    `mapped`: its `mapped_properties`, when the caller has them already."""
    if document is None:
        return None
    tags = tags_of(spec, document.get("groups", ()))
    if not tags:
        return None
    return View(mapped_properties(spec, document) if mapped is None else mapped, tags)


def export_of(
    spec: DestinationSpec,
    record: str,
    view: View | None,
    acked: View | None,
    current: Mapping[str, Any] | None = None,
) -> Export | None:
    """The export bringing the destination from `acked` to `view`, or None (module docstring).

    `current` is the record's mapped properties when it left while still existing (they go as
    `newProperties` of its last export); a merged-away record sends what was acknowledged.
    """
    if view is None:
        if acked is None or (not acked.groups and spec.mode != "sync"):
            return None
        new_properties = dict(acked.properties if current is None else current)
        new_groups: list[str] = []
        delete = spec.mode == "sync"
    elif acked is not None and view == acked:
        return None
    else:
        new_properties, new_groups, delete = dict(view.properties), list(view.groups), False
    old_properties = {} if acked is None else dict(acked.properties)
    old_groups = [] if acked is None else list(acked.groups)
    export: Export = {
        "id": "",
        "record": record,
        "mode": spec.mode,
        "newProperties": new_properties,
        "oldProperties": old_properties,
        "newGroups": new_groups,
        "oldGroups": old_groups,
        "toDelete": delete,
    }
    export["id"] = export_id(spec.name, export)
    return export


def acked_after(export: Export) -> View | None:
    """What the destination holds once it acknowledged `export` (None: nothing)."""
    if export["toDelete"]:
        return None
    return View(export["newProperties"], tuple(export["newGroups"]))


def export_id(destination: str, export: Export) -> str:
    """The export's id: uuid5 of the destination, the record and both sides (the export as
    JSON with sorted keys, its `id` empty), written out without building UUID objects."""
    sides = orjson.dumps({**export, "id": ""}, option=orjson.OPT_SORT_KEYS)
    digest = bytearray(
        hashlib.sha1(_EXPORT_IDS.bytes + destination.encode() + b"\0" + sides).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def enriched(
    spec: DestinationSpec, event: Mapping[str, Any], document: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The enriched event forwarded for `event` (SPEC 9), from the record's document after the
    event updated it; None when the record is not in the destination or the type not listed."""
    if event.get("type") not in spec.events:
        return None
    view = view_of(spec, document)
    if view is None:
        return None
    return {
        "event": dict(event),
        "record": document["id"],
        "properties": dict(view.properties),
        "groups": list(view.groups),
    }
