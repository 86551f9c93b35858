"""Why a record is or is not in a group (SPEC 8.4 "Why"), for `segflow explain RECORD GROUP`.

`explain(spec, group, record, events, now)` takes the record's current profile/records document,
the product events that went to it (`belongs` says which) with their record timestamps, and the
current time; it returns an `Explanation`, and `render` turns that into plain text lines. No I/O.

Decisions where the spec is silent:
- The value a rule saw is the document's, not one rebuilt from events: that is what the runtime
  evaluates, after uniqueness (a value lost to an older record is absent).
- "The events that set the value": for `latest`/`earliest` the event whose value won, by the
  order the records stage uses (`make_order(occurredAt, [arrival ms, event id])`); for `min`/`max`
  the first event (by that order) that gave the winning value, and how many more gave it too; for
  `count`, `sum`, `avg` every contributing event, and for `distinct` every event that gave a
  value still in the list. At most `MAX_EVENTS`, newest first, and how many more.
- The value is rebuilt from the events given, exactly as the aggregate does. When it differs from
  the document's, the explanation says so and names no "set by" event: the record was built from
  other events than those given (one redelivered after the dedup window counts again, events
  read may not be applied yet), and guessing which would be inventing.
- Events with the same id count once, the first to arrive (a redelivery changes nothing); an
  event without occurredAt gets its record timestamp, as the identity stage gives it.
- A manual group has no rules: its members come from profile/group-members, so whether the
  record is in it is what its document's `groups` says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import orjson

from pipeline.errors import SegflowError

from .aggregates import Order, _earlier, _later
from .extract import EventProperty, compile_property
from .groups import compile_group
from .identity import ANON, user_id_of
from .instants import Instant, format_instant, from_epoch_ns
from .model import EventSource, ProfilesSpec, PropertySpec
from .operators import NO_VALUE, RELATIVE_OPS
from .records import order_of
from .uniqueness import duplicate_reason
from .values import Invalid, identity_key, show
from .wording import did_you_mean, one_of

MAX_EVENTS = 20
"""The most events listed for one property; the rest are counted."""

_ONE_WINNER = ("latest", "earliest", "min", "max")


def belongs(event: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """Whether `event` went to `record` (a profile/records document), by SPEC 8.2: an event with
    userId U goes to record U (an integer U is its decimal string), even when its anonymousId is
    linked to another person (the merge guard); an event with only anonymousId A goes to the
    record whose `anonymousIds` hold A, which is `anon:A` until A links to a person."""
    record_id: str = record["id"]
    user = user_id_of(cast(dict[str, Any], event))
    if user is not None:
        return user == record_id
    anonymous = event.get("anonymousId")
    if not isinstance(anonymous, str):
        return False
    return record_id == ANON + anonymous or anonymous in record.get("anonymousIds", ())


@dataclass(frozen=True)
class EventRef:
    """One event as an explanation names it, with the values it gave the property."""

    id: str
    type: str
    occurred_at: str
    values: tuple[Any, ...] = ()
    """Empty for `count`, which takes no value."""


@dataclass(frozen=True)
class Source:
    """Where one property's value came from."""

    property: str
    aggregate: str | None
    """None for a property from an import (`origin` says which)."""
    rebuilt: Any = None
    """The value the events given make (None: no value)."""
    agrees: bool = True
    """Whether `rebuilt` is the document's value (or the value an older record holds)."""
    events: tuple[EventRef, ...] = ()
    """The events that set the value, newest first, at most MAX_EVENTS."""
    total: int = 0
    """How many events set it (`events` may show fewer)."""
    alike: int = 0
    """For min / max: how many more events gave the same value."""
    held_by: str | None = None
    """The older record holding the value, when the record lost it to `unique: true`."""
    origin: str | None = None
    """Where a property that events do not set comes from."""


@dataclass(frozen=True)
class RuleOutcome:
    """One rule of a calculated group on the record."""

    property: str
    op: str
    value: Any
    """The rule's value as written (NO_VALUE for exists / notExists)."""
    kind: str
    """The property's type."""
    seen: Any
    """The document's value (None when it has none)."""
    invalid: str | None
    held: bool
    flip: Instant | None
    """When the outcome changes with no new event (relative rules only)."""
    source: Source


