"""Aggregates compiled per kind, for the records stage's hot path (SPEC 8.3).

`adder(aggregate)` is `aggregate.add` and `reader(aggregate)` is `(aggregate.result(state),
aggregate.invalid(state))`, each specialised once for its kind and type: no dispatch by kind, no
single-value state built only to be merged, no second decoding of a sum. They give the states and
values of the generic methods exactly (tests/unit/test_profiles_perf_aggregates.py checks them
against each other), and hand anything off the common path to those: a value that does not fit
the type, a state carrying a left-out value's reason, two events of one order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .aggregates import (
    _BAD,
    _STRATEGIES,
    _VALUE,
    Aggregate,
    Order,
    State,
    _add_dyadic,
    _earlier,
    _float_exact,
    _later,
    _ratio_to_float,
)
from .instants import parse_instant
from .values import INT_MAX, INT_MIN, Invalid

Adder = Callable[[State, Any, Order], State]
Reader = Callable[[State], tuple[Any, str | None]]


def adder(aggregate: Aggregate) -> Adder:
    """`aggregate.add`, specialised; the same state (or an equal one) for every input."""
    kind, type_ = aggregate.kind, aggregate.type
    make = _ADDERS.get(kind)
    return aggregate.add if make is None else make(aggregate.add, type_)


def _pick(generic: Adder, type_: str, beats: Callable[[Order, Order], bool]) -> Adder:
    def add(state: State, value: Any, order: Order) -> State:
        current = state.get(_VALUE)
        if type(value) is Invalid or _BAD in state or (current and current[0] == order):
            return generic(state, value, order)
        if current is not None and beats(current[0], order):
            return state  # {v: current}: nothing else is in a state without a reason
        return {_VALUE: [order, value]}

    return add


def _latest(generic: Adder, type_: str) -> Adder:
    return _pick(generic, type_, _later)


def _earliest(generic: Adder, type_: str) -> Adder:
    return _pick(generic, type_, _earlier)


def _count(generic: Adder, type_: str) -> Adder:
    def add(state: State, value: Any, order: Order) -> State:
        if type(value) is Invalid or _BAD in state:
            return generic(state, value, order)
        return {"n": state.get("n", 0) + 1}

    return add


def _sum(generic: Adder, type_: str) -> Adder:
    if type_ == "integer":

        def add_integer(state: State, value: Any, order: Order) -> State:
            if type(value) is not int or _BAD in state:
                return generic(state, value, order)
            stored = state.get("s")
            total = value if stored is None else int(stored) + value
            return {"s": total if INT_MIN <= total <= INT_MAX else str(total)}

        return add_integer
    if type_ != "float":
        return generic

    def add_float(state: State, value: Any, order: Order) -> State:
        if type(value) is not float or _BAD in state:
            return generic(state, value, order)
        return {"s": _float_sum(state, value)}

    return add_float


def _float_sum(state: State, value: float) -> list[Any]:
    """The state's exact sum `s` with `value` added, as stored."""
    exact = _float_exact(value)
    stored = state.get("s")
    if stored is not None:
        exact = _add_dyadic((int(stored[0]), int(stored[1])), exact)
    return [str(exact[0]), exact[1]]


def _avg(generic: Adder, type_: str) -> Adder:
    if type_ != "float":
        return generic

    def add(state: State, value: Any, order: Order) -> State:
        if type(value) is not float or _BAD in state:
            return generic(state, value, order)
        return {"s": _float_sum(state, value), "n": state.get("n", 0) + 1}

    return add


def _extreme(generic: Adder, type_: str, greatest: bool) -> Adder:
    def add(state: State, value: Any, order: Order) -> State:
        if type(value) is Invalid or _BAD in state:
            return generic(state, value, order)
        if _VALUE not in state:
            return {_VALUE: value}
        current = state[_VALUE]
        if type_ == "date":  # by instant, then by text (values.order_key)
            new, old = (parse_instant(value), value), (parse_instant(current), current)
            if None in (new[0], old[0]):
                return generic(state, value, order)
        else:
            new, old = value, current
        # min/max of [current, value]: the first of equal ones, so `current`
        if (new > old) if greatest else (new < old):
            return {_VALUE: value}
        return state

    return add


def _max(generic: Adder, type_: str) -> Adder:
    return _extreme(generic, type_, greatest=True)


def _min(generic: Adder, type_: str) -> Adder:
    return _extreme(generic, type_, greatest=False)


def _distinct(generic: Adder, type_: str) -> Adder:
    insert = _STRATEGIES["distinct"].insert

    def add(state: State, value: Any, order: Order) -> State:
        if type(value) is Invalid:
            return generic(state, value, order)
        inserted = insert(type_, state, value)
        return generic(state, value, order) if inserted is None else inserted

    return add


_ADDERS: dict[str, Callable[[Adder, str], Adder]] = {
    "latest": _latest,
    "earliest": _earliest,
    "count": _count,
    "sum": _sum,
    "avg": _avg,
    "min": _min,
    "max": _max,
    "distinct": _distinct,
}


def reader(aggregate: Aggregate) -> Reader:
    """(result, invalid) of a state, computing a sum once."""
    kind = aggregate.kind

    def reason(state: State) -> str | None:
        bad = state.get(_BAD)
        return None if bad is None else str(bad[1])

    if kind in ("latest", "earliest"):

        def read_pick(state: State) -> tuple[Any, str | None]:
            best = state.get(_VALUE)
            return (None if best is None else best[1]), reason(state)

        return read_pick
    if kind == "count":
        return lambda state: (state.get("n", 0), reason(state))
    if kind in ("min", "max", "distinct"):
        return lambda state: (state.get(_VALUE), reason(state))
    if kind == "avg" and aggregate.type == "float":

        def read_avg(state: State) -> tuple[Any, str | None]:
            n = state.get("n", 0)
            stored = state.get("s")
            if not n:
                return None, reason(state)
            exact = (0, 0) if stored is None else (int(stored[0]), int(stored[1]))
            return _ratio_to_float(exact, n), reason(state)

        return read_avg
    if kind == "sum" and aggregate.type in ("integer", "float"):
        integer = aggregate.type == "integer"
        outside = aggregate.invalid({"s": [str(1), 1 << 11]} if not integer else {"s": str(2**64)})

        def read_sum(state: State) -> tuple[Any, str | None]:
            stored = state.get("s")
            value: Any
            if integer:
                total = 0 if stored is None else int(stored)
                value = total if INT_MIN <= total <= INT_MAX else None
            else:
                exact = (0, 0) if stored is None else (int(stored[0]), int(stored[1]))
                value = _ratio_to_float(exact)
            return value, (outside if value is None else reason(state))

        return read_sum
    return lambda state: (aggregate.result(state), aggregate.invalid(state))
