"""Property aggregates (SPEC 8.3) as mergeable states: what makes identity merge exact.

An `Aggregate(kind, type)` is stateless; its state is plain JSON that the runtime stores:
`initial()`, `add(state, value, order)`, `merge(a, b)`, `result(state)`, `invalid(state)`. For any
set of events, every order of adding them and every way of splitting them into parts, adding each
part separately and merging the parts in any tree shape, gives the *same state* (equal as JSON),
not merely the same result. So the record built from an anonymous record merged into a person's
equals the record built as if every event had gone to the person from the start (SPEC 8.2).

`order` is the caller's sort key of an event, from `make_order(occurredAt, arrival)`: the JSON list
`[seconds, fraction, arrival]`. `arrival` (an int, string or list, one type for all events) orders
events that occurred at the same instant; it must be unique per event and the same whichever
record the event went to (an offset of profile/events, say, not of a record's partition).

Semantics, where the spec leaves room:
- `latest`: the value of the greatest (occurredAt, arrival); `earliest`: the least occurredAt and,
  as the spec says for both, the later arrival among equal occurredAt.
- `count` and `sum` are 0 with no event; the others have no value. `count` counts the events the
  property takes (matching type and `where`), whatever their value.
- `sum` is kept exactly: an integer for `integer`, and for `float` the exact sum of the floats as
  a dyadic rational `[str(mantissa), exponent]` with an odd mantissa (every float is m * 2**e).
  That representation is unique, so equal sums are equal states: float addition is not
  associative, and Shewchuk partials (math.fsum's) are exact but not unique. The result is the
  exact sum correctly rounded once. A sum outside the 64-bit integer range or the float range
  has no value, and `invalid` says why.
- `avg` (type float) is the exact sum divided by the count, correctly rounded once.
- `min`, `max`: numbers by value, strings by code point, dates by instant; two texts of one
  instant are ordered by their text, so the pick never depends on arrival.
- `distinct`: sorted (dates by instant), one text per instant (the least), at most 1,000 values:
  the 1,000 least, since the least of a union is the least of the parts' least.
- `invalid`: a value left out of the aggregate because it does not fit the type keeps a reason.
  For `latest`/`earliest` the reason shows only while the left-out value is the one the property
  would have shown, i.e. it is later (earlier) than the value shown: a later valid value replaces
  it, as a user updating a bad email expects. For the other aggregates every left-out value is
  missing from the result for good, so the reason of the last one left out (by order) stays.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .instants import Instant
from .values import INT_MAX, INT_MIN, Invalid, Value, identity_key, order_key

AGGREGATES = ("latest", "earliest", "count", "sum", "min", "max", "avg", "distinct")
MAX_DISTINCT = 1000
_ORDERED_TYPES = frozenset({"integer", "float", "date", "string", "email", "url", "phoneNumber"})

State = dict[str, Any]
Order = list[Any]


def make_order(occurred_at: Instant, arrival: int | str | list[Any]) -> Order:
    """The order key of an event: when it occurred, then when it arrived."""
    return [occurred_at.seconds, occurred_at.fraction, arrival]


def misfit(kind: str, type_: str, array: bool) -> str | None:
    """Why aggregate `kind` cannot compute a property of `type_` (and `array`), or None."""
    if array != (kind == "distinct"):
        if array:
            return f"array: true needs aggregate 'distinct', not '{kind}'"
        return "aggregate 'distinct' gives a list, so the property needs array: true"
    wanted = {
        "count": ("integer",),
        "sum": ("integer", "float"),
        "avg": ("float",),
    }.get(kind)
    if wanted is not None and type_ not in wanted:
        return f"aggregate '{kind}' gives {' or '.join(wanted)} values, not {type_}"
    if kind in ("min", "max") and type_ not in _ORDERED_TYPES:
        return f"aggregate '{kind}' needs an ordered type, not {type_} (use 'latest')"
    return None


@dataclass(frozen=True)
class Aggregate:
    """The aggregate `kind` over values of property type `type`."""

    kind: str
    type: str

    def initial(self) -> State:
        """The state of no events."""
        return {}

    def add(self, state: State, value: Value | Invalid | None, order: Order) -> State:
        """`state` with one more event (its value, or why it was left out; None for `count`)."""
        if isinstance(value, Invalid):
            return self.merge(state, {_BAD: [list(order), value.reason]})
        strategy = _STRATEGIES[self.kind]
        inserted = strategy.insert(self.type, state, value)
        if inserted is not None:
            return inserted
        return self.merge(state, strategy.single(self.type, value, list(order)))

    def merge(self, a: State, b: State) -> State:
        """The state of the events of `a` and of `b` (two disjoint sets of events)."""
        strategy = _STRATEGIES[self.kind]
        merged = strategy.merge(self.type, a, b)
        bad = _pick_bad(self.kind, a.get(_BAD), b.get(_BAD))
        if bad is not None and strategy.shows_bad(merged, bad):
            merged[_BAD] = bad
        return merged

    def result(self, state: State) -> Any:
        """The property's value, or None when it has none (absent from the record)."""
        return _STRATEGIES[self.kind].result(self.type, state)

    def invalid(self, state: State) -> str | None:
        """The reason the record shows in `invalid` for this property, or None."""
        overflow = _STRATEGIES[self.kind].overflow(self.type, state)
        if overflow is not None:
            return overflow
        bad = state.get(_BAD)
        return None if bad is None else str(bad[1])