@dataclass(frozen=True)
class Explanation:
    record: str
    group: str
    now: Instant
    manual: bool
    listed: bool
    """Whether the document's `groups` hold the group (the runtime's answer)."""
    match: str = "all"
    member: bool = False
    """What the rules say at `now` (for a manual group: `listed`)."""
    rules: tuple[RuleOutcome, ...] = ()
    relative: bool = False
    flip: Instant | None = None
    """When membership changes with no new event (a relative group)."""


def unknown_group(spec: ProfilesSpec, name: str) -> SegflowError:
    """The error for a group the catalog does not declare, listing those it does."""
    if not spec.groups:
        return SegflowError(f"unknown group '{name}': the catalog declares no groups")
    return SegflowError(
        f"unknown group '{name}'{did_you_mean(name, spec.groups)}; the catalog's groups: "
        f"{one_of(sorted(spec.groups))}"
    )


def explain(
    spec: ProfilesSpec,
    group: str,
    record: Mapping[str, Any],
    events: Iterable[tuple[Mapping[str, Any], int]],
    now: Instant,
) -> Explanation:
    """Why `record` (a profile/records document) is or is not in `group` at `now`; `events` are
    the record's product events with their record timestamps (ms), in arrival order."""
    group_spec = spec.groups.get(group)
    if group_spec is None:
        raise unknown_group(spec, group)
    listed = group in record.get("groups", ())
    if group_spec.manual:
        return Explanation(record["id"], group, now, True, listed, member=listed)
    compiled = compile_group(group_spec, spec.properties)
    ordered = _ordered(events)
    properties: Mapping[str, Any] = record.get("properties", {})
    invalid: Mapping[str, str] = record.get("invalid", {})
    sources: dict[str, Source] = {}
    outcomes = []
    for rule_spec, (name, rule) in zip(group_spec.rules, compiled.rules, strict=True):
        if name not in sources:
            sources[name] = _source(spec.properties[name], record, ordered)
        seen = properties.get(name)
        outcomes.append(
            RuleOutcome(
                name,
                rule_spec.op,
                rule_spec.value,
                spec.properties[name].type,
                seen,
                invalid.get(name),
                rule.holds(seen, now),
                rule.next_flip(seen, now),
                sources[name],
            )
        )
    return Explanation(
        record["id"],
        group,
        now,
        False,
        listed,
        match=compiled.match,
        member=compiled.holds(properties, now),
        rules=tuple(outcomes),
        relative=compiled.relative,
        flip=compiled.next_flip(properties, now),
    )


def _ordered(events: Iterable[tuple[Mapping[str, Any], int]]) -> list[tuple[dict[str, Any], Order]]:
    """Each event once (the first to arrive), with occurredAt set, and its order."""
    seen: set[Any] = set()
    out = []
    arrivals = sorted(enumerate(events), key=lambda item: (item[1][1], item[0]))
    for _, (event, arrival_ms) in arrivals:
        if event.get("id") in seen:
            continue
        seen.add(event.get("id"))
        filled = dict(event)
        if "occurredAt" not in filled:
            filled["occurredAt"] = format_instant(from_epoch_ns(arrival_ms * 10**6))
        out.append((filled, order_of(filled, arrival_ms)))
    return out


@dataclass(frozen=True)
class _Taken:
    event: Mapping[str, Any]
    order: Order
    values: list[Any]


