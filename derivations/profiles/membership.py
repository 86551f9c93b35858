"""A record's memberships in calculated groups (SPEC 8.4), kept as state: evaluated when the
record changes and when a relative rule's boundary passes on the clock.

The state is three JSON mappings the runtime keeps in the record's state:
- `"g"`: `{group: n}`, how many times the record's membership in the group changed; odd means a
  member. `n` numbers the change in the id of the segment event it becomes, so a replayed change
  has the id of the first (and segment/events drops it as a redelivery).
- `"t"`: `{group: [seconds, "fraction"]}`, for each relative group, the next instant its outcome
  flips with no new event (`Group.next_flip`); absent when it never will. The runtime keeps a
  timer at the earliest of them.
- `"M"`: `{group: [member, order]}`, the record's manual memberships (profile/group-members):
  for each group the add or remove with the greatest order (occurredAt, then arrival), so two
  records' memberships merge like their properties do, whatever order they arrived in. Unlike
  the other two it moves with the record when it merges into another (a membership follows its
  person); `"g"` and `"t"` belong to the record id and are rebuilt for the survivor.

Which groups are evaluated on a change: those that read a property whose state changed, manual
groups whose membership changed, those
whose flip is due (a timer that has not fired yet when the record changes is folded in, so no
flip is ever skipped), and every group for a record merged into. A record seen for the first
time changed from the record with no value: it evaluates the groups reading the properties it
has and joins, unevaluated, those that hold for no value. Groups whose properties did not change
keep their memberships: their outcome can only change on the clock, and the timers cover that.

On the clock (`fire`), each group whose flip is due is evaluated at the flip's instant, not at
the time the timer happened to run, and again at its next flip if that is due too: a worker that
was down through several boundaries reports each change at its own instant, and a replayed
firing produces the same changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .groups import Group
from .instants import Instant

GroupState = dict[str, Any]
"""`{"g": {group: n}, "t": {group: [seconds, fraction]}}` (module docstring)."""


@dataclass(frozen=True)
class Change:
    """One change of a record's membership in one group."""

    group: str
    joined: bool
    number: int
    """The group's change count after this change (odd: a join)."""
    at: Instant