_BAD = "bad"
_VALUE = "v"


def _canonical(payload: Any) -> bytes:
    return orjson.dumps(payload)


def _later(a: Order, b: Order) -> bool:
    """a after b for `latest`: greater occurredAt, then greater arrival."""
    return a > b


def _earlier(a: Order, b: Order) -> bool:
    """a before b for `earliest`: lesser occurredAt, then (spec) the greater arrival."""
    return a[:2] < b[:2] or (a[:2] == b[:2] and a[2:] > b[2:])


def _pick(beats: Callable[[Order, Order], bool], a: Any, b: Any) -> Any:
    """The better of two [order, payload] pairs (either may be None); equal orders (the same
    event twice, which callers avoid) fall back to the payload so the pick stays deterministic."""
    if a is None or b is None:
        return b if a is None else a
    if a[0] == b[0]:
        return a if _canonical(a[1]) >= _canonical(b[1]) else b
    return a if beats(a[0], b[0]) else b


def _pick_bad(kind: str, a: Any, b: Any) -> Any:
    return _pick(_earlier if kind == "earliest" else _later, a, b)


# -- one strategy per kind ------------------------------------------------------------------------


class _Strategy:
    """How one kind of aggregate builds, merges and reads its state."""

    def single(self, type_: str, value: Any, order: Order) -> State:
        raise NotImplementedError

    def insert(self, type_: str, state: State, value: Any) -> State | None:
        """A quicker way to add one value than merging its single state, if there is one."""
        return None

    def merge(self, type_: str, a: State, b: State) -> State:
        raise NotImplementedError

    def result(self, type_: str, state: State) -> Any:
        raise NotImplementedError

    def shows_bad(self, merged: State, bad: Any) -> bool:
        return True

    def overflow(self, type_: str, state: State) -> str | None:
        return None


class _Pick(_Strategy):
    """latest / earliest: keep the best [order, value]."""

    def __init__(self, beats: Callable[[Order, Order], bool]) -> None:
        self.beats = beats

    def single(self, type_: str, value: Any, order: Order) -> State:
        return {_VALUE: [order, value]}

    def merge(self, type_: str, a: State, b: State) -> State:
        best = _pick(self.beats, a.get(_VALUE), b.get(_VALUE))
        return {} if best is None else {_VALUE: best}

    def result(self, type_: str, state: State) -> Any:
        best = state.get(_VALUE)
        return None if best is None else best[1]

    def shows_bad(self, merged: State, bad: Any) -> bool:
        best = merged.get(_VALUE)
        return best is None or self.beats(bad[0], best[0])


class _Count(_Strategy):
    def single(self, type_: str, value: Any, order: Order) -> State:
        return {"n": 1}

    def merge(self, type_: str, a: State, b: State) -> State:
        n = a.get("n", 0) + b.get("n", 0)
        return {"n": n} if n else {}

    def result(self, type_: str, state: State) -> Any:
        return state.get("n", 0)


class _Extreme(_Strategy):
    """min / max by the type's order."""

    def __init__(self, choose: Callable[..., Any]) -> None:
        self.choose = choose

    def single(self, type_: str, value: Any, order: Order) -> State:
        return {_VALUE: value}

    def merge(self, type_: str, a: State, b: State) -> State:
        present = [s[_VALUE] for s in (a, b) if _VALUE in s]
        return {_VALUE: self.choose(present, key=order_key(type_))} if present else {}

    def result(self, type_: str, state: State) -> Any:
        return state.get(_VALUE)