def _source(
    prop: PropertySpec, record: Mapping[str, Any], events: list[tuple[dict[str, Any], Order]]
) -> Source:
    """What set `prop`'s value on `record`, rebuilt from `events` (module docstring)."""
    if not isinstance(prop.source, EventSource):
        origin = f"comes from import '{prop.source.name}' (column {prop.source.column})"
        return Source(prop.name, None, record.get("properties", {}).get(prop.name), origin=origin)
    compiled: EventProperty = compile_property(prop)
    aggregate = compiled.aggregate
    state = aggregate.initial()
    taken: list[_Taken] = []
    for event, order in events:
        values = compiled.contributions(event)
        for value in values:
            state = aggregate.add(state, value, order)
        valid = [value for value in values if not isinstance(value, Invalid)]
        if valid:
            taken.append(_Taken(event, order, valid))
    rebuilt = aggregate.result(state)
    shown = record.get("properties", {}).get(prop.name)
    held_by = _lost_to(record, prop.name) if prop.unique and shown is None else None
    # A value lost to an older record cannot be compared: the record shows none.
    lost = held_by is not None
    if (lost and rebuilt is None) or (not lost and not _same(shown, rebuilt)):
        return Source(prop.name, aggregate.kind, rebuilt, agrees=False, total=len(taken))
    kind, alike = aggregate.kind, 0
    chosen = taken
    if kind in ("latest", "earliest"):
        beats = _later if kind == "latest" else _earlier
        best: _Taken | None = None
        for item in taken:
            if best is None or beats(item.order, best.order):
                best = item
        chosen = [] if best is None else [best]
    elif kind in ("min", "max"):
        same = sorted((item for item in taken if rebuilt in item.values), key=lambda t: t.order)
        chosen, alike = same[:1], max(0, len(same) - 1)
    elif kind == "distinct":
        key = identity_key(prop.type)
        kept = {key(value) for value in rebuilt or ()}
        chosen = [item for item in taken if any(key(v) in kept for v in item.values)]
    newest = sorted(chosen, key=lambda item: item.order, reverse=True)
    bare = kind == "count" or compiled.path == ("occurredAt",)  # no value beyond the event's
    refs = tuple(_ref(item, bare) for item in newest[:MAX_EVENTS])
    return Source(prop.name, kind, rebuilt, True, refs, len(chosen), alike, held_by)


def _same(shown: Any, rebuilt: Any) -> bool:
    """Equal as JSON (so 1 and 1.0, or 1 and true, are not the same value)."""
    return orjson.dumps(shown) == orjson.dumps(rebuilt)


def _lost_to(record: Mapping[str, Any], name: str) -> str | None:
    """The record holding `name`'s value when `record` lost it to uniqueness, else None."""
    reason = record.get("invalid", {}).get(name)
    prefix = duplicate_reason("")
    return reason[len(prefix) :] if isinstance(reason, str) and reason.startswith(prefix) else None


def _ref(item: _Taken, bare: bool) -> EventRef:
    event = item.event
    values = () if bare else tuple(item.values)
    return EventRef(str(event.get("id")), str(event.get("type")), event["occurredAt"], values)


# -- text -----------------------------------------------------------------------------------------

_SHOWN_ELEMENTS = 10


def _show(kind: str, value: Any) -> str:
    """A value as the explanation writes it: dates bare, other strings quoted, lists shortened."""
    if isinstance(value, list):
        shown = [_show(kind, element) for element in value[:_SHOWN_ELEMENTS]]
        more = len(value) - len(shown)
        return "[" + ", ".join(shown) + (f", ... {more} more" if more else "") + "]"
    if kind == "date" and isinstance(value, str):
        return value
    return show(value)


def _rule_text(rule: RuleOutcome) -> str:
    if rule.value is NO_VALUE:
        return f"{rule.property} {rule.op}"
    if rule.op in RELATIVE_OPS:
        return f"{rule.property} {rule.op} {rule.value}"
    return f"{rule.property} {rule.op} {_show(rule.kind, rule.value)}"


def _seen_text(rule: RuleOutcome) -> str:
    if rule.seen is None:
        text = f"{rule.property} has no value"
    elif rule.seen == []:
        text = f"{rule.property} has no values"
    else:
        text = f"{rule.property} is {_show(rule.kind, rule.seen)}"
    return text + (f" (invalid: {rule.invalid})" if rule.invalid else "")


def _membership(member: bool) -> str:
    return "member" if member else "not a member"


