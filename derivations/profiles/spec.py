"""The catalog's `profiles:` section (SPEC 8.3, 8.4) parsed into frozen dataclasses.

`parse_profiles(raw)` returns the spec and every problem found, as (JSON pointer from the document
root, message); the spec is None when there is any problem. Like the catalog loader it never stops
at the first problem, and it does not report consequences of one it has reported (a rule on a
property whose type is unknown is not checked further).

Decisions where the spec is silent:
- `events`, `groupMembers`, `records` default to profile/events, profile/group-members and
  profile/records. `groupVendor` is required once there are groups: it decides which segments
  the groups share `segment/*` with, which a default would choose silently.
- Property names: a letter, then letters, digits, `_` or `-`, at most 64 characters (they are
  keys of `properties` in Postgres jsonb and of rules).
- `aggregate` is required. `count` takes no path (counting events that have a value is
  `where: [{path: ..., op: exists}]`); every other aggregate needs one.
- `unique` fits string, email, url, phoneNumber and integer properties that are not arrays.
- Paths: `/data/...` (at least one token, none empty), `/occurredAt` (for date or string
  properties), `/type` (string), `/userId` (string or integer).
- `where` conditions are `{path, op, value, type?}`; see operators.compile_condition for how the
  type is inferred without `type`, and why relative operators are refused.
- A manual group has no `rules`; `match` is `all` by default. A group name is the segment name
  it appears under in segment/events, so it has that name's limits (1 to 32 characters).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from .model import DEFAULT_COLLECTIONS, GroupSpec, ProfilesSpec, PropertySpec, RuleSpec
from .operators import NO_VALUE, RuleError, compile_rule, operators_for
from .property_checks import EventPaths, Problem, PropertyChecker
from .wording import did_you_mean, join, kind_of, one_of, unknown

VENDOR_MAX = 2_147_483_647
_TOP_KEYS = ("events", "groupMembers", "records", "groupVendor", "properties", "groups")
_GROUP_KEYS = ("match", "rules", "manual")
_RULE_KEYS = ("property", "op", "value")


def parse_profiles(
    raw: Any,
    *,
    pointer: str = "/profiles",
    event_paths: EventPaths | None = None,
    collections: Collection[str] | None = None,
) -> tuple[ProfilesSpec | None, list[Problem]]:
    """The `profiles:` section `raw` (decoded YAML) at `pointer`, and every problem in it.

    `event_paths` lets paths be checked against the events schema; `collections` (the declared
    collection names) lets `events`, `groupMembers` and `records` be checked.
    """
    spec, problems = parse_valid_part(
        raw, pointer=pointer, event_paths=event_paths, collections=collections
    )
    return (None if problems else spec), problems


def parse_valid_part(
    raw: Any,
    *,
    pointer: str = "/profiles",
    event_paths: EventPaths | None = None,
    collections: Collection[str] | None = None,
) -> tuple[ProfilesSpec, list[Problem]]:
    """`parse_profiles`, but a spec even when there are problems: the collections, and the
    properties and groups that have none of their own. The catalog's checks beyond the section
    (the collections the groups need) run on it, so one mistake hides no other."""
    checker = _Checker(event_paths, collections)
    spec = checker.profiles(raw, pointer)
    return spec, checker.problems


class _Checker(PropertyChecker):
    """The whole section: collections, vendor, properties (inherited), groups."""

    def profiles(self, raw: Any, at: str) -> ProfilesSpec:
        if raw is None:
            raw = {}
        if not self.mapping(raw, at, "profiles: ", "{properties: {...}, groups: {...}}"):
            return ProfilesSpec()
        self.keys(raw, _TOP_KEYS, at, "profiles: ")
        names = {key: self.collection(raw, key, at) for key in DEFAULT_COLLECTIONS}
        vendor = self.vendor(raw, at, bool(raw.get("groups")))
        properties = self.properties(raw.get("properties"), join(at, "properties"), names["events"])
        groups = self.groups(raw.get("groups"), join(at, "groups"), properties)
        return ProfilesSpec(
            events=names["events"],
            group_members=names["groupMembers"],
            records=names["records"],
            group_vendor=vendor,
            properties={name: spec for name, spec in properties.items() if spec is not None},
            groups=groups,
        )

    def collection(self, raw: Mapping[str, Any], key: str, at: str) -> str:
        name = raw.get(key, DEFAULT_COLLECTIONS[key])
        if not isinstance(name, str) or not name:
            self.problem(
                join(at, key), f"profiles: {key} must be a collection name, not {kind_of(name)}"
            )
            return DEFAULT_COLLECTIONS[key]
        if self.collections is not None and key in raw and name not in self.collections:
            hint = did_you_mean(name, self.collections)
            self.problem(
                join(at, key), f"profiles: {key}: '{name}' is not a declared collection{hint}"
            )
        return name

    def vendor(self, raw: Mapping[str, Any], at: str, needed: bool) -> int | None:
        value = raw.get("groupVendor")
        wanted = f"an integer from 1 to {VENDOR_MAX}"
        if value is None:
            if needed:
                self.problem(
                    at,
                    f"profiles: groups need groupVendor, the segment vendor they appear as "
                    f"({wanted})",
                )
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= VENDOR_MAX:
            self.problem(
                join(at, "groupVendor"),
                f"profiles: groupVendor must be {wanted}, not {kind_of(value)}",
            )
            return None
        return value

    # -- groups ---------------------------------------------------------------------------------

    def groups(
        self, raw: Any, at: str, properties: Mapping[str, PropertySpec | None]
    ) -> dict[str, GroupSpec]:
        if raw is None:
            return {}
        if not self.mapping(raw, at, "profiles: groups ", "{vip: {manual: true}}"):
            return {}
        groups = {
            str(name): self.group(str(name), spec, join(at, str(name)), properties)
            for name, spec in raw.items()
        }
        return {name: group for name, group in groups.items() if group is not None}

    def group(
        self, name: str, raw: Any, at: str, properties: Mapping[str, PropertySpec | None]
    ) -> GroupSpec | None:
        who = f"group '{name}': "
        if not self.mapping(
            raw, at, who, "{match: all, rules: [{property: ltv, op: gt, value: 50}]}"
        ):
            return None
        before = len(self.problems)
        if not 1 <= len(name) <= 32 or "\x00" in name:
            # The name becomes segment/events' segment name (1 to 32 characters, no U+0000).
            self.problem(at, f"{who}a group name is a segment name: 1 to 32 characters, no U+0000")
        self.keys(raw, _GROUP_KEYS, at, who)
        manual = self.flag(raw, "manual", at, who)
        match = raw.get("match", "all")
        if match not in ("all", "any"):
            self.problem(join(at, "match"), who + unknown("match", str(match), ("all", "any")))
        rules: tuple[RuleSpec, ...] = ()
        if manual and "rules" in raw:
            self.problem(
                join(at, "rules"),
                f"{who}a manual group has no rules (its members are added by hand)",
            )
        elif manual is False:  # None: not a boolean, reported; whether rules are due is unknown
            rules = self.rules(raw, at, who, properties)
        if len(self.problems) > before:
            return None
        return GroupSpec(name, str(match), rules, bool(manual))

    def rules(
        self,
        raw: Mapping[str, Any],
        at: str,
        who: str,
        properties: Mapping[str, PropertySpec | None],
    ) -> tuple[RuleSpec, ...]:
        rules = raw.get("rules")
        if rules is None:
            if not self.lacks(raw, "rules", at):
                return ()
            self.problem(
                at, f"{who}needs rules (a list of {{property, op, value}}) or manual: true"
            )
            return ()
        if not isinstance(rules, list) or not rules:
            self.problem(
                join(at, "rules"),
                f"{who}rules must be a non-empty list of {{property, op, value}}, "
                f"not {kind_of(rules)}",
            )
            return ()
        checked = (
            self.rule(item, join(at, "rules", i), who, properties) for i, item in enumerate(rules)
        )
        return tuple(rule for rule in checked if rule is not None)

    def rule(
        self, raw: Any, at: str, who: str, properties: Mapping[str, PropertySpec | None]
    ) -> RuleSpec | None:
        if not self.mapping(raw, at, f"{who}a rule ", "{property: ltv, op: gt, value: 50}"):
            return None
        self.keys(raw, _RULE_KEYS, at, who)
        name = raw.get("property")
        op = self.operator(raw, at, who)
        if name is None:
            if self.lacks(raw, "property", at):
                self.problem(at, f"{who}a rule needs a property")
            return None
        if name not in properties:
            self.problem(join(at, "property"), who + unknown("property", str(name), properties))
            return None
        spec = properties[name]
        if spec is None or op is None:
            return None
        if op not in operators_for(spec.type):
            fitting = one_of(operators_for(spec.type))
            self.problem(
                join(at, "op"),
                f"{who}operator '{op}' does not fit property '{name}' of type {spec.type} "
                f"(expected {fitting})",
            )
            return None
        value = raw.get("value", NO_VALUE)
        try:
            compile_rule(spec.type, op, value, array=spec.array)
        except RuleError as error:
            self.problem(at + error.pointer, f"{who}{error.message}")
            return None
        return RuleSpec(str(name), op, value)