class _Distinct(_Strategy):
    def single(self, type_: str, value: Any, order: Order) -> State:
        return {_VALUE: [value]}

    def merge(self, type_: str, a: State, b: State) -> State:
        values = distinct_values(type_, [*a.get(_VALUE, ()), *b.get(_VALUE, ())])
        return {_VALUE: values} if values else {}

    def insert(self, type_: str, state: State, value: Any) -> State | None:
        """Binary search instead of a sort: a page view adds to a list of up to 1,000 pages."""
        values: list[Any] = state.get(_VALUE, [])
        key, same = order_key(type_), identity_key(type_)
        index = bisect.bisect_left(values, key(value), key=key)
        for neighbour in (index - 1, index):  # at most one stored value shares the identity
            if 0 <= neighbour < len(values) and same(values[neighbour]) == same(value):
                if key(value) >= key(values[neighbour]):
                    return state
                return {**state, _VALUE: [*values[:neighbour], value, *values[neighbour + 1 :]]}
        if index >= MAX_DISTINCT:
            return state
        kept = [*values[:index], value, *values[index:]][:MAX_DISTINCT]
        return {**state, _VALUE: kept}

    def result(self, type_: str, state: State) -> Any:
        return state.get(_VALUE)


def distinct_values(type_: str, values: list[Any]) -> list[Any]:
    """Sorted, one per identity (the least of those), the first MAX_DISTINCT."""
    same = identity_key(type_)
    kept: list[Any] = []
    last: Any = object()
    for value in sorted(values, key=order_key(type_)):
        identity = same(value)
        if identity != last:
            kept.append(value)
            last = identity
            if len(kept) == MAX_DISTINCT:
                break
    return kept


# -- exact sums -----------------------------------------------------------------------------------


def _dyadic(mantissa: int, exponent: int) -> tuple[int, int]:
    """mantissa * 2**exponent with an odd mantissa (or 0 * 2**0): one form per number."""
    if mantissa == 0:
        return 0, 0
    zeros = (mantissa & -mantissa).bit_length() - 1
    return mantissa >> zeros, exponent + zeros


def _float_exact(value: float) -> tuple[int, int]:
    numerator, denominator = value.as_integer_ratio()
    return _dyadic(numerator, 1 - denominator.bit_length())


def _add_dyadic(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    low = min(a[1], b[1])
    return _dyadic((a[0] << (a[1] - low)) + (b[0] << (b[1] - low)), low)


def _ratio_to_float(exact: tuple[int, int], divisor: int = 1) -> float | None:
    """mantissa * 2**exponent / divisor, correctly rounded (int / int is), None if too large."""
    mantissa, exponent = exact
    try:
        if exponent >= 0:
            return (mantissa << exponent) / divisor + 0.0
        return mantissa / (divisor << -exponent) + 0.0
    except OverflowError:
        return None


class _Sum(_Strategy):
    """sum (and, with a count, avg): exact integers, or exact dyadic sums of floats."""

    def single(self, type_: str, value: Any, order: Order) -> State:
        return {"s": self.encode(type_, self.exact(type_, value))}

    def exact(self, type_: str, value: Any) -> Any:
        return value if type_ == "integer" else _float_exact(value)

    def encode(self, type_: str, exact: Any) -> Any:
        if type_ == "integer":
            return exact if INT_MIN <= exact <= INT_MAX else str(exact)
        return [str(exact[0]), exact[1]]

    def decode(self, type_: str, state: State) -> Any:
        stored = state.get("s")
        if type_ == "integer":
            return 0 if stored is None else int(stored)
        return (0, 0) if stored is None else (int(stored[0]), int(stored[1]))

    def merge(self, type_: str, a: State, b: State) -> State:
        if "s" not in a or "s" not in b:
            return {k: v for k, v in (a if "s" in a else b).items() if k != _BAD}
        x, y = self.decode(type_, a), self.decode(type_, b)
        total = x + y if type_ == "integer" else _add_dyadic(x, y)
        return {"s": self.encode(type_, total)}

    def result(self, type_: str, state: State) -> Any:
        total = self.decode(type_, state)
        if type_ == "integer":
            return total if INT_MIN <= total <= INT_MAX else None
        return _ratio_to_float(total)

    def overflow(self, type_: str, state: State) -> str | None:
        if self.result(type_, state) is not None:
            return None
        bound = "the 64-bit range" if type_ == "integer" else "the range of a float"
        return f"the sum is outside {bound}"


class _Avg(_Sum):
    def single(self, type_: str, value: Any, order: Order) -> State:
        return {**super().single(type_, value, order), "n": 1}

    def merge(self, type_: str, a: State, b: State) -> State:
        merged = super().merge(type_, a, b)
        n = a.get("n", 0) + b.get("n", 0)
        return {**merged, "n": n} if n else merged

    def result(self, type_: str, state: State) -> Any:
        n = state.get("n", 0)
        return _ratio_to_float(self.decode(type_, state), n) if n else None

    def overflow(self, type_: str, state: State) -> str | None:
        return None


_STRATEGIES: dict[str, _Strategy] = {
    "latest": _Pick(_later),
    "earliest": _Pick(_earlier),
    "count": _Count(),
    "sum": _Sum(),
    "min": _Extreme(min),
    "max": _Extreme(max),
    "avg": _Avg(),
    "distinct": _Distinct(),
}
