"""What an event contributes to a property: types, `where` conditions, paths, and records built
from any split of the events merging into the record built from all of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from derivations.profiles.aggregates import make_order
from derivations.profiles.extract import (
    EventProperty,
    compile_properties,
    compile_property,
    parse_pointer,
    read,
)
from derivations.profiles.instants import parse_instant
from derivations.profiles.model import EventSource, PropertySpec, WhereSpec
from derivations.profiles.operators import NO_VALUE, RuleError, compile_condition, infer_kind
from derivations.profiles.spec import parse_profiles
from derivations.profiles.values import Invalid

HERE = Path(__file__).parent / "profiles"

# --- where conditions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "kind"),
    [
        ("ne", "/", "string"),
        ("eq", 3, "float"),
        ("in", [1, 2], "float"),
        ("eq", True, "boolean"),
        ("gt", 10, "float"),
        ("between", ["2024-01-01T00:00:00Z", "2024-12-31T00:00:00Z"], "date"),
        ("like", "/docs/%", "string"),
        ("exists", NO_VALUE, "string"),
    ],
)
def test_condition_types_are_inferred(op: str, value: Any, kind: str) -> None:
    assert infer_kind(op, value) == kind


@pytest.mark.parametrize(
    ("op", "value", "raw", "expected"),
    [
        ("ne", "/", "/pricing", True),
        ("ne", "/", "/", False),
        ("ne", "/", None, False),  # absent or null: only notExists holds
        ("notExists", NO_VALUE, None, True),
        ("exists", NO_VALUE, None, False),
        ("exists", NO_VALUE, 0, True),
        ("exists", NO_VALUE, [], False),
        ("notExists", NO_VALUE, [], True),
        ("eq", 3, "3", True),  # numbers compare as floats: 3, 3.0 and "3" are equal
        ("eq", 3, 3.0, True),
        ("eq", "3", 3, True),  # strings take numbers as their JSON text
        ("gt", 10, "abc", False),  # a value that does not fit matches no positive operator...
        ("ne", 3, "abc", True),  # ...so the negative ones hold
        ("eq", True, "true", True),
        ("in", ["a", "b"], ["x", "b"], True),  # a list: any element
        ("notIn", ["a", "b"], ["x", "b"], False),  # a list: no element
        ("notIn", ["a", "b"], ["x", "y"], True),
        ("ne", "a", [], True),  # an empty list is an empty array
        ("gte", "2024-05-01T00:00:00Z", "2024-05-01T02:00:00+02:00", True),
        ("lt", "2024-05-01T00:00:00Z", "not a date", False),
        ("iLike", "%DOCS%", "/docs/setup", True),
    ],
)
def test_condition_holds(op: str, value: Any, raw: Any, expected: bool) -> None:
    assert compile_condition(op, value).holds(raw) is expected


def test_condition_with_an_explicit_type() -> None:
    condition = compile_condition("eq", "Ann@EXAMPLE.com", "email")
    assert condition.holds(" Ann@example.COM")
    assert not condition.holds("ann@example.com")


@pytest.mark.parametrize(
    ("op", "value", "message"),
    [
        ("inTheLast", "3d", "operator 'inTheLast' cannot filter events"),
        ("gt", "soon", "operator 'gt' compares numbers or dates, not 'soon'"),
        ("gt", True, "operator 'gt' compares numbers or dates, not booleans"),
        ("eq", {"a": 1}, "value must be a string, number or boolean"),
        ("eq", [1, "x"], 'value [1,"x"] is not a float'),
    ],
)
def test_condition_errors(op: str, value: Any, message: str) -> None:
    with pytest.raises(RuleError, match=message.replace("[", r"\[")):
        compile_condition(op, value)


# --- contributions -------------------------------------------------------------------------------


def event_property(
    type_: str,
    aggregate: str,
    path: str | None,
    events: tuple[str, ...] | None = ("e",),
    where: tuple[WhereSpec, ...] = (),
) -> EventProperty:
    source = EventSource(events, aggregate, path, where)
    return compile_property(PropertySpec("p", type_, source, array=aggregate == "distinct"))


def test_pointers() -> None:
    assert parse_pointer("/data/a~1b/c~0d") == ("data", "a/b", "c~d")
    assert read({"data": {"items": [{"x": 1}]}}, ("data", "items", "0", "x")) == 1
    assert read({"data": {"items": []}}, ("data", "items", "0")) is None
    assert read({"data": "text"}, ("data", "x")) is None


def test_contributions() -> None:
    total = event_property("float", "sum", "/data/total")
    assert total.contributions({"type": "e", "data": {"total": "12.5"}}) == [12.5]
    assert total.contributions({"type": "other", "data": {"total": 1}}) == []
    assert total.contributions({"type": "e", "data": {}}) == []
    assert total.contributions({"type": "e", "data": {"total": None}}) == []
    assert total.contributions({"type": "e", "data": {"total": "abc"}}) == [
        Invalid("'abc' is not a float")
    ]
    assert total.contributions({"type": "e", "data": {"total": [1, 2]}}) == [
        Invalid("[1,2] is not a float")
    ]
    every = event_property("integer", "count", None, events=None)
    assert every.contributions({"type": "anything"}) == [None]
    user = event_property("string", "latest", "/userId")
    assert user.contributions({"type": "e", "userId": 42}) == ["42"]


def test_array_values_contribute_each_element() -> None:
    tags = event_property("string", "distinct", "/data/tags")
    assert tags.contributions({"type": "e", "data": {"tags": ["a", None, 3, {}]}}) == [
        "a",
        "3",
        Invalid("{} is not a string"),
    ]
    assert tags.contributions({"type": "e", "data": {"tags": "single"}}) == ["single"]


def test_where_filters_events() -> None:
    visits = event_property(
        "integer", "count", None, events=None, where=(WhereSpec("/data/path", "ne", "/"),)
    )
    assert visits.contributions({"type": "pageview", "data": {"path": "/pricing"}}) == [None]
    assert visits.contributions({"type": "pageview", "data": {"path": "/"}}) == []
    assert visits.contributions({"type": "signin"}) == []  # no path: ne does not hold


def test_add_builds_the_state() -> None:
    total = event_property("float", "sum", "/data/total")
    occurred = parse_instant("2024-05-01T10:00:00Z")
    assert occurred is not None
    state = total.aggregate.initial()
    for i, value in enumerate([10, "abc", 5.5]):
        state = total.add(state, {"type": "e", "data": {"total": value}}, make_order(occurred, i))
    assert total.aggregate.result(state) == 15.5
    assert total.aggregate.invalid(state) == "'abc' is not a float"


def test_import_properties_are_not_compiled() -> None:
    spec, _ = parse_profiles(yaml.safe_load((HERE / "valid.yaml").read_text())["profiles"])
    assert spec is not None
    with pytest.raises(ValueError, match="comes from an import"):
        compile_property(spec.properties["plan"])


# --- records from any split of the events merge into the record of all of them ----------------

SPEC, _ = parse_profiles(yaml.safe_load((HERE / "valid.yaml").read_text())["profiles"])
assert SPEC is not None
PROPERTIES = compile_properties(SPEC)

product_events = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["identify", "purchase", "pageview", "cart-abandoned"]),
            "occurredAt": st.sampled_from(
                ["2024-05-01T10:00:00Z", "2024-05-01T12:00:00+02:00", "2024-05-02T00:00:00.5Z"]
            ),
            "data": st.fixed_dictionaries(
                {},
                optional={
                    "email": st.sampled_from(["a@x.com", "B@X.COM", "bad", 7]),
                    "total": st.sampled_from([0.1, 1e16, -1e16, "12.5", "abc", 100, None]),
                    "path": st.sampled_from(["/", "/docs/a", "/pricing", ["/x", "/y"]]),
                    "coupon": st.just("SAVE"),
                },
            ),
        }
    ),
    max_size=25,
)


def record(events: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per-property states of a record that took these (arrival, event) pairs."""
    states: dict[str, Any] = {}
    for arrival, event in events:
        occurred = parse_instant(event["occurredAt"])
        assert occurred is not None
        for name, prop in PROPERTIES.items():
            states[name] = prop.add(states.get(name, {}), event, make_order(occurred, arrival))
    return states


@settings(max_examples=150, deadline=None)
@given(product_events, st.data())
def test_a_merged_record_equals_the_record_of_all_events(
    events: list[dict[str, Any]], data: Any
) -> None:
    numbered = list(enumerate(events))
    anonymous = data.draw(st.sets(st.sampled_from(range(len(events))))) if events else set()
    person = record([e for e in numbered if e[0] not in anonymous])
    anon = record([e for e in numbered if e[0] in anonymous])
    merged = {
        name: prop.aggregate.merge(person.get(name, {}), anon.get(name, {}))
        for name, prop in PROPERTIES.items()
    }
    everything = record(data.draw(st.permutations(numbered)))
    for name in PROPERTIES:
        dump = orjson.dumps(merged[name], option=orjson.OPT_SORT_KEYS)
        assert dump == orjson.dumps(everything.get(name, {}), option=orjson.OPT_SORT_KEYS)
