"""What one product event contributes to one property (SPEC 8.3), and adding it to the state.

An `EventProperty` is compiled once per event-sourced property. For an event (decoded JSON) it
gives the values to add to the property's aggregate state:
- nothing when the event's type is not among `events`, or a `where` condition fails;
- for `count`, one contribution (None) per event taken;
- otherwise the value at `path` normalised by the type, or an `Invalid` with the reason.
A path that is absent, or holds JSON null, contributes nothing: null is "no value" rather than a
value of the wrong type (aggregates cannot un-set a value anyway). For an array property
(`distinct`), a list at the path contributes each of its elements (nulls skipped); a list for
any other property does not fit its type.

An `ImportProperty` (`from: {import, column}`, SPEC 10) takes its value from rows of an import,
not from events: `Aggregate("latest", type)` over the rows' column, ordered like events. The
import reader gives rows increasing occurredAt in watermark order, so the latest is the row with
the greatest watermark. A NULL (or absent) column contributes nothing, as a JSON null does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .aggregates import Aggregate, Order, State
from .compiled import adder
from .model import EventSource, ImportSource, ProfilesSpec, PropertySpec
from .operators import Condition, compile_condition
from .values import Invalid, Value, normalise, normaliser

Tokens = tuple[str, ...]
Taker = Callable[[State, Mapping[str, Any], Order, Any], State]
"""`EventProperty.taker()`: (state, event, order, the event's normalised occurredAt) -> state."""


def parse_pointer(pointer: str) -> Tokens:
    """'/data/a~1b' as ('data', 'a/b') (RFC 6901; the spec checker has checked the syntax)."""
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:])


def read(document: Any, tokens: Tokens) -> Any:
    """The value at `tokens`, or None if there is none."""
    value = document
    for token in tokens:
        if isinstance(value, dict):
            value = value.get(token)
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return None
    return value


def reader_of(tokens: Tokens) -> Callable[[Any], Any]:
    """`read` at `tokens`, with the common paths of one or two names spelled out."""
    if len(tokens) == 1:
        (only,) = tokens
        return lambda doc: doc.get(only) if type(doc) is dict else read(doc, tokens)
    if len(tokens) == 2:
        first, second = tokens

        def read_two(doc: Any) -> Any:
            if type(doc) is dict:
                inner = doc.get(first)
                if type(inner) is dict:
                    return inner.get(second)
            return read(doc, tokens)

        return read_two
    return lambda doc: read(doc, tokens)


@dataclass(frozen=True)
class EventProperty:
    """A compiled event-sourced property."""

    name: str
    type: str
    array: bool
    aggregate: Aggregate
    events: frozenset[str] | None
    path: Tokens | None
    where: tuple[tuple[Tokens, Condition], ...]

    def contributions(self, event: Mapping[str, Any]) -> list[Value | Invalid | None]:
        """What `event` adds to this property: see the module docstring."""
        if self.events is not None and event.get("type") not in self.events:
            return []
        if not all(condition.holds(read(event, tokens)) for tokens, condition in self.where):
            return []
        if self.path is None:
            return [None]
        raw = read(event, self.path)
        if raw is None:
            return []
        if isinstance(raw, list) and self.array:
            return [normalise(self.type, element) for element in raw if element is not None]
        return [normalise(self.type, raw)]

    def add(self, state: State, event: Mapping[str, Any], order: Order) -> State:
        """`state` with `event`'s contributions added (the same state if it has none)."""
        for value in self.contributions(event):
            state = self.aggregate.add(state, value, order)
        return state

    def taker(self) -> Taker:
        """`add` compiled, for events of a type the property takes (not checked again). The
        event's occurredAt, normalised once by the caller, serves the path /occurredAt."""
        add = adder(self.aggregate)
        where = tuple((reader_of(tokens), condition.holds) for tokens, condition in self.where)
        if self.path is None:

            def take_each(state: State, event: Mapping[str, Any], order: Order, _: Any) -> State:
                for read_at, holds in where:
                    if not holds(read_at(event)):
                        return state
                return add(state, None, order)

            return take_each
        read_path, norm, array = reader_of(self.path), normaliser(self.type), self.array
        occurred_at = self.path == ("occurredAt",) and self.type == "date"

        def take(state: State, event: Mapping[str, Any], order: Order, occurred: Any) -> State:
            for read_at, holds in where:
                if not holds(read_at(event)):
                    return state
            if occurred_at and type(event.get("occurredAt")) is str:
                return add(state, occurred, order)
            raw = read_path(event)
            if raw is None:
                return state
            if array and isinstance(raw, list):
                for element in raw:
                    if element is not None:
                        state = add(state, norm(element), order)
                return state
            return add(state, norm(raw), order)

        return take


@dataclass(frozen=True)
class ImportProperty:
    """A compiled import-sourced property: rows `{"values": {column: value}}` add to it."""

    name: str
    type: str
    aggregate: Aggregate
    source: str
    """The import's name."""
    column: str
    array: bool = False
    events: frozenset[str] = frozenset()
    """No event type: rows are added with `taker`, events never (`Records.taking`)."""

    def taker(self) -> Taker:
        """Adds a row's value of `column` (normalised by the type) to the state."""
        add, norm, column = adder(self.aggregate), normaliser(self.type), self.column

        def take(state: State, row: Mapping[str, Any], order: Order, _: Any) -> State:
            raw = row["values"].get(column)
            return state if raw is None else add(state, norm(raw), order)

        return take


Property = EventProperty | ImportProperty


def compile_import_property(spec: PropertySpec) -> ImportProperty:
    """An import-sourced property of a checked spec."""
    source = spec.source
    if not isinstance(source, ImportSource):
        raise ValueError(f"property '{spec.name}' comes from events, not from an import")
    return ImportProperty(
        spec.name, spec.type, Aggregate("latest", spec.type), source.name, source.column
    )


def compile_property(spec: PropertySpec) -> EventProperty:
    """An event-sourced property of a checked spec."""
    source = spec.source
    if not isinstance(source, EventSource):
        raise ValueError(f"property '{spec.name}' comes from an import, not from events")
    where = tuple(
        (parse_pointer(c.path), compile_condition(c.op, c.value, c.type)) for c in source.where
    )
    return EventProperty(
        name=spec.name,
        type=spec.type,
        array=spec.array,
        aggregate=Aggregate(source.aggregate, spec.type),
        events=None if source.events is None else frozenset(source.events),
        path=None if source.path is None else parse_pointer(source.path),
        where=where,
    )


def compile_properties(spec: ProfilesSpec) -> dict[str, EventProperty]:
    """Every event-sourced property of `spec`, by name."""
    return {
        name: compile_property(prop)
        for name, prop in spec.properties.items()
        if isinstance(prop.source, EventSource)
    }


def compile_all(spec: ProfilesSpec) -> dict[str, Property]:
    """Every property of `spec`, by name, in declaration order."""
    return {
        name: compile_property(prop)
        if isinstance(prop.source, EventSource)
        else compile_import_property(prop)
        for name, prop in spec.properties.items()
    }
