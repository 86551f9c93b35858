"""Rule operators (SPEC 8.4), compiled once into predicates over property values.

`compile_rule(kind, op, value, array=...)` checks the rule's value against the property's type
and returns a `Rule`: `rule.holds(value, now)` and, for rules relative to the clock,
`rule.next_flip(value, now)`. `compile_condition` does the same for a `where` condition on a raw
event value (SPEC 8.3).

Semantics, where the spec leaves room:
- Missing values: a property without a value matches `notExists` and nothing else; an array
  property without values is an empty array, which also matches the negative operators (`ne`,
  `notIn`, `notLike`, `notILike`). On an array the positive operators hold if any element matches,
  the negative ones if no element matches the positive counterpart. The relative operators,
  `notInTheLast` included, are positive (it says "before now - d", a property of the value).
- Rule values are normalised by the property's type first (`eq: "Ann@Example.COM"` matches the
  stored `Ann@example.com`; `gt: "50"` on a float is 50.0). Dates compare as exact instants.
  Patterns and the arguments of `startsWith`, `endsWith`, `contains` are used as written.
- `like` is SQL LIKE: anchored, `%` any run of characters (newlines too), `_` one character, a
  backslash makes the next character literal (as in Postgres); case-sensitive. Case-insensitive
  operators (`iLike`, `notILike`, `startsWith`, `endsWith`, `contains`) compare both sides after
  `str.lower()`, like Postgres `lower()` and ILIKE.
- `between: [low, high]` is inclusive; `low` above `high` and an empty `in` list are catalog errors.
- Relative windows are measured from the value, which for calendar durations (months clamp at
  month ends) keeps each window one interval of time, so a record never leaves and rejoins a group
  because of clamping: `inTheLast d` holds while value <= now < value + d; `inTheNext d` while
  value - d < now <= value; `notInTheLast d` once value + d < now. For fixed durations this is
  exactly the spec's (now - d, now], [now, now + d) and "before now - d".
- `next_flip(value, now)` is the earliest instant after `now` at which `holds` gives the other
  answer, so a timer set to it sees the change when it fires. Where the new answer begins just
  after a boundary (the spec's open ends: `inTheNext` entering after value - d and leaving after
  value, `notInTheLast` joining after value + d) it is the first whole nanosecond after it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import SegflowError

from . import durations
from .durations import Duration
from .instants import Instant, next_nanosecond
from .values import NUMBER_TYPES, TEXT_TYPES, Invalid, Value, identity_key, instant_of, normalise

EVERY_TYPE_OPS = ("exists", "notExists", "eq", "ne", "in", "notIn")
ORDER_OPS = ("gt", "gte", "lt", "lte", "between")
TEXT_OPS = ("like", "notLike", "iLike", "notILike", "startsWith", "endsWith", "contains")
RELATIVE_OPS = ("inTheLast", "inTheNext", "notInTheLast")
OPERATORS = EVERY_TYPE_OPS + ORDER_OPS + TEXT_OPS + RELATIVE_OPS
NEGATIVE = {"ne": "eq", "notIn": "in", "notLike": "like", "notILike": "iLike"}


class _NoValue:
    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Any = _NoValue()
"""The `value` of a rule that has none (`exists`, `notExists`)."""

Test = Callable[[Value, Instant], bool]
Window = tuple[Instant, Instant | None]
"""When an element matches a relative rule: [start, end), end None for ever."""


class RuleError(SegflowError, ValueError):
    """A rule or condition that cannot be compiled: where in it (a JSON pointer relative to the
    rule, like '/value/1') and what is wrong."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(message)
        self.pointer = pointer
        self.message = message


def operators_for(kind: str) -> tuple[str, ...]:
    """The operators that fit properties of type `kind`."""
    ops: tuple[str, ...] = EVERY_TYPE_OPS
    if kind in NUMBER_TYPES or kind == "date":
        ops += ORDER_OPS
    if kind in TEXT_TYPES:
        ops += TEXT_OPS
    if kind == "date":
        ops += RELATIVE_OPS
    return ops


@dataclass(frozen=True)
class Rule:
    """One compiled rule. `holds` and `next_flip` take the stored property value: a value, a list
    of values for an array property, or None when the record has none."""

    kind: str
    op: str
    array: bool
    test: Test = field(repr=False)
    window: Callable[[Value], Window] | None = field(default=None, repr=False)

    @property
    def relative(self) -> bool:
        """Whether the outcome can change with the clock alone."""
        return self.window is not None

    def holds(self, value: Any, now: Instant) -> bool:
        """Whether a record whose property has `value` matches the rule at `now`."""
        op = self.op
        if op == "exists":
            return _present(value)
        if op == "notExists":
            return not _present(value)
        if value is None:
            return self.array and op in NEGATIVE  # no value: an empty array
        test = self.test
        if isinstance(value, list):
            hit = False
            for element in value:
                if test(element, now):
                    hit = True
                    break
        else:
            hit = test(value, now)
        return not hit if op in NEGATIVE else hit

    def next_flip(self, value: Any, now: Instant) -> Instant | None:
        """The earliest instant after `now` at which `holds` changes with no new value, or None."""
        if self.window is None:
            return None
        return _next_change([self.window(element) for element in _elements(value)], now)


