"""Checks of single values: `const`/`enum` equality, the formats, and numeric keyword values.

Each mirrors jsonschema exactly where it says True; the formats try a stricter regex first and
fall back to jsonschema's own format checker, so they are exact too.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipeline.documents.fastcheck.nodes import Check, Unsupported
from pipeline.documents.schema import FORMAT_CHECKER, is_int32

# Stricter than jsonschema (ASCII digits only, `\Z` rather than `$`); a miss falls back to it.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DATE_TIME = re.compile(
    r"([0-9]{4})-(0[1-9]|1[0-2])-([0-9]{2})[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]+)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)


def _unbool(x: Any, true: object = object(), false: object = object()) -> Any:
    if x is True:
        return true
    if x is False:
        return false
    return x


def _equal(one: Any, two: Any) -> bool:
    """jsonschema's `_utils.equal`: like ==, but True != 1, recursively."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(_equal(i, j) for i, j in zip(one, two, strict=True))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return len(one) == len(two) and all(
            key in two and _equal(value, two[key]) for key, value in one.items()
        )
    return bool(_unbool(one) == _unbool(two))


def const(value: Any) -> Check:
    """The check of `const: value`."""
    if value is True or value is False or value is None:

        def same(x: Any) -> bool:
            return x is value

        return same
    if isinstance(value, str):

        def text(x: Any) -> bool:
            return isinstance(x, str) and x == value

        return text

    def equal(x: Any) -> bool:
        return _equal(x, value)

    return equal


def enum(values: Any) -> Check:
    """The check of `enum: values`."""
    if not isinstance(values, list):
        raise Unsupported("enum")
    if all(isinstance(v, str) for v in values):
        texts = frozenset(values)

        def text(x: Any) -> bool:
            return isinstance(x, str) and x in texts

        return text
    options = tuple(values)

    def any_equal(x: Any) -> bool:
        return any(_equal(x, v) for v in options)

    return any_equal


def _uuid(x: str) -> bool:
    return _UUID.fullmatch(x) is not None or bool(FORMAT_CHECKER.conforms(x, "uuid"))


def _date_time(x: str) -> bool:
    # jsonschema: rfc3339_validator.validate_rfc3339(x.upper()); this regex matches a subset
    # (ASCII only, so upper() only turns t/z into T/Z), then the same calendar checks.
    m = _DATE_TIME.fullmatch(x)
    if m is not None:
        year, month, day = int(m[1]), int(m[2]), int(m[3])
        if year and day >= 1 and (day <= 28 or day <= calendar.monthrange(year, month)[1]):
            return True
    return bool(FORMAT_CHECKER.conforms(x, "date-time"))


FORMATS: dict[str, Callable[[str], bool]] = {"uuid": _uuid, "date-time": _date_time}
# Formats of numbers: they ignore other types themselves, like jsonschema's checkers.
NUMBER_FORMATS: dict[str, Check] = {"int32": is_int32}


def number(schema: Mapping[str, Any], keyword: str) -> Any:
    """The number a keyword like `minimum` names; Unsupported when it is not one."""
    value = schema[keyword]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unsupported(keyword)
    return value


def count(schema: Mapping[str, Any], keyword: str) -> int:
    """The count a keyword like `minLength` names; Unsupported when it is not one."""
    value = schema[keyword]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Unsupported(keyword)
    return value
