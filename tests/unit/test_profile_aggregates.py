"""Aggregates as mergeable states: any order, any split, any merge tree gives the same state (as
JSON, not merely the same result), and the result is what a direct computation gives."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derivations.profiles.aggregates import (
    AGGREGATES,
    MAX_DISTINCT,
    Aggregate,
    Order,
    State,
    make_order,
    misfit,
)
from derivations.profiles.instants import Instant
from derivations.profiles.values import TYPES, Invalid, Value, identity_key, normalise, order_key

Event = tuple[Value | Invalid | None, Order]

FLOATS = st.one_of(
    st.sampled_from([0.1, 0.2, 0.3, 1e16, -1e16, 1.0, -1.0, 1e-300, 5e-324, 2.5e-8, 1e308, -1e308]),
    st.floats(allow_nan=False, allow_infinity=False),
).map(lambda x: x + 0.0)
RAW_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "integer": st.integers(-(2**63), 2**63 - 1),
    "float": FLOATS,
    "string": st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=4
    ),
    "email": st.sampled_from(["a@x.com", "b@x.com", "B@x.com", "a@y.org"]),
    "url": st.sampled_from(["https://a.com/", "https://b.com/", "http://a.com/"]),
    "phoneNumber": st.sampled_from(["+14155550123", "+442079460958", "+33123456789"]),
    "boolean": st.booleans(),
    "date": st.sampled_from(
        [
            "2024-05-01T10:00:00Z",
            "2024-05-01T12:00:00+02:00",  # the same instant as the first, another text
            "2024-05-01T10:00:00.5Z",
            "2024-04-30T23:59:59.999999999999Z",
            "2024-05-02T00:00:00-05:00",
        ]
    ),
}
COMBINATIONS = [
    (kind, type_)
    for kind in AGGREGATES
    for type_ in TYPES
    if misfit(kind, type_, kind == "distinct") is None
]


def as_json(state: State) -> bytes:
    return orjson.dumps(state, option=orjson.OPT_SORT_KEYS)


@st.composite
def events(draw: st.DrawFn, type_: str, max_size: int = 12) -> list[Event]:
    """Events with unique arrival numbers; occurredAt from a few seconds, so ties happen."""
    size = draw(st.integers(0, max_size))
    arrivals = draw(st.permutations(range(size)))
    made: list[Event] = []
    for arrival in arrivals:
        occurred = Instant(draw(st.integers(0, 3)), draw(st.sampled_from(["", "5"])))
        if draw(st.integers(0, 5)) == 0:
            value: Value | Invalid | None = Invalid(f"bad {arrival}")
        else:
            normalised = normalise(type_, draw(RAW_VALUES[type_]))
            assert not isinstance(normalised, Invalid)
            value = normalised
        made.append((value, make_order(occurred, arrival)))
    return made


def build(aggregate: Aggregate, items: list[Event]) -> State:
    state = aggregate.initial()
    for value, order in items:
        state = aggregate.add(state, value, order)
    return state


@st.composite
def merged_in_a_tree(draw: st.DrawFn, aggregate: Aggregate, items: list[Event]) -> State:
    """Split `items` into consecutive parts at random, build each, merge in a random tree."""
    if len(items) <= 1 or draw(st.integers(0, 3)) == 0:
        return build(aggregate, items)
    cut = draw(st.integers(0, len(items)))
    left = draw(merged_in_a_tree(aggregate, items[:cut]))
    right = draw(merged_in_a_tree(aggregate, items[cut:]))
    return aggregate.merge(left, right) if draw(st.booleans()) else aggregate.merge(right, left)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[Aggregate, list[Event], list[Event], State]:
    kind, type_ = draw(st.sampled_from(COMBINATIONS))
    aggregate = Aggregate(kind, type_)
    items = draw(events(type_))
    shuffled = draw(st.permutations(items))
    tree = draw(merged_in_a_tree(aggregate, shuffled))
    return aggregate, items, shuffled, tree


@settings(max_examples=600, deadline=None)
@given(scenario())
def test_any_order_and_any_merge_tree_give_the_same_state(
    case: tuple[Aggregate, list[Event], list[Event], State],
) -> None:
    aggregate, items, shuffled, tree = case
    in_order = build(aggregate, items)
    assert as_json(build(aggregate, shuffled)) == as_json(in_order)
    assert as_json(tree) == as_json(in_order)
    assert orjson.loads(as_json(in_order)) == in_order  # plain JSON, stored as it is
    assert aggregate.result(in_order) == expected_result(aggregate, items)
    assert aggregate.invalid(in_order) == expected_invalid(aggregate, items)


def test_merging_with_the_empty_state_changes_nothing() -> None:
    for kind, type_ in COMBINATIONS:
        aggregate = Aggregate(kind, type_)
        raw = {"integer": 3, "float": 0.1, "boolean": True, "date": "2024-05-01T10:00:00Z"}
        value = normalise(type_, raw.get(type_, "a@b.com" if type_ == "email" else "+14155550123"))
        if type_ == "url":
            value = "https://a.com/"
        state = aggregate.add(aggregate.initial(), value, make_order(Instant(0), 0))
        assert aggregate.merge(state, aggregate.initial()) == state
        assert aggregate.merge(aggregate.initial(), state) == state


# --- the results, computed directly --------------------------------------------------------------


def valid(items: list[Event]) -> list[tuple[Any, Order]]:
    return [(value, order) for value, order in items if not isinstance(value, Invalid)]


def latest_key(order: Order) -> Any:
    return order


def earliest_key(order: Order) -> Any:
    """Least occurredAt first; among equal ones the later arrival (SPEC: ties go to it)."""
    return ((order[0], order[1]), -order[2])


def expected_result(aggregate: Aggregate, items: list[Event]) -> Any:
    good = valid(items)
    kind, type_ = aggregate.kind, aggregate.type
    values = [value for value, _ in good]
    if kind == "count":
        return len(values)
    if kind in ("sum", "avg"):
        exact = sum((Fraction(v) for v in values), Fraction(0))
        if kind == "avg":
            return float(exact / len(values)) if values else None
        if type_ == "integer":
            return int(exact) if -(2**63) <= exact < 2**63 else None
        try:
            return float(exact)
        except OverflowError:
            return None
    if not values:
        return None
    if kind in ("min", "max"):
        pick = min if kind == "min" else max
        return pick(values, key=order_key(type_))
    if kind == "latest":
        return max(good, key=lambda pair: latest_key(pair[1]))[0]
    if kind == "earliest":
        return min(good, key=lambda pair: earliest_key(pair[1]))[0]
    seen: dict[Any, Any] = {}
    for value in sorted(values, key=order_key(type_)):
        seen.setdefault(identity_key(type_)(value), value)
    return list(seen.values())[:MAX_DISTINCT]


def expected_invalid(aggregate: Aggregate, items: list[Event]) -> str | None:
    if aggregate.kind in ("sum",) and aggregate.result(build(aggregate, items)) is None:
        return "the sum is outside " + (
            "the 64-bit range" if aggregate.type == "integer" else "the range of a float"
        )
    bad = [(value, order) for value, order in items if isinstance(value, Invalid)]
    if not bad:
        return None
    if aggregate.kind in ("latest", "earliest"):
        key = latest_key if aggregate.kind == "latest" else earliest_key
        best = (max if aggregate.kind == "latest" else min)(items, key=lambda e: key(e[1]))
        return best[0].reason if isinstance(best[0], Invalid) else None
    last = max(bad, key=lambda pair: pair[1])[0]
    assert isinstance(last, Invalid)
    return last.reason


# --- examples ------------------------------------------------------------------------------------


def order(seconds: int, arrival: int) -> Order:
    return make_order(Instant(seconds), arrival)


def test_float_sums_are_exact_whatever_the_order() -> None:
    total = Aggregate("sum", "float")
    values = [1e16, 0.1, -1e16, 0.1, 0.1]
    forward = build(total, [(v, order(0, i)) for i, v in enumerate(values)])
    backward = build(total, [(v, order(0, i)) for i, v in enumerate(reversed(values))])
    assert forward == backward
    assert total.result(forward) == 0.30000000000000004  # 0.1 * 3 rounded once, not 0.0 or 2.0
    assert sum(values) != sum(reversed(values))  # what plain float addition would have done


def test_sums_out_of_range_have_no_value_and_say_why() -> None:
    floats = Aggregate("sum", "float")
    state = build(floats, [(1e308, order(0, 0)), (1e308, order(0, 1))])
    assert floats.result(state) is None
    assert floats.invalid(state) == "the sum is outside the range of a float"
    state = floats.add(state, -1e308, order(0, 2))
    assert floats.result(state) == 1e308
    assert floats.invalid(state) is None
    integers = Aggregate("sum", "integer")
    state = build(integers, [(2**63 - 1, order(0, 0)), (1, order(0, 1))])
    assert integers.result(state) is None
    assert integers.invalid(state) == "the sum is outside the 64-bit range"
    assert integers.result(integers.add(state, -5, order(0, 2))) == 2**63 - 5


def test_count_and_sum_are_zero_without_events_and_the_others_absent() -> None:
    for kind, type_ in COMBINATIONS:
        aggregate = Aggregate(kind, type_)
        expected = {"count": 0, "sum": 0.0 if type_ == "float" else 0}.get(kind)
        result = aggregate.result(aggregate.initial())
        assert result == expected and type(result) is type(expected), (kind, type_)


def test_latest_and_earliest_ties_go_to_the_later_arrival() -> None:
    latest, earliest = Aggregate("latest", "string"), Aggregate("earliest", "string")
    items: list[Event] = [("first", order(5, 1)), ("second", order(5, 2)), ("old", order(4, 0))]
    assert latest.result(build(latest, items)) == "second"
    assert earliest.result(build(earliest, items)) == "old"
    assert earliest.result(build(earliest, items[:2])) == "second"


def test_invalid_for_latest_clears_when_a_later_valid_value_arrives() -> None:
    latest = Aggregate("latest", "email")
    state = latest.add({}, "ann@example.com", order(1, 1))
    state = latest.add(state, Invalid("'garbage' is not an email"), order(2, 2))
    assert latest.result(state) == "ann@example.com"
    assert latest.invalid(state) == "'garbage' is not an email"
    state = latest.add(state, "bob@example.com", order(3, 3))
    assert (latest.result(state), latest.invalid(state)) == ("bob@example.com", None)
    # an older bad value does not stand for the property's current input
    state = latest.add(state, Invalid("'older' is not an email"), order(0, 4))
    assert latest.invalid(state) is None


def test_invalid_for_sum_stays_as_the_last_left_out() -> None:
    total = Aggregate("sum", "float")
    state = total.add({}, 10.0, order(1, 1))
    state = total.add(state, Invalid("'abc' is not a float"), order(2, 2))
    state = total.add(state, 5.0, order(3, 3))
    assert (total.result(state), total.invalid(state)) == (15.0, "'abc' is not a float")
    state = total.add(state, Invalid("'xyz' is not a float"), order(0, 4))  # earlier occurredAt
    assert total.invalid(state) == "'abc' is not a float"


def test_avg_is_the_exact_sum_over_the_count() -> None:
    avg = Aggregate("avg", "float")
    state = build(avg, [(v, order(0, i)) for i, v in enumerate([1e308, 1e308, 1.0])])
    assert avg.result(state) == float((Fraction(1e308) * 2 + 1) / 3)


def test_min_max_of_one_instant_written_twice_do_not_depend_on_arrival() -> None:
    texts = ["2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00Z"]
    for kind in ("min", "max"):
        aggregate = Aggregate(kind, "date")
        a = build(aggregate, [(texts[0], order(0, 0)), (texts[1], order(0, 1))])
        b = build(aggregate, [(texts[1], order(0, 0)), (texts[0], order(0, 1))])
        assert a == b


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=2500), st.data())
def test_distinct_keeps_the_least_thousand_in_any_split(values: list[int], data: Any) -> None:
    distinct = Aggregate("distinct", "integer")
    items: list[Event] = [(v, order(0, i)) for i, v in enumerate(values)]
    cut = data.draw(st.integers(0, len(items)))
    merged = distinct.merge(build(distinct, items[cut:]), build(distinct, items[:cut]))
    assert merged == build(distinct, items)
    assert distinct.result(merged) == sorted(set(values))[:MAX_DISTINCT]


def test_distinct_dates_one_text_per_instant() -> None:
    distinct = Aggregate("distinct", "date")
    items: list[Event] = [
        ("2024-05-01T12:00:00+02:00", order(0, 0)),
        ("2024-05-01T10:00:00Z", order(0, 1)),
        ("2024-04-01T10:00:00Z", order(0, 2)),
    ]
    assert distinct.result(build(distinct, items)) == [
        "2024-04-01T10:00:00Z",
        "2024-05-01T10:00:00Z",
    ]


@pytest.mark.parametrize(
    ("kind", "type_", "array", "message"),
    [
        ("sum", "string", False, "aggregate 'sum' gives integer or float values, not string"),
        ("count", "float", False, "aggregate 'count' gives integer values, not float"),
        ("avg", "integer", False, "aggregate 'avg' gives float values, not integer"),
        ("min", "boolean", False,
         "aggregate 'min' needs an ordered type, not boolean (use 'latest')"),
        ("distinct", "string", False,
         "aggregate 'distinct' gives a list, so the property needs array: true"),
        ("latest", "string", True, "array: true needs aggregate 'distinct', not 'latest'"),
        ("distinct", "boolean", True, None),
        ("max", "date", False, None),
        ("latest", "boolean", False, None),
    ],
)  # fmt: skip
def test_misfits(kind: str, type_: str, array: bool, message: str | None) -> None:
    assert misfit(kind, type_, array) == message
