"""A record's state and document (SPEC 8.1, 8.3): built from events, merged on identity merge.

The state is plain JSON: `{"p": {property: aggregate state}, "a": [anonymousIds, sorted],
"c": earliest occurredAt, "u": latest occurredAt}` (the last two as `min`/`max` date aggregates).
Other keys (group memberships: `membership`) are the runtime's; `apply` keeps them, `merge`
keeps the first record's.
Every part merges order-independently, so a record merged from an anonymous one equals the record
built as if every event had gone to the person (`aggregates` says why).

An event's order is `make_order(occurredAt, [record timestamp in ms, event id])`: ties of
occurredAt go to the later-arriving event, and the event id makes the order total and the same
whichever record the event went to.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .aggregates import Aggregate, Order, make_order
from .compiled import Reader, adder, reader
from .extract import ImportProperty, Property, Taker, compile_all
from .identity import ANON
from .instants import parse_instant
from .model import ProfilesSpec
from .values import normalise

Record = dict[str, Any]

_CREATED = Aggregate("min", "date")
_UPDATED = Aggregate("max", "date")
_ADD_CREATED, _ADD_UPDATED = adder(_CREATED), adder(_UPDATED)


def order_of(event: Mapping[str, Any], arrival_ms: int) -> Order:
    """The order of an event whose occurredAt is set (the identity stage sets it)."""
    instant = parse_instant(event["occurredAt"])
    assert instant is not None, "occurredAt is checked by the events schema"
    return make_order(instant, [arrival_ms, event["id"]])


_TYPES_KEPT = 1000
"""Event types whose properties are remembered (`Records.taking`); others are looked up."""


def _linked(anonymous: list[str], anonymous_id: str | None) -> list[str]:
    """The sorted anonymousIds with `anonymous_id` in them (the same list if it was)."""
    if anonymous_id is None or anonymous_id in anonymous:
        return anonymous
    out = list(anonymous)
    bisect.insort(out, anonymous_id)
    return out


@dataclass(frozen=True)
class Records:
    """The record logic of one checked `profiles:` spec."""

    properties: Mapping[str, Property]
    _taking: dict[Any, tuple[tuple[str, Taker], ...]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _importing: dict[str, tuple[tuple[str, Taker], ...]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _takers: dict[str, Taker] = field(init=False, compare=False, repr=False)
    _readers: tuple[tuple[str, Reader, tuple[Any, str | None]], ...] = field(
        init=False, compare=False, repr=False
    )
    """(name, reader, what it reads of no state) per property, in document order."""

    def __post_init__(self) -> None:
        takers = {name: prop.taker() for name, prop in self.properties.items()}
        readers = [(name, reader(prop.aggregate)) for name, prop in self.properties.items()]
        object.__setattr__(self, "_takers", takers)
        object.__setattr__(self, "_readers", tuple((n, r, r({})) for n, r in readers))

    @classmethod
    def of(cls, spec: ProfilesSpec) -> Records:
        return cls(compile_all(spec))

    def taking(self, kind: Any) -> tuple[tuple[str, Taker], ...]:
        """The properties an event of type `kind` may contribute to (those of every type too),
        each with its compiled `EventProperty.taker`."""
        found = self._taking.get(kind)
        if found is None:
            found = tuple(
                (name, self._takers[name])
                for name, prop in self.properties.items()
                if prop.events is None or kind in prop.events
            )
            if len(self._taking) < _TYPES_KEPT:
                self._taking[kind] = found
        return found

    def importing(self, source: str) -> tuple[tuple[str, Taker], ...]:
        """The properties rows of import `source` set, each with its taker."""
        found = self._importing.get(source)
        if found is None:
            found = self._importing[source] = tuple(
                (name, self._takers[name])
                for name, prop in self.properties.items()
                if isinstance(prop, ImportProperty) and prop.source == source
            )
        return found

    def empty(self) -> Record:
        return {"p": {}, "a": [], "c": {}, "u": {}}

    def apply(
        self, state: Record, event: Mapping[str, Any], arrival_ms: int, anonymous_id: str | None
    ) -> Record:
        """`state` with one event added (`anonymous_id`: the device it links, if any)."""
        return self._add(state, event, self.taking(event.get("type")), arrival_ms, anonymous_id)

    def apply_row(
        self, state: Record, row: Mapping[str, Any], arrival_ms: int, anonymous_id: str | None
    ) -> Record:
        """`state` with one import row added (`{"id", "import", "occurredAt", "values"}`): it
        sets the import's properties, and counts for createdAt and updatedAt like an event."""
        return self._add(state, row, self.importing(row["import"]), arrival_ms, anonymous_id)

    def stamp(
        self, state: Record, event: Mapping[str, Any], arrival_ms: int, anonymous_id: str | None
    ) -> Record:
        """`state` with a document applied that sets no property (a manual group membership):
        its occurredAt counts for createdAt and updatedAt, its anonymousId links."""
        return self._add(state, event, (), arrival_ms, anonymous_id)

    def _add(
        self,
        state: Record,
        document: Mapping[str, Any],
        takes: tuple[tuple[str, Taker], ...],
        arrival_ms: int,
        anonymous_id: str | None,
    ) -> Record:
        """`state` with `document` added to the properties `takes` names, to createdAt and
        updatedAt, and its device linked."""
        order = order_of(document, arrival_ms)
        occurred = normalise("date", document["occurredAt"])
        aggregates = state["p"]
        if takes:
            aggregates = dict(aggregates)
            for name, take in takes:
                before = aggregates.get(name)
                after = take(before if before is not None else {}, document, order, occurred)
                if after is not before and after:
                    aggregates[name] = after
        return {
            **state,
            "p": aggregates,
            "a": _linked(state["a"], anonymous_id),
            "c": _ADD_CREATED(state["c"], occurred, order),
            "u": _ADD_UPDATED(state["u"], occurred, order),
        }

    def merge(self, a: Record, b: Record) -> Record:
        """The state of the events of both records (disjoint sets of events)."""
        aggregates = dict(a["p"])
        for name, theirs in b["p"].items():
            ours = aggregates.get(name)
            if name not in self.properties:
                continue  # a property no longer declared
            aggregates[name] = (
                theirs if ours is None else self.properties[name].aggregate.merge(ours, theirs)
            )
        return {
            **a,
            "p": aggregates,
            "a": sorted(set(a["a"]) | set(b["a"])),
            "c": _CREATED.merge(a["c"], b["c"]),
            "u": _UPDATED.merge(a["u"], b["u"]),
        }

    def document(self, record_id: str, state: Record, groups: list[str]) -> dict[str, Any]:
        """The profile/records document of a state."""
        doc: dict[str, Any] = {"id": record_id}
        if not record_id.startswith(ANON):
            doc["userId"] = record_id
        doc["anonymousIds"] = state["a"]
        properties: dict[str, Any] = {}
        invalid: dict[str, str] = {}
        stored = state["p"]
        for name, read, nothing in self._readers:
            part = stored.get(name)
            value, reason = read(part) if part else nothing
            if value is not None:
                properties[name] = value
            if reason is not None:
                invalid[name] = reason
        doc["properties"] = properties
        if invalid:
            doc["invalid"] = invalid
        doc["groups"] = groups
        doc["createdAt"] = _CREATED.result(state["c"])
        doc["updatedAt"] = _UPDATED.result(state["u"])
        return doc
