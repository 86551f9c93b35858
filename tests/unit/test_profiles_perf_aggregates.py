"""The compiled aggregates (`derivations.profiles.compiled`) and property takers equal the generic
code: the same states as JSON, key order included, and the same results and reasons."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from derivations.profiles.aggregates import Aggregate, Order, State, make_order
from derivations.profiles.compiled import adder, reader
from derivations.profiles.extract import EventProperty, parse_pointer
from derivations.profiles.instants import Instant
from derivations.profiles.operators import compile_condition
from derivations.profiles.values import normalise
from tests.unit.test_profile_aggregates import COMBINATIONS, RAW_VALUES, events


@st.composite
def runs(draw: st.DrawFn) -> tuple[Aggregate, list[tuple[Any, Order]]]:
    kind, type_ = draw(st.sampled_from(COMBINATIONS))
    made = draw(events(type_, max_size=10))
    if made and draw(st.booleans()):  # the same order twice (callers avoid it; still equal)
        made.append((made[0][0], list(made[0][1])))
    return Aggregate(kind, type_), made


@settings(max_examples=1500, deadline=None)
@given(runs())
def test_compiled_adders_and_readers_equal_the_generic_ones(
    run: tuple[Aggregate, list[tuple[Any, Order]]],
) -> None:
    aggregate, made = run
    add, read = adder(aggregate), reader(aggregate)
    generic: State = {}
    fast: State = {}
    for value, order in made:
        generic = aggregate.add(generic, value, order)
        fast = add(fast, value, order)
        assert orjson.dumps(fast) == orjson.dumps(generic)
        assert read(fast) == (aggregate.result(generic), aggregate.invalid(generic))
    assert read({}) == (aggregate.result({}), aggregate.invalid({}))


def test_sums_beyond_the_range_read_as_the_generic_reason() -> None:
    for type_, big in (("integer", 2**62), ("float", 1e308)):
        aggregate = Aggregate("sum", type_)
        state: State = {}
        for i in range(4):
            state = adder(aggregate)(state, big, make_order(Instant(i), i))
        assert reader(aggregate)(state) == (None, aggregate.invalid(state))
        assert aggregate.invalid(state) is not None


PATHS = ["/data/x", "/occurredAt", "/data/list", "/data/x/y", "/data/list/0"]


@st.composite
def property_and_events(draw: st.DrawFn) -> tuple[EventProperty, list[dict[str, Any]]]:
    kind, type_ = draw(st.sampled_from(COMBINATIONS))
    path = None if kind == "count" and draw(st.booleans()) else draw(st.sampled_from(PATHS))
    where = ()
    if draw(st.booleans()):
        where = ((parse_pointer("/data/w"), compile_condition("ne", "/", "string")),)
    prop = EventProperty(
        "p", type_, kind == "distinct", Aggregate(kind, type_), None,
        None if path is None else parse_pointer(path), where,
    )  # fmt: skip
    raw = st.one_of(
        RAW_VALUES[type_], st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=3)
    )
    texts = RAW_VALUES["date"]
    made = []
    for i in range(draw(st.integers(0, 8))):
        data = {
            "x": draw(raw),
            "list": draw(st.lists(raw, max_size=3)),
            "w": draw(st.sampled_from(["/", "/a", None, 3])),
        }
        if draw(st.booleans()):
            data["x"] = {"y": draw(raw)}
        occurred = draw(st.one_of(texts, st.just("0000-01-01T00:00:00Z")))
        made.append({"id": f"e{i}", "type": "t", "occurredAt": occurred, "data": data})
    return prop, made


@settings(max_examples=800, deadline=None)
@given(property_and_events())
def test_takers_equal_add(case: tuple[EventProperty, list[dict[str, Any]]]) -> None:
    prop, made = case
    take = prop.taker()
    generic: State = {}
    fast: State = {}
    for i, event in enumerate(made):
        order = make_order(Instant(i % 3), [i, event["id"]])
        occurred = normalise("date", event["occurredAt"])
        generic = prop.add(generic, event, order)
        fast = take(fast, event, order, occurred)
        assert orjson.dumps(fast) == orjson.dumps(generic)