def _present(value: Any) -> bool:
    return value is not None and value != []


def _elements(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _next_change(windows: Sequence[Window], now: Instant) -> Instant | None:
    """The first instant after `now` at which 'some window contains the time' changes."""
    if not any(start <= now and (stop is None or now < stop) for start, stop in windows):
        return min((start for start, _ in windows if start > now), default=None)
    # Covered now: the change is the end of the run of overlapping windows that covers `now`.
    # Sorted by start, the windows covering `now` come first, so `[now, end)` stays covered.
    end = now
    for start, stop in sorted(windows, key=lambda window: window[0]):
        if start > end:
            break
        if stop is None:
            return None
        end = max(end, stop)
    return end


def compile_rule(kind: str, op: str, value: Any = NO_VALUE, *, array: bool = False) -> Rule:
    """A rule on a property of type `kind`; raises RuleError if `op` or `value` do not fit."""
    if op not in OPERATORS:
        raise RuleError("/op", f"unknown operator '{op}'")
    if op not in operators_for(kind):
        raise RuleError("/op", f"operator '{op}' does not fit type '{kind}'")
    if op in ("exists", "notExists"):
        if value is not NO_VALUE:
            raise RuleError("/value", f"'{op}' takes no value")
        return Rule(kind, op, array, _never)
    if value is NO_VALUE:
        raise RuleError("", f"'{op}' needs a value")
    if op in RELATIVE_OPS:
        duration = durations.parse_duration(value)
        if duration is None:
            raise RuleError("/value", durations.describe_bad(value))
        test, window = _RELATIVE[op](duration)
        return Rule(kind, op, array, test, window)
    return Rule(kind, op, array, _BUILDERS[NEGATIVE.get(op, op)](kind, value))


def _never(element: Value, now: Instant) -> bool:
    return False


# -- values of rules ------------------------------------------------------------------------------


def _one(kind: str, raw: Any, pointer: str = "/value") -> Value:
    value = normalise(kind, raw)
    if isinstance(value, Invalid):
        raise RuleError(pointer, f"value {value.reason}")
    return value


def _list(raw: Any, size: int | None = None) -> list[Any]:
    if not isinstance(raw, list) or not raw or (size is not None and len(raw) != size):
        wanted = "a list of two values [low, high]" if size == 2 else "a non-empty list of values"
        raise RuleError("/value", f"value must be {wanted}")
    return raw


def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise RuleError("/value", "value must be a string")
    return raw


def _ordered(kind: str) -> Callable[[Value], Any]:
    """Numbers as they are, dates as instants."""
    return instant_of if kind == "date" else (lambda value: value)


# -- element tests, one builder per positive operator ------------------------------------------


def _eq(kind: str, raw: Any) -> Test:
    key = identity_key(kind)
    target = key(_one(kind, raw))
    return lambda element, now: key(element) == target


def _in(kind: str, raw: Any) -> Test:
    key = identity_key(kind)
    targets = {key(_one(kind, item, f"/value/{i}")) for i, item in enumerate(_list(raw))}
    return lambda element, now: key(element) in targets


def _compare(compare: Callable[[Any, Any], bool]) -> Callable[[str, Any], Test]:
    def build(kind: str, raw: Any) -> Test:
        key = _ordered(kind)
        target = key(_one(kind, raw))
        return lambda element, now: compare(key(element), target)

    return build


def _between(kind: str, raw: Any) -> Test:
    key = _ordered(kind)
    low, high = (key(_one(kind, item, f"/value/{i}")) for i, item in enumerate(_list(raw, 2)))
    if low > high:
        raise RuleError("/value", "value [low, high] has low above high")
    return lambda element, now: low <= key(element) <= high


def like_pattern(pattern: str) -> re.Pattern[str]:
    """A SQL LIKE pattern as an anchored regular expression; raises RuleError if malformed."""
    parts: list[str] = []
    escaped = False
    for ch in pattern:
        if escaped:
            parts.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            parts.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    if escaped:
        raise RuleError("/value", "pattern must not end with the escape character '\\'")
    return re.compile("".join(parts), re.DOTALL)


def _like(kind: str, raw: Any) -> Test:
    match = like_pattern(_text(raw)).fullmatch
    return lambda element, now: match(str(element)) is not None


def _ilike(kind: str, raw: Any) -> Test:
    match = like_pattern(_text(raw).lower()).fullmatch
    return lambda element, now: match(str(element).lower()) is not None


def _affix(method: Callable[[str, str], bool]) -> Callable[[str, Any], Test]:
    def build(kind: str, raw: Any) -> Test:
        target = _text(raw).lower()
        return lambda element, now: method(str(element).lower(), target)

    return build


_BUILDERS: dict[str, Callable[[str, Any], Test]] = {
    "eq": _eq,
    "in": _in,
    "gt": _compare(lambda a, b: a > b),
    "gte": _compare(lambda a, b: a >= b),
    "lt": _compare(lambda a, b: a < b),
    "lte": _compare(lambda a, b: a <= b),
    "between": _between,
    "like": _like,
    "iLike": _ilike,
    "startsWith": _affix(str.startswith),
    "endsWith": _affix(str.endswith),
    "contains": _affix(str.__contains__),
}


# -- relative operators: a test and the window of time in which it holds ----------------------


def _in_the_last(d: Duration) -> tuple[Test, Callable[[Value], Window]]:
    def test(element: Value, now: Instant) -> bool:
        at = instant_of(element)
        return at <= now < durations.add(at, d)

    def window(element: Value) -> Window:
        at = instant_of(element)
        return at, durations.add(at, d)

    return test, window


def _in_the_next(d: Duration) -> tuple[Test, Callable[[Value], Window]]:
    def test(element: Value, now: Instant) -> bool:
        at = instant_of(element)
        return durations.subtract(at, d) < now <= at

    def window(element: Value) -> Window:
        at = instant_of(element)
        return next_nanosecond(durations.subtract(at, d)), next_nanosecond(at)

    return test, window


def _not_in_the_last(d: Duration) -> tuple[Test, Callable[[Value], Window]]:
    def test(element: Value, now: Instant) -> bool:
        return durations.add(instant_of(element), d) < now

    def window(element: Value) -> Window:
        return next_nanosecond(durations.add(instant_of(element), d)), None

    return test, window


_RELATIVE = {
    "inTheLast": _in_the_last,
    "inTheNext": _in_the_next,
    "notInTheLast": _not_in_the_last,
}


# -- where conditions on raw event values --------------------------------------------------------

_NO_TIME = Instant(0)


@dataclass(frozen=True)
class Condition:
    """A compiled `where` condition: a rule on the raw value an event has at a path."""

    rule: Rule

    def holds(self, raw: Any) -> bool:
        """Whether an event whose value at the path is `raw` (None if absent or null) passes.

        A list is an array (any element / no element); an element that does not fit the
        condition's type matches no positive operator, so `ne 3` holds for 'abc'.
        """
        rule = self.rule
        if raw is None:
            return rule.op == "notExists"
        elements = raw if isinstance(raw, list) else [raw]
        if rule.op in ("exists", "notExists"):
            return bool(elements) == (rule.op == "exists")
        kind, test = rule.kind, rule.test
        hit = False
        for element in elements:
            value = normalise(kind, element)
            if not isinstance(value, Invalid) and test(value, _NO_TIME):
                hit = True
                break
        return not hit if rule.op in NEGATIVE else hit


def compile_condition(op: str, value: Any = NO_VALUE, kind: str | None = None) -> Condition:
    """A `where` condition; its type is `kind` if given, else inferred from `op` and `value`:
    booleans compare as booleans, numbers as floats (so 3, 3.0 and "3" in an event all equal 3),
    strings as strings, and ordering operators on RFC 3339 strings as dates. Relative operators
    are refused: an event is filtered once, when it arrives, so "in the last 3d" would depend on
    when that happened to be."""
    if op in RELATIVE_OPS:
        raise RuleError(
            "/op",
            f"operator '{op}' cannot filter events: an event is filtered once, when it arrives",
        )
    if kind is None:
        kind = infer_kind(op, value)
    return Condition(compile_rule(kind, op, value, array=True))


def infer_kind(op: str, value: Any) -> str:
    """The type a `where` condition without `type` compares as; raises RuleError if none fits."""
    if op in ("exists", "notExists") or op in TEXT_OPS or op not in OPERATORS or value == []:
        return "string"  # an empty list: compile_rule says what is wrong with it
    sample = value[0] if isinstance(value, list) and value else value
    if isinstance(sample, bool):
        if op in ORDER_OPS:
            raise RuleError("/value", f"operator '{op}' compares numbers or dates, not booleans")
        return "boolean"
    if isinstance(sample, int | float):
        return "float"
    if isinstance(sample, str):
        if op not in ORDER_OPS:
            return "string"
        if normalise("date", sample) == sample:
            return "date"
        raise RuleError("/value", f"operator '{op}' compares numbers or dates, not '{sample}'")
    if value is NO_VALUE:
        return "string"
    raise RuleError("/value", "value must be a string, number or boolean (or a list of them)")
