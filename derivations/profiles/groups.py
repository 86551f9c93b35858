"""Calculated groups (SPEC 8.4): a group's rules combined by `match`, and when that can change.

`compile_groups(spec)` compiles every calculated group once (manual groups have no rules: their
members come from profile/group-members, which the runtime keeps). A group reads a record's
`properties` mapping (name -> stored value, absent when the record has none):
- `holds(properties, now)`: all (or any) of its rules hold.
- `next_flip(properties, now)`: the earliest instant after `now` at which `holds` changes with no
  new event, or None. It is a change of the group, not of one rule: a rule flipping while another
  keeps the outcome (`match: any`) is stepped over, so a timer set to it always sees a change.
- `reads`: the properties its rules read, so a change to a record re-evaluates only the groups
  that read a changed property.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .instants import Instant
from .model import GroupSpec, ProfilesSpec, PropertySpec
from .operators import Rule, compile_rule


@dataclass(frozen=True)
class Group:
    """One compiled calculated group."""

    name: str
    match: str
    rules: tuple[tuple[str, Rule], ...]
    reads: frozenset[str] = field(init=False)
    """Names of the properties the rules read."""
    relative: bool = field(init=False)
    """Whether the clock alone can change the outcome (a timer is needed)."""
    _any: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reads", frozenset(name for name, _ in self.rules))
        object.__setattr__(self, "relative", any(rule.relative for _, rule in self.rules))
        object.__setattr__(self, "_any", self.match == "any")

    def holds(self, properties: Mapping[str, Any], now: Instant) -> bool:
        """Whether a record with these property values is a member at `now`."""
        get = properties.get
        # Loops, not any()/all() over a generator: this runs for every group a change
        # evaluates, and the generator costs more than the rules (measured, bench.groups).
        if self._any:
            for name, rule in self.rules:  # noqa: SIM110
                if rule.holds(get(name), now):
                    return True
            return False
        for name, rule in self.rules:  # noqa: SIM110
            if not rule.holds(get(name), now):
                return False
        return True

    def next_flip(self, properties: Mapping[str, Any], now: Instant) -> Instant | None:
        """The earliest instant after `now` at which membership changes with no new event."""
        if len(self.rules) == 1:  # the group's outcome is its rule's
            name, rule = self.rules[0]
            return rule.next_flip(properties.get(name), now)
        relative = [(name, rule) for name, rule in self.rules if rule.relative]
        if not relative:
            return None
        before = self.holds(properties, now)
        at = now
        while True:  # each step moves `at` forward to the next rule flip; there are finitely many
            flips = [
                flip
                for name, rule in relative
                if (flip := rule.next_flip(properties.get(name), at)) is not None
            ]
            if not flips:
                return None
            at = min(flips)
            if self.holds(properties, at) != before:
                return at


def compile_group(group: GroupSpec, properties: Mapping[str, PropertySpec]) -> Group:
    """A calculated group of a checked spec (see `spec.parse_profiles`)."""
    if group.manual:
        raise ValueError(f"group '{group.name}' is manual: it has no rules to compile")
    rules = tuple(
        (
            rule.property,
            compile_rule(
                properties[rule.property].type,
                rule.op,
                rule.value,
                array=properties[rule.property].array,
            ),
        )
        for rule in group.rules
    )
    return Group(group.name, group.match, rules)


def compile_groups(spec: ProfilesSpec) -> dict[str, Group]:
    """Every calculated group of `spec`, by name."""
    return {
        name: compile_group(group, spec.properties)
        for name, group in spec.groups.items()
        if not group.manual
    }
