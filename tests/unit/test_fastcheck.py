"""The fast validity check: never True where jsonschema says invalid, True on ordinary events."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from pipeline.documents.fastcheck import compile_check
from pipeline.documents.schema import Schema, load_schema
from tests.fixtures import events

SCHEMAS = Path(__file__).parents[2] / "schemas"
EVENT = load_schema(SCHEMAS / "event.schema.yaml")
TOGGLE = load_schema(SCHEMAS / "toggle.schema.yaml")
EVENT_VALIDATOR = EVENT.validator()
TOGGLE_VALIDATOR = TOGGLE.validator()
FAST_EVENT = compile_check(EVENT)
FAST_TOGGLE = compile_check(TOGGLE)
UUID = "78e51061-7311-48a3-82ce-6f447ed4d57b"
TYPICAL = {
    "event": UUID,
    "timestamp": "2021-01-16T12:00:18.250+05:30",
    "user": "usr-00194",
    "segment": {"vendor": 3, "name": "seg-1"},
    "value": "v42",
}


def inline(contents: dict[str, Any]) -> Schema:
    """A schema that lives in memory, resolvable like a loaded file."""
    path = Path("/nonexistent/inline.schema.json")
    resource = Resource.from_contents(contents, DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(path.as_uri(), resource)
    return Schema(path=path, contents=contents, registry=registry)


def fast(contents: dict[str, Any]) -> Any:
    check = compile_check(inline(contents))
    assert check is not None
    return check


def valid(contents: dict[str, Any], doc: Any) -> bool:
    return bool(inline(contents).validator().is_valid(doc))


# Documents: ordinary values, and values that sit on the edges of the formats and types.

texts = st.text(max_size=40)
# What the event schema lets into its strings: no NUL, and up to the limits in 4-byte characters.
clean = st.characters(blacklist_characters="\x00")
users = st.one_of(st.text(clean, max_size=40), st.sampled_from(["\U0001f642" * 256, "x" * 256]))
values = st.one_of(st.text(clean, max_size=40), st.just("\U0001f642" * 1024))
odd_texts = st.sampled_from(
    [
        "\x00",
        "nul\x00user",
        "\x00" * 3,
        "x" * 257,
        "\U0001f642" * 257,
        "x" * 1025,
        "\U0001f642" * 1025,
    ]
)
odd_uuids = st.one_of(
    st.uuids().map(str).map(str.upper),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: "urn:uuid:" + str(u)),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: str(u) + "\n"),
    st.from_regex(
        r"\A[0-9a-fA-FgG_+ \u0661]{8}-?[0-9a-fA-F_]{4}-[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-"
        r"[0-9a-f-]{12,13}\Z"
    ),
    st.sampled_from(
        ["123456_8-1234-1234-1234-123456789abc", "+2345678-1234-1234-1234-123456789abc"]
    ),
)
offsets = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=-4)),
        timezone(timedelta(hours=5, minutes=30)),
        timezone(timedelta(hours=15, minutes=59)),
        timezone(-timedelta(hours=15, minutes=59)),
    ]
)
stamps = st.builds(
    lambda when, z: when.isoformat().replace("+00:00", "Z") if z else when.isoformat(),
    st.datetimes(min_value=datetime(1, 1, 2), timezones=offsets),
    st.booleans(),
)
odd_stamps = st.one_of(
    stamps.map(str.lower),
    stamps.map(lambda s: s + "\n"),
    stamps.map(lambda s: s.replace("T", " ")),
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-3][0-9][Tt ][0-2][0-9]:[0-6][0-9](:[0-6][0-9])?(\.[0-9]{1,9})?"
        r"([Zz]|[+-][0-2][0-9]:?[0-6][0-9])?\n?\Z"
    ),
    st.sampled_from(
        [
            "2016-12-31T23:59:60Z",
            "2021-01-16T12:00:00+24:00",
            "2021-02-29T00:00:00Z",
            "2020-02-29T00:00:00z",
            "0000-01-01T00:00:00Z",
            "2021-01-16T12:00Z",
            "2021-01-16T12:00:00",
            "2021-01-16T12:00:00+16:00",
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+15:59",
            "2021-01-16T12:00:00." + "9" * 30 + "z",
            "2021-01-16T12:00:00Z\n",
        ]
    ),
)
names = st.one_of(
    st.text(clean, min_size=1, max_size=32),
    st.sampled_from(["x" * 32, "é" * 32, "e\u0301" * 16, "🙂" * 32]),
)
odd_names = st.sampled_from(["", "x" * 33, "é" * 33, "e\u0301" * 17, "🙂" * 33, "n\x00"])
vendors = st.one_of(st.integers(min_value=1, max_value=2**31 - 1), st.just(2**31 - 1))
segments = st.fixed_dictionaries({"vendor": vendors, "name": names})
extras = st.one_of(
    st.just({}),
    st.just({"remove": True}),
    st.builds(lambda v: {"value": v}, values),
)
valid_events = st.builds(
    lambda e, extra: {**e, **extra},
    st.fixed_dictionaries(
        {"event": st.uuids().map(str), "timestamp": stamps, "user": users, "segment": segments}
    ),
    extras,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63),
    st.sampled_from([0, 1, -1, 1.0, 2.0, 1.5, 0.0, -0.0, 1e300]),
    st.floats(),
    texts,
    odd_uuids,
    odd_stamps,
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
KEYS = ["event", "timestamp", "user", "segment", "value", "remove", "extra", ""]


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    doc: Any = draw(valid_events)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        if not isinstance(doc, dict):
            break
        segment = doc.get("segment")
        kind = draw(st.integers(min_value=0, max_value=10))
        if kind == 0:
            doc[draw(st.sampled_from(KEYS))] = draw(junk)
        elif kind == 1:
            doc.pop(draw(st.sampled_from(KEYS)), None)
        elif kind == 2 and isinstance(segment, dict):
            segment[draw(st.sampled_from(["vendor", "name", "other"]))] = draw(junk)
        elif kind == 3 and isinstance(segment, dict) and draw(st.booleans()):
            segment["name"] = draw(odd_names)
        elif kind == 3 and isinstance(segment, dict):
            segment.pop(draw(st.sampled_from(["vendor", "name"])), None)
        elif kind == 4 and isinstance(segment, dict):
            segment["vendor"] = draw(
                st.sampled_from([0, -1, 1.0, 3.0, True, False, 2**31, 2.0**31 - 1, 2**64, "1"])
            )
        elif kind == 5:
            doc.update(value=draw(texts), remove=draw(st.sampled_from([True, False, 1, 1.0])))
        elif kind == 6:
            doc["remove"] = draw(st.sampled_from([False, 1, 1.0, "true", None, [True]]))
        elif kind == 7:
            doc["event"] = draw(odd_uuids)
        elif kind == 8:
            doc["timestamp"] = draw(odd_stamps)
        elif kind == 9:
            doc[draw(st.sampled_from(["user", "value"]))] = draw(odd_texts)
        else:
            doc = draw(st.one_of(junk, st.just([doc])))
    return doc


# The shipped schemas.


@pytest.mark.parametrize("name", ["event", "toggle", "membership", "profile", "toggle-register"])
def test_shipped_schemas_compile(name: str) -> None:
    assert compile_check(load_schema(SCHEMAS / f"{name}.schema.yaml")) is not None


def test_generated_documents_take_the_fast_path() -> None:
    sent = events.generate(400)
    derived = events.reference(sent)
    for name, docs in [
        ("event", sent),
        ("membership", derived["segment/memberships"]),
        ("profile", derived["segment/profiles"]),
        ("toggle", derived["segment/toggles"]),
    ]:
        schema = load_schema(SCHEMAS / f"{name}.schema.yaml")
        check, validator = compile_check(schema), schema.validator()
        assert check is not None and docs
        for doc in docs:
            assert validator.is_valid(doc), (name, doc)
            assert check(doc), (name, doc)


@settings(max_examples=300, deadline=None)
@given(doc=valid_events)
def test_valid_events_take_the_fast_path(doc: Any) -> None:
    assert FAST_EVENT is not None
    assert EVENT_VALIDATOR.is_valid(doc)
    assert FAST_EVENT(doc)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=mutated_events())
def test_fast_event_check_never_accepts_what_jsonschema_rejects(doc: Any) -> None:
    assert FAST_EVENT is not None
    if FAST_EVENT(doc):
        assert EVENT_VALIDATOR.is_valid(doc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.one_of(valid_events, mutated_events()), previous=mutated_events(), junk=junk)
def test_fast_toggle_check_never_accepts_what_jsonschema_rejects(
    doc: Any, previous: Any, junk: Any
) -> None:
    assert FAST_TOGGLE is not None
    if not isinstance(doc, dict):
        doc = {"doc": doc}
    for toggle in ({**doc, "previous": previous}, {**doc, "previous": previous, "x": junk}):
        if FAST_TOGGLE(toggle):
            assert TOGGLE_VALIDATOR.is_valid(toggle)


# Keyword by keyword, against jsonschema itself.

KEYWORD_SCHEMAS: list[dict[str, Any]] = [
    {"const": True},
    {"const": 1},
    {"const": [1, {"a": None}]},
    {"enum": ["a", "b"]},
    {"enum": [0, False, None, [1]]},
    {"type": "integer", "minimum": 1, "maximum": 10},
    {"exclusiveMinimum": 0, "exclusiveMaximum": 1.5},
    {"type": ["string", "null"], "minLength": 2, "maxLength": 3},
    {"pattern": "^a.c$"},
    {"pattern": "b"},
    {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 2},
    {"minProperties": 1, "maxProperties": 2},
    {"properties": {"a": {"type": "boolean"}}, "additionalProperties": {"type": "integer"}},
    {"allOf": [{"required": ["a"]}, {"properties": {"a": {"const": 1}}}]},
    {"anyOf": [{"type": "string"}, {"required": ["a"]}]},
    {"oneOf": [{"type": "integer"}, {"minimum": 2}]},
    {"not": {"anyOf": [{"type": "string", "format": "uuid"}, {"format": "date-time"}]}},
    {"not": {"required": ["a", "b"]}, "properties": {"a": {"type": "null"}}},
    {"type": "integer", "format": "int32", "minimum": 1},
    {"not": {"format": "int32"}},
    {"pattern": "^[^\\u0000]*$", "maxLength": 3, "errorMessage": "ignored"},
    {
        "allOf": [{"properties": {"a": True}}],
        "properties": {"b": True},
        "unevaluatedProperties": False,
    },
    {"$ref": "#/$defs/n", "$defs": {"n": {"type": "object", "properties": {"n": {"$ref": "#"}}}}},
]


# All but the last two (unevaluatedProperties, recursion) are built from parts the compiler
# treats as exact, which is what makes `not` and `oneOf` over them sound: there False means invalid.
EXACT = len(KEYWORD_SCHEMAS) - 2


@settings(max_examples=1000, deadline=None)
@given(index=st.integers(min_value=0, max_value=len(KEYWORD_SCHEMAS) - 1), doc=junk)
def test_keywords_never_accept_what_jsonschema_rejects(index: int, doc: Any) -> None:
    contents = KEYWORD_SCHEMAS[index]
    accepted = fast(contents)(doc)
    if accepted:
        assert valid(contents, doc)
    if index < EXACT:
        assert accepted == valid(contents, doc)


@pytest.mark.parametrize(
    ("contents", "doc", "expected"),
    [
        ({"const": True}, 1, False),  # jsonschema's equality keeps bool and int apart
        ({"const": 1}, True, False),
        ({"const": 1}, 1.0, True),
        ({"type": "integer"}, 1.0, True),
        ({"format": "int32"}, 1.0, False),  # ours: an integer written as one, of 32 bits
        ({"format": "int32"}, -(2**31), True),
        ({"format": "int32"}, 2**31, False),
        ({"format": "int32"}, True, True),  # formats ignore other types
        ({"format": "int32"}, "1.5", True),
        ({"type": "integer"}, True, False),
        ({"type": "number"}, False, False),
        ({"enum": [[1]]}, [True], False),
        ({"maxLength": 1}, "e\u0301", False),  # code points, not graphemes
        ({"format": "date-time"}, "2021-01-16t12:00:00z", True),  # jsonschema upper-cases
        ({"format": "date-time"}, "2016-12-31T23:59:60Z", False),  # no leap seconds
        ({"format": "date-time"}, "2021-01-16T12:00:00Z\n", True),  # `$` before a newline
        ({"format": "uuid"}, UUID.upper(), True),
        ({"format": "uuid"}, "{" + UUID + "}", False),
        ({"format": "uuid"}, "123456_8-1234-1234-1234-123456789abc", True),  # int(…, 16)
        ({"not": {"format": "uuid"}}, "123456_8-1234-1234-1234-123456789abc", False),
        ({"not": {"required": ["a"]}}, {"b": 1}, True),
        ({"pattern": "b"}, "abc", True),  # search, not match
        ({"oneOf": [{"type": "integer"}, {"minimum": 2}]}, 3, False),
    ],
)
def test_jsonschema_semantics(contents: dict[str, Any], doc: Any, expected: bool) -> None:
    assert valid(contents, doc) is expected
    assert fast(contents)(doc) is expected


@pytest.mark.parametrize(
    "contents",
    [
        {"type": "object", "propertyNames": {"maxLength": 3}},
        {"format": "email"},
        {"type": "strng"},
        {"properties": {"a": True}, "additionalProperties": True, "unevaluatedProperties": False},
        {"patternProperties": {"^a": True}, "unevaluatedProperties": False},
        {"if": {"required": ["a"]}, "then": {"required": ["b"]}},
        {"anyOf": [{"properties": {"a": True}}], "unevaluatedProperties": False},
        {"unevaluatedProperties": {"type": "string"}},
        {"not": {"properties": {"a": True}, "unevaluatedProperties": False}},
        {"$ref": "other.schema.yaml"},
    ],
)
def test_unsupported_schemas_compile_to_none(contents: dict[str, Any]) -> None:
    assert compile_check(inline(contents)) is None


def test_micro_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    """Not asserted: printed so a run shows what the fast path buys."""
    assert FAST_EVENT is not None and FAST_EVENT(TYPICAL)

    def rate(check: Any, seconds: float = 0.3) -> float:
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(100):
                check(TYPICAL)
            count += 100
        return count / elapsed

    fast_rate, slow_rate = rate(FAST_EVENT), rate(EVENT_VALIDATOR.is_valid)
    with capsys.disabled():
        print(
            f"\nevent validity: fast {fast_rate:,.0f}/s, jsonschema {slow_rate:,.0f}/s"
            f" ({fast_rate / slow_rate:.0f}x)"
        )
