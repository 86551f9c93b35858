"""What segment/events lets in: each limit at its edge and one past it, with the exact messages,
and what it lets in the reducer can order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from pipeline.documents.fastcheck import compile_check
from pipeline.documents.reduce import compile_reducer, reduce_all
from pipeline.documents.schema import Schema, load_schema
from pipeline.documents.validation import Validator
from pipeline.errors import ReduceError
from tests.fixtures.edges import (
    EDGES,
    EVENT,
    FOUR,
    HOSTILE,
    NAME_LENGTH,
    NUL,
    TIMESTAMP,
    USER_LENGTH,
    VALUE_LENGTH,
    VENDOR,
    Hostile,
    event,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA = load_schema(SCHEMAS / "event.schema.yaml")
VALIDATOR = Validator(SCHEMA)
FAST = compile_check(SCHEMA)
MEMBERSHIPS = compile_reducer(load_schema(SCHEMAS / "membership.schema.yaml"))


def problems(doc: Any) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in VALIDATOR.problems(doc)]


def segment(**changes: Any) -> dict[str, Any]:
    return {"segment": {"vendor": 1, "name": "seg-1", **changes}}


# Each limit: (the document's changes at the limit, one past it, the path and message past it).
LIMITS = [
    pytest.param({"user": "x" * 256}, {"user": "x" * 257}, "/user", USER_LENGTH, id="user"),
    pytest.param({"user": FOUR * 256}, {"user": FOUR * 257}, "/user", USER_LENGTH, id="user-4"),
    pytest.param(
        {"value": FOUR * 1024}, {"value": FOUR * 1025}, "/value", VALUE_LENGTH, id="value"
    ),
    pytest.param(
        segment(name=FOUR * 32), segment(name=FOUR * 33), "/segment/name", NAME_LENGTH, id="name"
    ),
    pytest.param(segment(name="n"), segment(name=""), "/segment/name", NAME_LENGTH, id="name-1"),
    pytest.param(
        segment(vendor=2147483647),
        segment(vendor=2147483648),
        "/segment/vendor",
        VENDOR,
        id="vendor-max",
    ),
    pytest.param(segment(vendor=1), segment(vendor=0), "/segment/vendor", VENDOR, id="vendor-1"),
    pytest.param(
        segment(vendor=3), segment(vendor=3.0), "/segment/vendor", VENDOR, id="vendor-3.0"
    ),
    pytest.param(
        {"timestamp": "0001-01-01T00:00:00Z"},
        {"timestamp": "0000-12-31T23:59:59Z"},
        "/timestamp",
        TIMESTAMP,
        id="year-1",
    ),
    pytest.param(
        {"timestamp": "9999-12-31T23:59:59.999999999Z"},
        {"timestamp": "10000-01-01T00:00:00Z"},
        "/timestamp",
        TIMESTAMP,
        id="year-9999",
    ),
    pytest.param(
        {"timestamp": "2021-01-16T12:00:00+15:59"},
        {"timestamp": "2021-01-16T12:00:00+16:00"},
        "/timestamp",
        TIMESTAMP,
        id="offset+",
    ),
    pytest.param(
        {"timestamp": "2021-01-16T12:00:00-15:59"},
        {"timestamp": "2021-01-16T12:00:00-16:00"},
        "/timestamp",
        TIMESTAMP,
        id="offset-",
    ),
    pytest.param(
        {"timestamp": "2016-12-31T23:59:59.999999999999999999999999999999Z"},
        {"timestamp": "2016-12-31T23:59:60Z"},
        "/timestamp",
        TIMESTAMP,
        id="leap-second",
    ),
    pytest.param(
        {"timestamp": "2021-01-16T12:00:00Z"},
        {"timestamp": "2021-01-16T12:00:00Z\n"},
        "/timestamp",
        TIMESTAMP,
        id="final-newline",
    ),
    pytest.param(
        {"event": "ABCDEF01-2345-4789-ABCD-EF0123456789"},
        {"event": "ABCDEF01-2345-4789-ABCD-EF012345678_"},
        "/event",
        EVENT,
        id="uuid",
    ),
]


@pytest.mark.parametrize(("at", "past", "path", "message"), LIMITS)
def test_each_limit_is_let_in_at_its_edge_and_refused_one_past(
    at: dict[str, Any], past: dict[str, Any], path: str, message: str
) -> None:
    assert problems(event(1, **at)) == []
    assert FAST is not None and FAST(event(1, **at)), "the edge takes the fast path"
    assert problems(event(1, **past)) == [(path, message)]


@pytest.mark.parametrize("field", ["/user", "/value", "/segment/name"])
@pytest.mark.parametrize("text", ["\x00", "nul\x00user", "trailing\x00", "\x00\n", "x\x00" * 16])
def test_nul_is_refused_in_every_string_field(field: str, text: str) -> None:
    if field == "/segment/name":
        doc = event(1, **segment(name=text))
    else:
        doc = event(1, **{field[1:]: text})
    assert problems(doc) == [(field, NUL)]


@pytest.mark.parametrize("hostile", HOSTILE, ids=[h.name for h in HOSTILE])
def test_hostile_documents_are_refused_with_their_messages(hostile: Hostile) -> None:
    assert problems(hostile.doc) == hostile.errors


def test_edge_documents_are_valid_and_take_the_fast_path() -> None:
    assert FAST is not None
    for doc in EDGES:
        assert problems(doc) == [], doc
        assert FAST(doc), doc


def test_other_messages_stay_jsonschema_s() -> None:
    assert problems({**event(1, user=7), "remove": True, "value": "v"}) == [
        ("", "`value` may not appear with `remove`"),
        ("/user", "7 is not of type 'string'"),
    ]
    assert problems({"user": "u"}) == [
        ("", "'event' is a required property"),
        ("", "'timestamp' is a required property"),
        ("", "'segment' is a required property"),
    ]


def inline(contents: dict[str, Any]) -> Schema:
    path = Path("/nonexistent/inline.schema.json")
    resource = Resource.from_contents(contents, DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(path.as_uri(), resource)
    return Schema(path=path, contents=contents, registry=registry)


@pytest.mark.parametrize(
    ("error_message", "expected"),
    [
        ("is wrong", ["/a: is wrong"]),  # a string: every keyword of that schema, said once
        ({"maxLength": "too long"}, ["/a: too long", "/a: 'ab' does not match '^a$'"]),
        ({"minLength": "unused"}, ["/a: 'ab' does not match '^a$'", "/a: 'ab' is too long"]),
        (42, ["/a: 'ab' does not match '^a$'", "/a: 'ab' is too long"]),  # not a message
    ],
)
def test_error_message_replaces_the_messages_of_the_keywords_it_names(
    error_message: Any, expected: list[str]
) -> None:
    a = {"maxLength": 1, "pattern": "^a$", "errorMessage": error_message}
    validator = Validator(inline({"properties": {"a": a}}))
    assert sorted(validator.errors({"a": "ab"})) == sorted(expected)


# What the door lets in, the reducer can order: `first` and `last` are reduced as instants.


def test_the_edges_instants_are_ordered() -> None:
    earliest, latest = "0001-01-01T00:00:00+15:59", "9999-12-31T23:59:59.999999999-15:59"
    stamps = [
        "2021-01-16T12:00:00Z",
        latest,
        "2016-12-31t23:59:59.999999999999999999999999999999z",
        earliest,
        "0001-01-01T00:00:00-15:59",
    ]
    docs = [
        {"segment": {"vendor": 1, "name": "s"}, "user": "u", "member": True, "first": s, "last": s}
        for s in stamps
    ]
    reduced = reduce_all(MEMBERSHIPS, docs)
    assert (reduced["first"], reduced["last"]) == (earliest, latest)


def test_a_final_newline_would_stop_the_reducer() -> None:
    """Why the schema refuses what `format: date-time` lets through (Python's `$`)."""
    late = "2021-01-16T12:00:00Z\n"
    assert Validator(inline({"format": "date-time"})).is_valid(late)
    docs = [
        {"segment": {"vendor": 1, "name": "s"}, "user": "u", "member": True, "last": s}
        for s in ("2021-01-16T11:00:00Z", late)
    ]
    with pytest.raises(ReduceError):
        reduce_all(MEMBERSHIPS, docs)


@settings(max_examples=500, deadline=None)
@given(
    stamp=st.from_regex(
        r"\A[0-9]{4}-(0[1-9]|1[0-2])-[0-3][0-9][Tt][0-2][0-9]:[0-5][0-9]:[0-6][0-9]"
        r"(\.[0-9]{1,40})?([Zz]|[+-][0-2][0-9]:[0-5][0-9])\n?\Z"
    )
)
def test_every_timestamp_let_in_can_be_ordered(stamp: str) -> None:
    if not VALIDATOR.is_valid(event(1, timestamp=stamp)):
        return
    docs = [
        {"segment": {"vendor": 1, "name": "s"}, "user": "u", "member": True, "last": s}
        for s in ("2021-01-16T12:00:00Z", stamp)
    ]
    assert reduce_all(MEMBERSHIPS, docs)["last"] in ("2021-01-16T12:00:00Z", stamp)
