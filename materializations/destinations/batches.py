"""What one request of a destination carries, and what its acknowledgement changes. Pure.

`compose` turns the items a lane took (`pending`) into the request's elements, in order:
- a slot gives the export that brings the destination from what it acknowledged (the
  baseline, or what an earlier export of the same request leaves it with) to the record's
  view, or nothing when nothing changed — or when the baseline was acknowledged from this
  document or a later one (a document read again after a restart);
- an event goes once its record is up to date at the destination: the destination holds the
  view the record had right after the event. If not, the record's waiting slot is pulled
  forward (its export goes first); if still not, the event is held (`Pending.hold`) until
  the record's next document, or until it waited `hold` seconds (then it goes anyway: the
  record moved on past it in the same batch of the records stage, or its document is late).

`Change`s say what to record per record once the request is answered: the position (the
records-topic offset of the document it reflects) always; the view only if the destination
acknowledged (2xx). A position is recorded for every export, and for a slot that replaced an
earlier document, so that reading the earlier one again after a restart sends nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from materializations.destinations.exports import (
    View,
    acked_after,
    export_of,
    mapped_properties,
    view_of,
)
from materializations.destinations.pending import Event, Item, Pending, Slot
from pipeline.catalog.specs import DestinationSpec


@dataclass(frozen=True)
class Baseline:
    """What a destination acknowledged of a record, and from which records-topic offset."""

    position: int
    view: View | None


@dataclass(frozen=True)
class Change:
    """What to record of one record once its request is answered."""

    record: str
    position: int
    touched: bool
    """Whether the request holds an export of the record (its view changes if acknowledged)."""
    view: View | None


@dataclass
class Batch:
    """One request's elements and what its outcome changes."""

    elements: list[Mapping[str, Any]] = field(default_factory=list)
    changes: dict[str, Change] = field(default_factory=dict)
    exports: int = 0
    events: int = 0


def compose(
    spec: DestinationSpec,
    items: Sequence[Item],
    baselines: Mapping[str, Baseline],
    pending: Pending,
    now: float,
    hold: float,
) -> Batch:
    """The request for `items` (module docstring); holds events in `pending` as it goes."""
    batch = Batch()
    holds: dict[str, View | None] = {}  # record -> what the destination holds after the batch

    def held_view(record: str) -> View | None:
        if record in holds:
            return holds[record]
        base = baselines.get(record)
        return None if base is None else base.view

    def export(slot: Slot) -> None:
        base = baselines.get(slot.record)
        if base is not None and slot.offset <= base.position:
            return  # read again after a restart: acknowledged from this document or a later one
        doc = slot.document
        current = None if doc is None else mapped_properties(spec, doc)
        view = view_of(spec, doc, current)
        made = export_of(spec, slot.record, view, held_view(slot.record), current)
        if made is not None:
            batch.elements.append(made)
            batch.exports += 1
            holds[slot.record] = acked_after(made)
            batch.changes[slot.record] = Change(slot.record, slot.offset, True, holds[slot.record])
        elif slot.replaced:
            batch.changes[slot.record] = Change(slot.record, slot.offset, False, None)

    later = {item.record: item for item in items if isinstance(item, Slot)}
    """The batch's slots not exported yet (an event may need one first)."""
    for item in items:
        if isinstance(item, Slot):
            if later.pop(item.record, None) is item:
                export(item)
            continue
        if pending.is_held(item.record):  # an earlier event of its record waits: so does this
            pending.hold(item)
            continue
        if held_view(item.record) != item.view:
            pulled = later.pop(item.record, None) or pending.pull(item.record)
            if pulled is not None:
                export(pulled)
        if _ready(item, held_view(item.record), now, hold):
            batch.elements.append(item.body)
            batch.events += 1
        else:
            pending.hold(item)
    return batch


def _ready(event: Event, holds: View | None, now: float, hold: float) -> bool:
    return event.force or holds == event.view or now - event.since >= hold


def message_id(destination: str, body: bytes) -> str:
    """The request's `webhook-id`: a function of its body, whose element ids are stable, so a
    request sent again after a restart is recognised as the same message."""
    return "msg_" + hashlib.sha256(destination.encode() + b"\0" + body).hexdigest()[:32]