class Memberships:
    """The calculated groups of one catalog, indexed by the properties they read."""

    def __init__(self, groups: Mapping[str, Group], manual: Iterable[str] = ()) -> None:
        self.groups = dict(groups)
        self.manual = frozenset(manual)
        readers: dict[str, list[str]] = {}
        for name, group in self.groups.items():
            for prop in sorted(group.reads):
                readers.setdefault(prop, []).append(name)
        self.readers = {prop: tuple(names) for prop, names in readers.items()}
        """For each property, the groups whose rules read it."""
        self.names = (*self.groups, *sorted(self.manual))
        self.hold_empty = frozenset(
            name for name, group in self.groups.items() if group.holds({}, Instant(0))
        )
        """The groups a record with no value at all is in (`Rule.holds` of no value does not
        depend on the time)."""
        self.evaluated = 0
        """Groups evaluated so far (a figure: how much work changes cost)."""

    def affected(self, changed: Iterable[str]) -> set[str]:
        """The groups that read any of the `changed` properties."""
        out: set[str] = set()
        readers = self.readers
        for prop in changed:
            found = readers.get(prop)
            if found:
                out.update(found)
        return out

    def evaluate(
        self,
        state: GroupState,
        properties: Mapping[str, Any],
        names: Iterable[str],
        now: Instant,
    ) -> tuple[GroupState, list[Change]]:
        """Evaluate groups `names` at `now` for a record showing `properties`: the new state and
        the changes (joins and leaves) at `now`."""
        counts: dict[str, int] = dict(state.get("g", ()))
        flips: dict[str, list[Any]] = dict(state.get("t", ()))
        manual = state.get("M") or {}
        changes: list[Change] = []
        for name in names:
            group = self.groups.get(name)
            if group is not None:
                self.evaluated += 1
                member = group.holds(properties, now)
            elif name in self.manual:
                member = name in manual and manual[name][0]
            else:  # a group no longer declared: no timer for it
                flips.pop(name, None)
                continue
            n = counts.get(name, 0)
            if member != (n % 2 == 1):
                n += 1
                counts[name] = n
                changes.append(Change(name, member, n, now))
            if group is not None and group.relative:
                flip = group.next_flip(properties, now)
                if flip is None:
                    flips.pop(name, None)
                else:
                    flips[name] = [flip.seconds, flip.fraction]
        return {"g": counts, "t": flips}, changes

    def on_change(
        self,
        state: GroupState | None,
        properties: Mapping[str, Any],
        changed: Iterable[str] | None,
        now: Instant,
        manual: Mapping[str, Any] | None = None,
    ) -> tuple[GroupState, list[Change]]:
        """A changed record: evaluate what `changed` properties touch (None: every group, for a
        merged record), the manual groups whose entry in `state` differs from `manual` (the
        record's manual memberships before), and every group whose flip is due by `now`.

        A new record (no `"g"` in `state`, `manual` None) changed from the record with no value
        at all: the groups reading the properties it has are evaluated, and the groups that
        hold for no value (`notExists`, negatives on arrays) it joins without evaluating them;
        the rest it is not in, as that record is not."""
        if state is None:
            state = {}
        if changed is None:
            names: Iterable[str] = self.names
        else:
            touched = self.affected(changed)
            if manual is None and "g" not in state:
                touched.update(self.hold_empty)
            now_manual, was = state.get("M") or {}, manual or {}
            if now_manual is not was:
                touched.update(
                    g for g in now_manual.keys() | was.keys() if now_manual.get(g) != was.get(g)
                )
            touched.update(name for name, at in state.get("t", {}).items() if Instant(*at) <= now)
            names = [name for name in self.names if name in touched]  # catalog order
        return self.evaluate(state, properties, names, now)

    def fire(
        self, state: GroupState, properties: Mapping[str, Any], now: Instant
    ) -> tuple[GroupState, list[Change]]:
        """Every flip due by `now`, each evaluated at its own instant (module docstring)."""
        changes: list[Change] = []
        while True:
            at = due(state)
            if at is None or at > now:
                return state, changes
            names = [name for name, flip in state["t"].items() if Instant(*flip) == at]
            state, more = self.evaluate(state, properties, names, at)
            changes += more

    def members(self, state: GroupState | None) -> list[str]:
        """The declared groups the record is in, sorted by name."""
        if not state:
            return []
        groups, manual = self.groups, self.manual
        return sorted(
            name
            for name, n in state.get("g", {}).items()
            if n % 2 and (name in groups or name in manual)
        )

    def leave_all(self, state: GroupState | None, now: Instant) -> list[Change]:
        """The changes of a record that is deleted (merged away): it leaves every group."""
        if not state:
            return []
        return [
            Change(name, False, n + 1, now) for name, n in state.get("g", {}).items() if n % 2 == 1
        ]


def due(state: GroupState | None) -> Instant | None:
    """The earliest flip the record waits for, or None."""
    flips = state.get("t") if state else None
    if not flips:
        return None
    return min(Instant(*flip) for flip in flips.values())


def set_manual(
    manual: Mapping[str, Any] | None, group: str, member: bool, order: list[Any]
) -> dict[str, Any]:
    """Manual memberships with one add (`member`) or remove applied: it wins if its order is
    greater than that of the group's entry."""
    out = dict(manual or {})
    entry = out.get(group)
    if entry is None or entry[1] < order:
        out[group] = [member, order]
    return out


def merge_manual(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> dict[str, Any]:
    """The manual memberships of two records merged: per group, the entry of greater order."""
    out = dict(a or {})
    for group, (member, order) in (b or {}).items():
        entry = out.get(group)
        if entry is None or entry[1] < order:
            out[group] = [member, order]
    return out