def _summary(explanation: Explanation) -> str:
    total = len(explanation.rules)
    held = sum(rule.held for rule in explanation.rules)
    rules = "rule" if total == 1 else "rules"
    if held == total:
        return f"all {total} {rules} hold" if total > 1 else "its rule holds"
    if held == 0:
        return f"none of {total} {rules} holds" if total > 1 else "its rule does not hold"
    return f"{held} of {total} {rules} hold"


def _event_line(ref: EventRef, kind: str) -> str:
    line = f"{ref.id} {ref.type} {ref.occurred_at}"
    if ref.values:
        line += ": " + ", ".join(_show(kind, value) for value in ref.values)
    return line


def _source_lines(source: Source, kind: str, record: str, shown: Any) -> list[str]:
    pad = "    "
    if source.origin is not None:
        return [f"{pad}{source.origin}"]
    if not source.agrees:
        rebuilt = "no value" if source.rebuilt is None else _show(kind, source.rebuilt)
        theirs = "no value" if shown is None else _show(kind, shown)
        return [
            f"{pad}not rebuilt: the {source.total} event(s) read that it takes give {rebuilt}"
            f" ({source.aggregate}), but the record shows {theirs}: record {record} was"
            " built from other events (redelivered after the dedup window, not read here, or"
            " not applied yet), so no event is named"
        ]
    lines = []
    if source.aggregate in ("count", "sum") and source.total == 0:
        return [f"{pad}no event set it ({source.aggregate} of no events)"]
    if source.total == 0:
        return [f"{pad}no event set it"]
    if source.aggregate in _ONE_WINNER:
        (ref,) = source.events
        more = f"; {source.alike} more event(s) gave the same value" if source.alike else ""
        lines.append(f"{pad}set by event {_event_line(ref, kind)} ({source.aggregate}{more})")
    else:
        noun = "event" if source.total == 1 else "events"
        lines.append(f"{pad}set by {source.total} {noun} ({source.aggregate}), newest first:")
        lines += [f"{pad}  {_event_line(ref, kind)}" for ref in source.events]
        if source.total > len(source.events):
            lines.append(f"{pad}  ... and {source.total - len(source.events)} more")
    return lines


def _flip_text(held: bool, at: Instant | None) -> str:
    if at is None:
        return ""
    return f"; flips to {'not held' if held else 'held'} at {format_instant(at)}"


def render(explanation: Explanation) -> list[str]:
    """The explanation as plain text lines (the output of `segflow explain`)."""
    e = explanation
    now = format_instant(e.now)
    head = f"record {e.record} in group {e.group}"
    if e.manual:
        inside = "its groups list it" if e.listed else "its groups do not list it"
        return [
            f"{head}: manual (members added by hand): {_membership(e.member)} — {inside}",
            f"  read at {now}",
        ]
    lines = [f"{head} (match: {e.match}): {_membership(e.member)} — {_summary(e)}"]
    explained: set[str] = set()
    for rule in e.rules:
        state = "held" if rule.held else "not held"
        lines.append(
            f"  {_rule_text(rule)}: {state} — {_seen_text(rule)}{_flip_text(rule.held, rule.flip)}"
        )
        if rule.property in explained:
            lines.append("    set by: as above")
            continue
        explained.add(rule.property)
        if rule.source.held_by is not None and rule.source.agrees:
            lines.append(
                f"    its events give {_show(rule.kind, rule.source.rebuilt)}, which record"
                f" {rule.source.held_by} holds (unique: the older record keeps the value)"
            )
        lines += _source_lines(rule.source, rule.kind, e.record, rule.seen)
    if e.relative:
        if e.flip is None:
            lines.append("  the group's next change with no new event: none")
        else:
            change = "leaves" if e.member else "joins"
            lines.append(
                f"  the group's next change with no new event: {format_instant(e.flip)} ({change})"
            )
    if e.listed == e.member:
        lines.append(f"  evaluated at {now}; the record's groups agree ({_membership(e.listed)})")
    else:
        why = "a timer that has not fired, or events" if e.relative else "events"
        lines.append(
            f"  evaluated at {now}; the record's groups say {_membership(e.listed)}, the rules now"
            f" say {_membership(e.member)} (the runtime has not applied this change yet: {why}"
            " not processed yet)"
        )
    return lines
