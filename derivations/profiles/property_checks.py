"""Checking the properties of the `profiles:` section: types, sources, paths, `where`.

Each method reports problems as (JSON pointer, message), naming the property first, and returns
None (or a default) when what it checked cannot be used, so callers do not report consequences.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from .aggregates import AGGREGATES, misfit
from .model import EventSource, ImportSource, PropertySpec, WhereSpec
from .operators import NO_VALUE, OPERATORS, RuleError, compile_condition
from .values import TYPES
from .wording import closest, did_you_mean, join, kind_of, one_of, unknown

Problem = tuple[str, str]
EventPaths = Collection[str] | Callable[[str], bool]
"""What the events schema declares: pointers (a path is known if it is one or lies under one), or
a predicate. `/occurredAt`, `/type` and `/userId` are always known."""

UNIQUE_TYPES = ("string", "email", "url", "phoneNumber", "integer")
FIXED_PATHS = {
    "/occurredAt": ("a date-time", ("date", "string")),
    "/type": ("the event type", ("string",)),
    "/userId": ("the user id", ("string", "integer")),
}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}", re.ASCII)
_PROPERTY_KEYS = ("type", "array", "unique", "from")
_EVENT_SOURCE_KEYS = ("events", "path", "aggregate", "where")
_IMPORT_SOURCE_KEYS = ("import", "column")
_CONDITION_KEYS = ("path", "op", "value", "type")


class PropertyChecker:
    """Checks property declarations, collecting problems; `spec` adds the rest of the section."""

    def __init__(self, event_paths: EventPaths | None, collections: Collection[str] | None):
        self.event_paths = event_paths
        self.collections = collections
        self.problems: list[Problem] = []
        self.meant: set[tuple[str, str]] = set()

    def problem(self, pointer: str, message: str) -> None:
        self.problems.append((pointer, message))

    def keys(self, raw: Mapping[Any, Any], allowed: tuple[str, ...], at: str, who: str) -> None:
        """Report unknown keys; remember what a misspelt one was probably meant to be."""
        for key in raw:
            if key not in allowed:
                self.problem(
                    join(at, str(key)), f"{who}unknown key '{key}'{did_you_mean(str(key), allowed)}"
                )
                meant = closest(str(key), allowed)
                if meant is not None:
                    self.meant.add((at, meant))

    def lacks(self, raw: Mapping[str, Any], key: str, at: str) -> bool:
        """Whether to report `key` missing: not if a misspelling of it was reported already."""
        return key not in raw and (at, key) not in self.meant

    def mapping(self, raw: Any, at: str, who: str, like: str) -> bool:
        if isinstance(raw, dict):
            return True
        self.problem(at, f"{who}must be a mapping like {like}, not {kind_of(raw)}")
        return False

    def flag(self, raw: Mapping[str, Any], key: str, at: str, who: str) -> bool | None:
        """The boolean at `key` (false if absent), or None after reporting it is not one."""
        value = raw.get(key, False)
        if isinstance(value, bool):
            return value
        self.problem(join(at, key), f"{who}{key} must be true or false, not {kind_of(value)}")
        return None

    # -- properties -----------------------------------------------------------------------------

    def properties(self, raw: Any, at: str, events: str) -> dict[str, PropertySpec | None]:
        if raw is None:
            return {}
        if not self.mapping(raw, at, "profiles: properties ", "{email: {type: email, from: ...}}"):
            return {}
        return {
            str(name): self.property(str(name), spec, join(at, str(name)), events)
            for name, spec in raw.items()
        }

    def property(self, name: str, raw: Any, at: str, events: str) -> PropertySpec | None:
        who = f"property '{name}': "
        before = len(self.problems)
        if not _NAME.fullmatch(name):
            self.problem(
                at,
                f"{who}invalid name: expected a letter, then up to 63 letters, digits, _ or -",
            )
        if not self.mapping(raw, at, who, "{type: string, from: {events: [...], ...}}"):
            return None
        self.keys(raw, _PROPERTY_KEYS, at, who)
        type_ = self.type_name(raw, at, who)
        array = bool(self.flag(raw, "array", at, who))
        unique = bool(self.flag(raw, "unique", at, who))
        if unique and (array or (type_ is not None and type_ not in UNIQUE_TYPES)):
            what = "an array" if array else f"type {type_}"
            self.problem(
                join(at, "unique"),
                f"{who}unique does not fit {what} (it fits {one_of(UNIQUE_TYPES)})",
            )
        source = self.source(raw, at, who, type_, array, events)
        if source is None or type_ is None or len(self.problems) > before:
            return None
        return PropertySpec(name, type_, source, array=array, unique=unique)

    def type_name(self, raw: Mapping[str, Any], at: str, who: str) -> str | None:
        if "type" not in raw:
            if self.lacks(raw, "type", at):
                self.problem(at, f"{who}needs a type, one of {one_of(TYPES)}")
            return None
        type_ = raw["type"]
        if type_ not in TYPES:
            self.problem(join(at, "type"), who + unknown("type", str(type_), TYPES))
            return None
        return str(type_)

    def source(
        self, raw: Mapping[str, Any], at: str, who: str, type_: str | None, array: bool, events: str
    ) -> EventSource | ImportSource | None:
        like = "{events: [purchase], path: /data/total, aggregate: sum}"
        if "from" not in raw:
            if self.lacks(raw, "from", at):
                self.problem(at, f"{who}needs 'from', like {like}")
            return None
        here, at = at, join(at, "from")
        source = raw["from"]
        if not self.mapping(source, at, f"{who}from ", like):
            return None
        if "import" in source or "column" in source:
            if array:
                self.problem(
                    join(here, "array"),
                    f"{who}a property from an import takes the value of the row with the"
                    " greatest watermark: it cannot be an array",
                )
            return self.import_source(source, at, who)
        return self.event_source(source, at, who, type_, array, events)

    def import_source(self, raw: Mapping[str, Any], at: str, who: str) -> ImportSource | None:
        for key in raw:
            if key not in _IMPORT_SOURCE_KEYS:
                self.problem(
                    join(at, str(key)),
                    f"{who}unknown key '{key}' (a from with 'import' has only 'import' and "
                    "'column')",
                )
        found = []
        for key in _IMPORT_SOURCE_KEYS:
            value = raw.get(key)
            if not isinstance(value, str) or not value:
                self.problem(
                    join(at, key) if key in raw else at,
                    f"{who}from: {key} must be a name, not {kind_of(value)}",
                )
            found.append(value)
        name, column = found
        if isinstance(name, str) and isinstance(column, str) and name and column:
            return ImportSource(name, column)
        return None

    def event_source(
        self, raw: Mapping[str, Any], at: str, who: str, type_: str | None, array: bool, events: str
    ) -> EventSource | None:
        before = len(self.problems)
        self.keys(raw, _EVENT_SOURCE_KEYS, at, who)
        types = self.event_types(raw, at, who)
        aggregate = raw.get("aggregate")
        if aggregate is None:
            if self.lacks(raw, "aggregate", at):
                self.problem(at, f"{who}needs an aggregate, one of {one_of(AGGREGATES)}")
        elif aggregate not in AGGREGATES:
            self.problem(
                join(at, "aggregate"), who + unknown("aggregate", str(aggregate), AGGREGATES)
            )
            aggregate = None
        elif type_ is not None and (reason := misfit(aggregate, type_, array)) is not None:
            self.problem(join(at, "aggregate"), who + reason)
        path = self.source_path(raw, at, who, aggregate, type_, events)
        where = self.where(raw.get("where"), join(at, "where"), who, events)
        if len(self.problems) > before or aggregate is None:
            return None
        return EventSource(types, str(aggregate), path, where)

    def event_types(self, raw: Mapping[str, Any], at: str, who: str) -> tuple[str, ...] | None:
        wanted = 'a list of event types like [purchase], or "*" for every type'
        types = raw.get("events")
        if types == "*":
            return None
        if "events" not in raw:
            if self.lacks(raw, "events", at):
                self.problem(at, f"{who}needs events: {wanted}")
            return None
        if not isinstance(types, list) or not types:
            self.problem(join(at, "events"), f"{who}events must be {wanted}, not {kind_of(types)}")
            return None
        seen: set[str] = set()
        for index, name in enumerate(types):
            if not isinstance(name, str) or not 1 <= len(name) <= 100:
                self.problem(
                    join(at, "events", index),
                    f"{who}an event type is a string of 1 to 100 characters, not {kind_of(name)}",
                )
            elif name in seen:
                self.problem(join(at, "events", index), f"{who}event type '{name}' is listed twice")
            else:
                seen.add(name)
        return tuple(types)

    def source_path(
        self,
        raw: Mapping[str, Any],
        at: str,
        who: str,
        aggregate: Any,
        type_: str | None,
        events: str,
    ) -> str | None:
        path = raw.get("path")
        if aggregate == "count":
            if path is not None:
                self.problem(
                    join(at, "path"),
                    f"{who}aggregate 'count' takes no path (to count events that have a value, "
                    "add where: [{path: ..., op: exists}])",
                )
            return None
        if path is None:
            if aggregate is not None and self.lacks(raw, "path", at):
                self.problem(at, f"{who}aggregate '{aggregate}' needs a path, like /data/total")
            return None
        if not self.path(path, join(at, "path"), who, events):
            return None
        fixed = FIXED_PATHS.get(path)
        if fixed is not None and type_ is not None and type_ not in fixed[1]:
            what, fits = fixed
            self.problem(
                join(at, "path"),
                f"{who}path '{path}' is {what}, which fits type {' or '.join(fits)}, not {type_}",
            )
        return str(path)

    def path(self, path: Any, at: str, who: str, events: str) -> bool:
        """Whether `path` may be read from a product event; reports why not."""
        allowed = "point into /data/... or be /occurredAt, /type or /userId"
        if not isinstance(path, str):
            self.problem(
                at, f"{who}path must be a JSON pointer that {allowed}, not {kind_of(path)}"
            )
            return False
        if path in FIXED_PATHS:
            return True
        tokens = path.split("/")[1:]
        if not path.startswith("/") or re.search(r"~(?![01])", path):
            problem = f"'{path}' is not a JSON pointer"
        elif tokens[0] != "data" or len(tokens) < 2:
            problem = f"path '{path}' must {allowed}{did_you_mean(path, FIXED_PATHS)}"
        elif "" in tokens:
            problem = f"path '{path}' has an empty reference token"
        elif not self.known(path):
            hint = (
                did_you_mean(path, self.event_paths)
                if isinstance(self.event_paths, Collection)
                else ""
            )
            problem = f"path '{path}' does not exist in the schema of {events}{hint}"
        else:
            return True
        self.problem(at, who + problem)
        return False

    def known(self, path: str) -> bool:
        if self.event_paths is None:
            return True
        if callable(self.event_paths):
            return self.event_paths(path)
        return any(path == known or path.startswith(known + "/") for known in self.event_paths)

    def where(self, raw: Any, at: str, who: str, events: str) -> tuple[WhereSpec, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.problem(
                at,
                f"{who}where must be a list of conditions like "
                f"[{{path: /data/path, op: ne, value: /}}], not {kind_of(raw)}",
            )
            return ()
        conditions = (self.condition(item, join(at, i), who, events) for i, item in enumerate(raw))
        return tuple(c for c in conditions if c is not None)

    def condition(self, raw: Any, at: str, who: str, events: str) -> WhereSpec | None:
        if not self.mapping(
            raw, at, f"{who}a where condition ", "{path: /data/path, op: ne, value: /}"
        ):
            return None
        before = len(self.problems)
        self.keys(raw, _CONDITION_KEYS, at, who)
        path = raw.get("path")
        if path is None:
            if self.lacks(raw, "path", at):
                self.problem(at, f"{who}a where condition needs a path")
        else:
            self.path(path, join(at, "path"), who, events)
        op = self.operator(raw, at, who)
        type_ = raw.get("type")
        if type_ is not None and type_ not in TYPES:
            self.problem(join(at, "type"), who + unknown("type", str(type_), TYPES))
            return None
        if op is None:
            return None
        value = raw.get("value", NO_VALUE)
        try:
            compile_condition(op, value, type_)
        except RuleError as error:
            self.problem(at + error.pointer, f"{who}where: {error.message}")
        if len(self.problems) > before:
            return None
        return WhereSpec(str(path), op, value, type_)

    def operator(self, raw: Mapping[str, Any], at: str, who: str) -> str | None:
        op = raw.get("op")
        if op is None:
            if self.lacks(raw, "op", at):
                self.problem(at, f"{who}needs an op, one of the rule operators like 'eq' or 'gt'")
            return None
        if op not in OPERATORS:
            self.problem(join(at, "op"), who + unknown("operator", str(op), OPERATORS))
            return None
        return str(op)
