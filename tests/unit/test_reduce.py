"""The schema-driven reducer: each strategy, schema lookup, errors, and associativity."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from pipeline.documents.pointers import MISSING
from pipeline.documents.reduce import (
    STRATEGIES,
    Reducer,
    check_annotations,
    compile_reducer,
    reduce_all,
)
from pipeline.documents.schema import Schema, load_schema
from pipeline.errors import ReduceError, SegflowError

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def make_schema(contents: dict[str, Any]) -> Schema:
    """A schema held in memory (local `$ref`s only)."""
    path = Path("/in-memory/test.schema.json")
    resource = Resource.from_contents(contents, DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(path.as_uri(), resource)
    return Schema(path=path, contents=contents, registry=registry)


def reducer_for(contents: dict[str, Any]) -> Reducer:
    return compile_reducer(make_schema(contents))


def at_v(location: dict[str, Any]) -> Reducer:
    """A reducer of documents `{v: ...}` whose `v` has the schema `location`."""
    return reducer_for({"reduce": {"strategy": "merge"}, "properties": {"v": location}})


def json(value: Any) -> bytes:
    """Exact comparison: `1 == 1.0 == True` in Python, not in JSON."""
    return b"MISSING" if value is MISSING else orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def red(strategy: str, **extra: Any) -> dict[str, Any]:
    return {"reduce": {"strategy": strategy}, **extra}


# -- each strategy ------------------------------------------------------------------------------

DATE_TIME = {"type": "string", "format": "date-time"}
TAIL = [{"k": "s"}, {"k": [0, 5]}, {"k": [1]}, {"k": {}}, {"k": {"a": 1}}]
KEYED = {
    "reduce": {"strategy": "merge", "key": ["/id"]},
    "items": {**red("merge"), "properties": {"n": red("sum")}},
}


@pytest.mark.parametrize(
    ("location", "lhs", "rhs", "expected"),
    [
        pytest.param({}, 1, 2, 2, id="no annotation is lastWriteWins"),
        pytest.param({}, {"a": 1}, {"b": 2}, {"b": 2}, id="no annotation replaces objects"),
        pytest.param(red("lastWriteWins"), "x", None, None, id="lastWriteWins takes null"),
        pytest.param(red("firstWriteWins"), 1, 2, 1, id="firstWriteWins"),
        pytest.param(red("minimize"), 3, 2, 2, id="minimize numbers"),
        pytest.param(red("minimize"), 2, 2.5, 2, id="minimize int and float"),
        pytest.param(red("minimize"), "b", "ab", "ab", id="minimize strings lexically"),
        pytest.param(red("minimize"), True, False, False, id="minimize booleans"),
        pytest.param(red("minimize"), 1, 1.0, 1, id="minimize tie keeps lhs"),
        pytest.param(red("maximize"), 3, 2, 3, id="maximize numbers"),
        pytest.param(red("maximize"), 1, 1.0, 1.0, id="maximize tie keeps rhs"),
        pytest.param(red("maximize"), False, True, True, id="maximize booleans"),
        pytest.param(red("sum"), 1, 2, 3, id="sum ints"),
        pytest.param(red("sum"), 1, 0.5, 1.5, id="sum int and float"),
        pytest.param(red("append"), [1, 2], [2], [1, 2, 2], id="append"),
        pytest.param(
            red("merge", properties={"n": red("sum")}),
            {"n": 1, "a": "kept"},
            {"n": 2, "b": "taken"},
            {"n": 3, "a": "kept", "b": "taken"},
            id="merge objects",
        ),
        pytest.param(
            red("merge", items=red("sum")), [1, 2, 3], [10, 20], [11, 22, 3], id="merge by index"
        ),
        pytest.param(
            red("merge", items=red("sum")), [1], [10, 20, 30], [11, 20, 30], id="rhs longer tail"
        ),
        pytest.param(
            red("merge", prefixItems=[red("maximize")], items=red("sum")),
            [5, 1],
            [3, 1],
            [5, 2],
            id="prefixItems then items",
        ),
        pytest.param(
            KEYED,
            [{"id": 3, "n": 1}, {"id": 1, "n": 1}, {"id": 3, "n": 2, "x": "a"}],
            [{"id": 2, "n": 7}, {"id": 1, "n": 5}, {"id": 3, "x": "b"}],
            [{"id": 1, "n": 6}, {"id": 2, "n": 7}, {"id": 3, "n": 3, "x": "b"}],
            id="keyed merge sorts and unites unsorted duplicated inputs",
        ),
        pytest.param(
            {"reduce": {"strategy": "merge", "key": ["/k"]}},
            [{"k": "s"}, {"k": [1]}, {"k": {}}, {"k": 2}, {"k": 1.5}, {"k": True}, {"k": None}],
            [{"k": False}, {}, {"k": [0, 5]}, {"k": {"a": 1}}, {"k": "r"}],
            [{}, {"k": None}, {"k": False}, {"k": True}, {"k": 1.5}, {"k": 2}, {"k": "r"}, *TAIL],
            id="keys ordered absent<null<false<true<numbers<strings<arrays<objects",
        ),
    ],
)
def test_strategies(location: dict[str, Any], lhs: Any, rhs: Any, expected: Any) -> None:
    reduce = at_v(location)
    before = copy.deepcopy((lhs, rhs))
    assert json(reduce({"v": lhs}, {"v": rhs})) == json({"v": expected})
    assert (lhs, rhs) == before, "inputs must not be mutated"


@pytest.mark.parametrize(
    ("strategy", "lhs", "rhs", "expected"),
    [
        # 17:09:34-04:00 is 21:09:34Z: later than 20:00Z, whatever the strings say.
        ("maximize", "2021-01-16T17:09:34-04:00", "2021-01-16T20:00:00Z", 0),
        ("maximize", "2021-01-16T20:00:00Z", "2021-01-16T17:09:34-04:00", 1),
        ("minimize", "2021-01-16T17:09:34-04:00", "2021-01-16T20:00:00Z", 1),
        ("minimize", "2021-01-16t20:00:00z", "2021-01-16T17:09:34-04:00", 0),
        ("minimize", "2021-01-16T20:00:00.1234567Z", "2021-01-16T20:00:00.1234568Z", 0),
        ("maximize", "2021-01-16T20:00:00.5Z", "2021-01-16T20:00:00.49999999Z", 0),
        ("maximize", "2016-12-31T23:59:60Z", "2016-12-31T23:59:59.9Z", 0),
        # Equal instants: minimize keeps lhs, maximize keeps rhs, each as written.
        ("minimize", "2021-01-16T20:00:00Z", "2021-01-16T16:00:00-04:00", 0),
        ("maximize", "2021-01-16T20:00:00Z", "2021-01-16T16:00:00-04:00", 1),
        ("maximize", "2021-01-16T20:00:00.000Z", "2021-01-16T20:00:00Z", 1),
    ],
)
def test_date_times_compare_as_instants(strategy: str, lhs: str, rhs: str, expected: int) -> None:
    reduce = at_v(red(strategy, **DATE_TIME))
    assert reduce({"v": lhs}, {"v": rhs}) == {"v": (lhs, rhs)[expected]}


def test_absent_sides() -> None:
    reduce = at_v(red("sum"))
    assert reduce(MISSING, {"v": 1}) == {"v": 1}
    assert reduce({"v": 1}, MISSING) == {"v": 1}
    assert reduce({"v": 1}, {}) == {"v": 1}
    assert reduce({}, {"v": 1}) == {"v": 1}
    assert reduce_all(reduce, []) is MISSING
    assert reduce_all(reduce, [{"v": 1}, {"v": 2}, {}, {"v": 3}]) == {"v": 6}


def test_results_are_new_objects() -> None:
    reduce = at_v(red("merge", properties={"n": red("sum")}))
    lhs, rhs = {"v": {"n": 1}}, {"v": {"n": 2}}
    out = reduce(lhs, rhs)
    assert out is not lhs and out["v"] is not lhs["v"]
    assert lhs == {"v": {"n": 1}} and rhs == {"v": {"n": 2}}


# -- finding the annotation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        pytest.param(
            {"$ref": "#/$defs/doc", "$defs": {"doc": red("merge", properties={"v": red("sum")})}},
            3,
            id="through $ref",
        ),
        pytest.param(
            {"allOf": [red("merge")], "properties": {"v": {"allOf": [{}, red("sum")]}}},
            3,
            id="through allOf",
        ),
        pytest.param(
            {
                **red("merge"),
                "properties": {"v": {"$ref": "#/$defs/n"}},
                "$defs": {"n": red("sum")},
            },
            3,
            id="property $ref",
        ),
        pytest.param(
            {**red("merge"), "properties": {"v": {**red("maximize"), "allOf": [red("sum")]}}},
            2,
            id="first annotation found wins",
        ),
        pytest.param(
            {**red("merge"), "patternProperties": {"^v": red("sum")}, "additionalProperties": {}},
            3,
            id="patternProperties",
        ),
        pytest.param(
            {**red("merge"), "patternProperties": {"^x": red("sum")}, "additionalProperties": {}},
            2,
            id="additionalProperties when no pattern matches",
        ),
        pytest.param({**red("merge"), "additionalProperties": red("sum")}, 3, id="additional"),
        pytest.param(
            {**red("merge"), "properties": {"v": {}}, "additionalProperties": red("sum")},
            2,
            id="properties before additionalProperties",
        ),
        pytest.param({"properties": {"v": red("sum")}}, 2, id="an unmerged parent replaces"),
    ],
)
def test_annotation_lookup(schema: dict[str, Any], expected: int) -> None:
    assert reducer_for(schema)({"v": 1}, {"v": 2}) == {"v": expected}


def test_nested_paths_and_recursive_schema() -> None:
    reduce = reducer_for(
        {
            "$ref": "#/$defs/node",
            "$defs": {
                "node": red(
                    "merge",
                    properties={
                        "count": red("sum"),
                        "children": red("merge", additionalProperties={"$ref": "#/$defs/node"}),
                    },
                )
            },
        }
    )
    lhs = {"count": 1, "children": {"a": {"count": 1, "children": {"b": {"count": 5}}}}}
    rhs = {"count": 2, "children": {"a": {"count": 2, "children": {"b": {"count": 1}, "c": {}}}}}
    assert reduce(lhs, rhs) == {
        "count": 3,
        "children": {"a": {"count": 3, "children": {"b": {"count": 6}, "c": {}}}},
    }


def test_bad_annotation_fails_compile() -> None:
    with pytest.raises(SegflowError, match="unknown strategy 'maximise'"):
        reducer_for({"reduce": {"strategy": "maximise"}})


# -- errors -------------------------------------------------------------------------------------

SEGMENTS = {
    **red("merge"),
    "properties": {
        "segments": {
            "reduce": {"strategy": "merge", "key": ["/name"]},
            "items": {**red("merge"), "properties": {"first": red("minimize", **DATE_TIME)}},
        }
    },
}


@pytest.mark.parametrize(
    ("schema", "lhs", "rhs", "pointer", "reason"),
    [
        (
            SEGMENTS,
            {"segments": [{"name": "a", "first": "2021-01-16T20:00:00Z"}]},
            {"segments": [{"name": "a", "first": 7}]},
            "/segments/0/first",
            "minimize needs two RFC 3339 date-times",
        ),
        (
            SEGMENTS,
            {"segments": [{"name": "a"}, {"name": "b", "first": "2021-01-16T20:00:00Z"}]},
            {"segments": [{"name": "b", "first": "yesterday"}]},
            "/segments/1/first",
            "minimize needs two RFC 3339 date-times",
        ),
        (SEGMENTS, {"segments": {}}, {"segments": []}, "/segments", "not object and array"),
        ({"properties": {}, **red("merge")}, {}, [], "", "not object and array"),
        ({**red("merge"), "items": red("sum")}, [1, 2], [1, "x"], "/1", "sum needs two numbers"),
        (
            {**red("merge"), "properties": {"a/b": red("maximize")}},
            {"a/b": 1},
            {"a/b": "1"},
            "/a~1b",
            "cannot compare number with string to maximize",
        ),
        (
            {**red("merge"), "properties": {"t": red("append")}},
            {"t": [1]},
            {"t": 1},
            "/t",
            "append needs two arrays",
        ),
        (
            {**red("merge"), "properties": {"t": red("minimize")}},
            {"t": [1]},
            {"t": [0]},
            "/t",
            "cannot compare array with array",
        ),
    ],
)
def test_errors_carry_the_pointer(
    schema: dict[str, Any], lhs: Any, rhs: Any, pointer: str, reason: str
) -> None:
    with pytest.raises(ReduceError) as caught:
        reducer_for(schema)(lhs, rhs)
    assert caught.value.pointer == pointer
    assert reason in str(caught.value)


def test_error_message_names_place_and_values() -> None:
    reduce = reducer_for(SEGMENTS)
    with pytest.raises(ReduceError) as caught:
        reduce({"segments": [{"name": "a", "first": 1}]}, {"segments": [{"name": "a", "first": 2}]})
    assert str(caught.value) == (
        "cannot reduce at '/segments/0/first': minimize needs two RFC 3339 date-times"
        " (lhs=1, rhs=2)"
    )


# -- set ----------------------------------------------------------------------------------------

KEYED_SET = {
    "reduce": {"strategy": "set", "key": ["/k"]},
    "additionalProperties": {"items": {**red("merge"), "properties": {"c": red("sum")}}},
}
OBJECT_SET = {
    **red("set"),
    "additionalProperties": {"additionalProperties": red("sum")},
}


@pytest.mark.parametrize(
    ("location", "lhs", "rhs", "expected"),
    [
        pytest.param(
            KEYED_SET,
            {"add": [{"k": 3, "c": 1}, {"k": 1, "c": 1}]},
            {"add": [{"k": 2, "c": 1}, {"k": 3, "c": 2}]},
            {"add": [{"k": 1, "c": 1}, {"k": 2, "c": 1}, {"k": 3, "c": 3}]},
            id="adds unite, sorted, values merged",
        ),
        pytest.param(
            KEYED_SET,
            {"add": [{"k": 1, "c": 1}, {"k": 2, "c": 1}], "remove": [{"k": 9}]},
            {"remove": [{"k": 2}], "add": [{"k": 3, "c": 1}]},
            {"add": [{"k": 1, "c": 1}, {"k": 3, "c": 1}], "remove": [{"k": 2}, {"k": 9}]},
            id="later remove takes out earlier adds; removes accumulate",
        ),
        pytest.param(
            KEYED_SET,
            {"add": [{"k": 1, "c": 5}]},
            {"remove": [{"k": 1}], "add": [{"k": 1, "c": 1}]},
            {"add": [{"k": 1, "c": 1}], "remove": [{"k": 1}]},
            id="remove then re-add starts the value afresh",
        ),
        pytest.param(
            KEYED_SET,
            {"add": [{"k": 1}, {"k": 2}], "remove": [{"k": 3}, {"k": 4}]},
            {"intersect": [{"k": 2}, {"k": 4}, {"k": 5}], "add": [{"k": 6}]},
            {"add": [{"k": 2}, {"k": 6}], "intersect": [{"k": 2}, {"k": 5}]},
            id="intersect filters earlier adds and drops earlier removes",
        ),
        pytest.param(
            KEYED_SET,
            {"intersect": [{"k": 1, "c": 1}, {"k": 2}]},
            {"remove": [{"k": 2}]},
            {"intersect": [{"k": 1, "c": 1}]},
            id="remove after intersect narrows the intersection",
        ),
        pytest.param(
            {**red("set")},
            {"add": [3, 1, 3]},
            {"add": [2], "remove": [1]},
            {"add": [2, 3], "remove": [1]},
            id="unkeyed array members are whole items",
        ),
        pytest.param(
            OBJECT_SET,
            {"add": {"a": 1, "b": 2}},
            {"add": {"b": 3}, "remove": {"a": True}},
            {"add": {"b": 5}, "remove": {"a": True}},
            id="object sets by property name",
        ),
    ],
)
def test_set(location: dict[str, Any], lhs: Any, rhs: Any, expected: Any) -> None:
    before = copy.deepcopy((lhs, rhs))
    assert json(at_v(location)({"v": lhs}, {"v": rhs})) == json({"v": expected})
    assert (lhs, rhs) == before


@pytest.mark.parametrize(
    ("lhs", "rhs", "pointer", "reason"),
    [
        ({"add": []}, {"put": []}, "/v", "only add, intersect and remove"),
        ({"add": []}, {"remove": [], "intersect": []}, "/v", "both intersect and remove"),
        ({"add": []}, {"add": {}}, "/v/add", "must be an array"),
        ([], {"add": []}, "/v", "only add, intersect and remove"),
    ],
)
def test_set_errors(lhs: Any, rhs: Any, pointer: str, reason: str) -> None:
    with pytest.raises(ReduceError, match=reason) as caught:
        at_v(KEYED_SET)({"v": lhs}, {"v": rhs})
    assert caught.value.pointer == pointer


# -- the shipped schemas ------------------------------------------------------------------------

SEGMENT = {"vendor": 7, "name": "vip"}


def membership(timestamp: str, *, remove: bool = False, value: str | None = None) -> dict[str, Any]:
    """The document an event publishes to segment/memberships."""
    doc: dict[str, Any] = {"segment": SEGMENT, "user": "u1", "last": timestamp}
    if remove:
        doc["member"] = False
    else:
        doc |= {"first": timestamp, "member": True}
    if value is not None:
        doc["value"] = value
    return doc


@pytest.fixture(scope="module")
def membership_reducer() -> Reducer:
    return compile_reducer(load_schema(SCHEMAS / "membership.schema.yaml"))


@pytest.fixture(scope="module")
def profile_reducer() -> Reducer:
    return compile_reducer(load_schema(SCHEMAS / "profile.schema.yaml"))


@pytest.mark.parametrize(
    ("docs", "expected"),
    [
        pytest.param(
            [
                membership("2021-01-16T17:09:34-04:00", value="a"),  # 21:09:34Z
                membership("2021-01-16T20:00:00Z", value="b"),  # arrives later, happened earlier
                membership("2021-01-16T22:00:00+00:00", remove=True),
            ],
            {
                "segment": SEGMENT,
                "user": "u1",
                "first": "2021-01-16T20:00:00Z",
                "last": "2021-01-16T22:00:00+00:00",
                "member": False,
                "value": "b",
            },
            id="first is min over adds, last is max, member is last to arrive, value kept",
        ),
        pytest.param(
            [membership("2021-01-16T20:00:00Z", remove=True)],
            {"segment": SEGMENT, "user": "u1", "last": "2021-01-16T20:00:00Z", "member": False},
            id="never added: no first",
        ),
        pytest.param(
            [
                membership("2021-01-17T00:00:00Z", remove=True),
                membership("2021-01-16T00:00:00Z"),
            ],
            {
                "segment": SEGMENT,
                "user": "u1",
                "first": "2021-01-16T00:00:00Z",
                "last": "2021-01-17T00:00:00Z",
                "member": True,
            },
            id="late add: member follows arrival, last follows time",
        ),
    ],
)
def test_membership_schema(
    membership_reducer: Reducer, docs: list[dict[str, Any]], expected: dict[str, Any]
) -> None:
    assert reduce_all(membership_reducer, docs) == expected


def test_profile_schema(profile_reducer: Reducer) -> None:
    def profile(name: str, vendor: int, timestamp: str, **more: Any) -> dict[str, Any]:
        detail = {"segment": {"vendor": vendor, "name": name}, "last": timestamp, **more}
        return {"user": "u1", "segments": [detail]}

    docs = [
        profile("vip", 2, "2021-01-16T20:00:00Z", first="2021-01-16T20:00:00Z", member=True),
        profile("beta", 1, "2021-01-16T10:00:00Z", first="2021-01-16T10:00:00Z", member=True),
        profile("vip", 1, "2021-01-16T11:00:00Z", member=False),
        profile("vip", 2, "2021-01-16T17:09:34-04:00", member=False),
        profile("beta", 1, "2021-01-16T09:00:00Z", first="2021-01-16T09:00:00Z", member=True),
    ]
    assert reduce_all(profile_reducer, docs) == {
        "user": "u1",
        "segments": [
            {
                "segment": {"vendor": 1, "name": "beta"},
                "first": "2021-01-16T09:00:00Z",
                "last": "2021-01-16T10:00:00Z",
                "member": True,
            },
            {
                "segment": {"vendor": 1, "name": "vip"},
                "last": "2021-01-16T11:00:00Z",
                "member": False,
            },
            {
                "segment": {"vendor": 2, "name": "vip"},
                "first": "2021-01-16T20:00:00Z",
                "last": "2021-01-16T17:09:34-04:00",
                "member": False,
            },
        ],
    }


# -- associativity ------------------------------------------------------------------------------


def assert_associative(reduce: Reducer, docs: list[Any]) -> None:
    """Any grouping gives the same document, to the byte."""
    whole = json(reduce_all(reduce, docs))
    for split in range(len(docs) + 1):
        halves = reduce(reduce_all(reduce, docs[:split]), reduce_all(reduce, docs[split:]))
        assert json(halves) == whole, split
    for i in range(len(docs) - 2):
        a, b, c = docs[i : i + 3]
        assert json(reduce(reduce(a, b), c)) == json(reduce(a, reduce(b, c)))


# Few distinct instants, many spellings: ties between different strings are common.
OFFSETS = [UTC, timezone(timedelta(hours=-4)), timezone(timedelta(hours=5, minutes=30))]
date_times = st.builds(
    lambda hour, zone, style: _spell(
        datetime(2021, 1, 16, hour, tzinfo=UTC).astimezone(zone), style
    ),
    st.integers(0, 3),
    st.sampled_from(OFFSETS),
    st.sampled_from(["Z", "z", "offset", "fraction"]),
)


def _spell(moment: datetime, style: str) -> str:
    text = moment.isoformat()
    if moment.utcoffset() == timedelta(0) and style in "Zz":
        text = text.replace("+00:00", style).replace("T", "T" if style == "Z" else "t")
    elif style == "fraction":
        text = text[:19] + ".000" + text[19:]
    return text


numbers = st.one_of(st.integers(-3, 3), st.integers(-12, 12).map(lambda n: n / 4))
SCALARS: dict[str, tuple[dict[str, Any], st.SearchStrategy[Any]]] = {
    "lastWriteWins": ({}, st.one_of(numbers, st.text(max_size=2), st.none())),
    "firstWriteWins": ({}, st.one_of(numbers, st.text(max_size=2), st.none())),
    "minimize": ({}, numbers),
    "maximize": ({}, st.one_of(st.text(alphabet="ab", max_size=2))),
    "sum": ({}, numbers),
    "append": ({}, st.lists(st.integers(0, 3), max_size=3)),
}


@pytest.mark.parametrize("strategy", sorted(SCALARS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_scalar_strategies_are_associative(strategy: str, data: st.DataObject) -> None:
    extra, values = SCALARS[strategy]
    docs = data.draw(st.lists(st.fixed_dictionaries({}, optional={"v": values}), max_size=6))
    assert_associative(at_v(red(strategy, **extra)), docs)


@pytest.mark.parametrize("strategy", ["minimize", "maximize"])
@settings(max_examples=60, deadline=None)
@given(docs=st.lists(st.fixed_dictionaries({"v": date_times}), max_size=6))
def test_date_time_strategies_are_associative(strategy: str, docs: list[Any]) -> None:
    assert_associative(at_v(red(strategy, **DATE_TIME)), docs)


MERGED = {
    **red("merge"),
    "properties": {
        "n": red("sum"),
        "lo": red("minimize", **DATE_TIME),
        "tags": red("append"),
        "by_index": red("merge", items=red("maximize")),
        "keyed": KEYED,
    },
}
merged_docs = st.fixed_dictionaries(
    {},
    optional={
        "n": st.integers(-3, 3),
        "lo": date_times,
        "tags": st.lists(st.integers(0, 3), max_size=2),
        "by_index": st.lists(st.integers(0, 3), max_size=3),
        "keyed": st.lists(
            st.fixed_dictionaries(
                {"id": st.integers(0, 3)}, optional={"n": st.integers(0, 3), "x": st.text("ab")}
            ),
            max_size=3,
        ),
        "other": st.integers(0, 3),
    },
)


@settings(max_examples=150, deadline=None)
@given(docs=st.lists(merged_docs, max_size=6))
def test_merge_is_associative(docs: list[Any]) -> None:
    assert_associative(reducer_for(MERGED), docs)


def _set_docs(members: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    def build(add: Any, other: str, others: Any) -> dict[str, Any]:
        doc = {} if add is None else {"add": add}
        if other != "none":
            doc[other] = others
        return doc

    return st.builds(
        build,
        st.one_of(st.none(), members),
        st.sampled_from(["none", "remove", "intersect"]),
        members,
    )


SET_CASES = {
    "keyed": (
        KEYED_SET,
        st.lists(
            st.fixed_dictionaries({"k": st.integers(0, 4)}, optional={"c": st.integers(0, 3)}),
            max_size=4,
        ),
    ),
    "unkeyed": (red("set"), st.lists(st.integers(0, 4), max_size=4)),
    "object": (
        OBJECT_SET,
        st.dictionaries(st.sampled_from("abcde"), st.integers(0, 3), max_size=4),
    ),
}


@pytest.mark.parametrize("case", sorted(SET_CASES))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_set_is_associative(case: str, data: st.DataObject) -> None:
    location, members = SET_CASES[case]
    docs = data.draw(st.lists(_set_docs(members).map(lambda v: {"v": v}), max_size=6))
    assert_associative(at_v(location), docs)


@settings(max_examples=150, deadline=None)
@given(
    docs=st.lists(
        st.builds(
            lambda timestamp, remove, value: membership(timestamp, remove=remove, value=value),
            date_times,
            st.booleans(),
            st.one_of(st.none(), st.sampled_from(["a", "b"])),
        ),
        max_size=6,
    )
)
def test_membership_schema_is_associative(membership_reducer: Reducer, docs: list[Any]) -> None:
    assert_associative(membership_reducer, docs)


detail = st.fixed_dictionaries(
    {
        "segment": st.builds(
            lambda vendor, name: {"vendor": vendor, "name": name},
            st.integers(1, 2),
            st.sampled_from(["a", "b"]),
        ),
        "last": date_times,
        "member": st.booleans(),
    },
    optional={"first": date_times, "value": st.sampled_from(["x", "y"])},
)


@settings(max_examples=150, deadline=None)
@given(
    docs=st.lists(
        st.fixed_dictionaries({"user": st.just("u1"), "segments": st.lists(detail, max_size=3)}),
        max_size=6,
    )
)
def test_profile_schema_is_associative(profile_reducer: Reducer, docs: list[Any]) -> None:
    assert_associative(profile_reducer, docs)


# -- check_annotations --------------------------------------------------------------------------


def test_check_annotations_reports_every_problem() -> None:
    schema = make_schema(
        {
            **red("merge"),
            "properties": {
                "a": {"reduce": {"strategy": "maximise"}},
                "b": {"reduce": {"strategy": "minimize", "key": ["/id"]}},
                "c": {"reduce": {"strategy": "merge", "key": ["id", "/ok", 3]}},
                "d": {"reduce": {"strategy": "merge", "key": "/id"}},
                "e": {"reduce": {"stratgy": "sum"}},
                "f": {"reduce": "merge"},
                "g": {"reduce": {"strategy": "LastWriteWins"}},
                "reduce": {"type": "string"},
            },
            "$defs": {"x": {"items": {"allOf": [{"reduce": {"strategy": "bogus"}}]}}},
        }
    )
    every = ", ".join(sorted(STRATEGIES))
    assert check_annotations(schema) == [
        ("/properties/a/reduce/strategy", "unknown strategy 'maximise' (did you mean 'maximize'?)"),
        ("/properties/b/reduce/key", "`key` needs strategy 'merge' or 'set', not 'minimize'"),
        ("/properties/c/reduce/key/0", "'id' is not a JSON pointer (did you mean '/id'?)"),
        ("/properties/c/reduce/key/2", "must be a JSON pointer, not number"),
        ("/properties/d/reduce/key", "must be a non-empty list of JSON pointers like ['/id']"),
        ("/properties/e/reduce/stratgy", "unknown member 'stratgy' (did you mean 'strategy'?)"),
        ("/properties/e/reduce", f"needs a `strategy`, one of {every}"),
        ("/properties/f/reduce", "must be an object like {strategy: merge}, not string"),
        (
            "/properties/g/reduce/strategy",
            "unknown strategy 'LastWriteWins' (did you mean 'lastWriteWins'?)",
        ),
        (
            "/$defs/x/items/allOf/0/reduce/strategy",
            f"unknown strategy 'bogus' (expected one of {every})",
        ),
    ]


@pytest.mark.parametrize("name", sorted(p.name for p in SCHEMAS.glob("*.yaml")))
def test_shipped_schemas_have_valid_annotations(name: str) -> None:
    schema = load_schema(SCHEMAS / name)
    assert check_annotations(schema) == []
    compile_reducer(schema)
