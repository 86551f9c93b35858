"""Compiled nodes and the combinators and type tests they are built from.

A node is a predicate plus whether it is *exact*; the combinators here keep the hot path flat
(no generator for two checks, a plain loop for more) because a check runs on every event.
"""

from __future__ import annotations

import numbers
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Check = Callable[[Any], bool]


class Unsupported(Exception):
    """The schema uses something this package does not mirror."""


@dataclass(frozen=True)
class Node:
    """A compiled subschema."""

    check: Check
    exact: bool  # check(x) == jsonschema's verdict for every x, not only when True


def always(x: Any) -> bool:
    """The check of `true` (and of an empty list of checks)."""
    return True


def never(x: Any) -> bool:
    """The check of `false`."""
    return False


_PARTS: weakref.WeakKeyDictionary[Check, tuple[Check, ...]] = weakref.WeakKeyDictionary()
"""The checks an `all_of` check runs, so that nesting them flattens into one loop."""


def all_of(checks: list[Check]) -> Check:
    """True when every check is (in order, stopping at the first False)."""
    flat: list[Check] = []
    for check in checks:
        flat.extend(_PARTS.get(check, (check,)))
    flat = [check for check in flat if check is not always]
    if not flat:
        return always
    if len(flat) == 1:
        return flat[0]
    fixed = tuple(flat)
    if len(fixed) == 2:
        a, b = fixed

        def both(x: Any) -> bool:
            return a(x) and b(x)

        combined: Check = both
    else:

        def every(x: Any) -> bool:
            for check in fixed:  # noqa: SIM110 -- a plain loop beats all() over a generator here
                if not check(x):
                    return False
            return True

        combined = every
    _PARTS[combined] = fixed
    return combined


def any_of(checks: list[Check]) -> Check:
    """True when some check is."""
    fixed = tuple(checks)

    def some(x: Any) -> bool:
        for check in fixed:  # noqa: SIM110 -- the hot loop; any() over a generator is slower
            if check(x):
                return True
        return False

    return some


def one_of(checks: list[Check]) -> Check:
    """True when exactly one check is (sound only when all are exact)."""
    fixed = tuple(checks)

    def exactly_one(x: Any) -> bool:
        return sum(1 for check in fixed if check(x)) == 1

    return exactly_one


def guarded(guard: Check, inner: Check) -> Check:
    """`inner` for instances that pass `guard`; True for the rest (type-specific keywords)."""

    def check(x: Any) -> bool:
        return not guard(x) or inner(x)

    return check


# Type tests, exactly as jsonschema's Draft 2020-12 type checker.


def _is_number(x: Any) -> bool:
    t = type(x)
    if t is int or t is float:
        return True
    return not isinstance(x, bool) and isinstance(x, numbers.Number)


def _is_integer(x: Any) -> bool:
    if type(x) is int:
        return True
    if isinstance(x, bool):
        return False
    return isinstance(x, int) or (isinstance(x, float) and x.is_integer())


def _isinstance(kind: type) -> Check:
    def check(x: Any) -> bool:
        return isinstance(x, kind)

    return check


def _is_null(x: Any) -> bool:
    return x is None


TYPES: dict[str, Check] = {
    "array": _isinstance(list),
    "boolean": _isinstance(bool),
    "integer": _is_integer,
    "null": _is_null,
    "number": _is_number,
    "object": _isinstance(dict),
    "string": _isinstance(str),
}
PLAIN_TYPES: dict[str, tuple[type, ...]] = {
    "array": (list,),
    "boolean": (bool,),
    "integer": (int,),
    "null": (type(None),),
    "number": (int, float),
    "object": (dict,),
    "string": (str,),
}
"""Python types of decoded JSON that a type name accepts whatever the value (a subset of TYPES)."""
# Type-specific keywords (minimum, minLength, required, items, ...) ignore other instance types;
# they skip this guard when the schema's single `type` already implies theirs.
GUARDS = {kind: TYPES[kind] for kind in ("number", "string", "object", "array")}
IMPLIES = {"integer": "number"}
