"""What the catalog's `profiles:` section means, as frozen dataclasses (built by `spec`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .operators import NO_VALUE

DEFAULT_COLLECTIONS = {
    "events": "profile/events",
    "groupMembers": "profile/group-members",
    "records": "profile/records",
}


@dataclass(frozen=True)
class WhereSpec:
    """One `where` condition; `value` is NO_VALUE for exists / notExists."""

    path: str
    op: str
    value: Any = NO_VALUE
    type: str | None = None


@dataclass(frozen=True)
class EventSource:
    """`from: {events, path, aggregate, where}`; `events` None means every type (`"*"`)."""

    events: tuple[str, ...] | None
    aggregate: str
    path: str | None = None
    where: tuple[WhereSpec, ...] = ()


@dataclass(frozen=True)
class ImportSource:
    """`from: {import, column}` (SPEC 10)."""

    name: str
    column: str


@dataclass(frozen=True)
class PropertySpec:
    name: str
    type: str
    source: EventSource | ImportSource
    array: bool = False
    unique: bool = False


@dataclass(frozen=True)
class RuleSpec:
    """One group rule as written; `value` is NO_VALUE for exists / notExists."""

    property: str
    op: str
    value: Any = NO_VALUE


@dataclass(frozen=True)
class GroupSpec:
    name: str
    match: str = "all"
    rules: tuple[RuleSpec, ...] = ()
    manual: bool = False


@dataclass(frozen=True)
class ProfilesSpec:
    events: str = DEFAULT_COLLECTIONS["events"]
    group_members: str = DEFAULT_COLLECTIONS["groupMembers"]
    records: str = DEFAULT_COLLECTIONS["records"]
    group_vendor: int | None = None
    properties: Mapping[str, PropertySpec] = field(default_factory=dict)
    groups: Mapping[str, GroupSpec] = field(default_factory=dict)

    @property
    def unique(self) -> tuple[str, ...]:
        """The names of the `unique: true` properties, in declaration order."""
        return tuple(name for name, prop in self.properties.items() if prop.unique)
