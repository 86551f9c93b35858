"""Rule operators (SPEC 8.4): every operator on every type, missing values, arrays, rule errors."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from derivations.profiles.operators import (
    NEGATIVE,
    NO_VALUE,
    OPERATORS,
    RuleError,
    compile_rule,
    like_pattern,
    operators_for,
)
from derivations.profiles.values import TEXT_TYPES, TYPES
from derivations.profiles.values import instant_of as at

NOW = at("2024-05-04T10:00:00Z")

Case = tuple[str, str, Any, Any, bool]  # kind, op, rule value, stored value, expected

TEXT_SAMPLES = {
    "string": ("Alpha Beta", "gamma"),
    "email": ("Ann@example.com", "bob@test.org"),
    "url": ("https://example.com/Alpha", "ftp://test.org/"),
    "phoneNumber": ("+14155550123", "+442079460958"),
}


def text_cases(kind: str) -> list[Case]:
    """The text operators on two stored values of `kind`, the same way for every text type."""
    a, b = TEXT_SAMPLES[kind]
    cased = [(kind, "like", a[:3].swapcase() + "%", a, False)] if a[:3].swapcase() != a[:3] else []
    return [
        *cased,
        (kind, "exists", NO_VALUE, a, True),
        (kind, "notExists", NO_VALUE, a, False),
        (kind, "eq", a, a, True),
        (kind, "eq", a, b, False),
        (kind, "ne", a, b, True),
        (kind, "ne", a, a, False),
        (kind, "in", [b, a], a, True),
        (kind, "in", [b], a, False),
        (kind, "notIn", [b], a, True),
        (kind, "notIn", [a, b], a, False),
        (kind, "like", a[:3] + "%", a, True),
        (kind, "like", a[:3] + "%", b, False),
        (kind, "like", "_" + a[1:], a, True),
        (kind, "notLike", a[:3] + "%", b, True),
        (kind, "notLike", a[:3] + "%", a, False),
        (kind, "iLike", a[:3].swapcase() + "%", a, True),
        (kind, "iLike", a.upper(), a, True),
        (kind, "iLike", b.upper(), a, False),
        (kind, "notILike", a.upper(), a, False),
        (kind, "notILike", b.upper(), a, True),
        (kind, "startsWith", a[:3].swapcase(), a, True),
        (kind, "startsWith", a[1:4], a, False),
        (kind, "endsWith", a[-3:].swapcase(), a, True),
        (kind, "endsWith", a[:3], a, False),
        (kind, "contains", a[2:6].swapcase(), a, True),
        (kind, "contains", a[2:6], b, False),
    ]


MAY = ["2024-05-01T00:00:00Z", "2024-05-31T23:59:59Z"]
TWO = "value must be a list of two values [low, high]"
SPECIFIC: list[Case] = [
    # string: LIKE is SQL's, anchored, with regular-expression characters taken literally
    ("string", "eq", "Alpha", "alpha", False),
    ("string", "like", "a_c", "abc", True),
    ("string", "like", "a_c", "ac", False),
    ("string", "like", "a_c", "abbc", False),
    ("string", "like", "a%c", "a\nb\nc", True),
    ("string", "like", "%", "", True),
    ("string", "like", "abc", "xabcx", False),
    ("string", "like", "a.c", "abc", False),
    ("string", "like", "a.c", "a.c", True),
    ("string", "like", "(x)+[y]*$^|?{2}", "(x)+[y]*$^|?{2}", True),
    ("string", "like", "50\\%", "50%", True),
    ("string", "like", "50\\%", "500", False),
    ("string", "like", "a\\_c", "abc", False),
    ("string", "like", "a\\\\c", "a\\c", True),
    ("string", "iLike", "%\u00c9T\u00c9%", "un \u00e9t\u00e9 chaud", True),
    ("string", "contains", "", "anything", True),
    # normalised rule values: the stored value is normalised, so is the rule's
    ("email", "eq", "Ann@EXAMPLE.com", "Ann@example.com", True),
    ("email", "eq", "ann@example.com", "Ann@example.com", False),  # the local part keeps case
    ("email", "in", [" Ann@Example.COM "], "Ann@example.com", True),
    ("email", "iLike", "%@example.com", "Ann@example.com", True),
    ("url", "eq", "HTTPS://EXAMPLE.com/Alpha", "https://example.com/Alpha", True),
    ("url", "eq", "https://example.com/alpha", "https://example.com/Alpha", False),
    ("phoneNumber", "eq", "+1 (415) 555-0123", "+14155550123", True),
    ("phoneNumber", "notIn", ["0044 20 7946 0958"], "+442079460958", False),
    # numbers
    ("integer", "exists", NO_VALUE, 0, True),
    ("integer", "notExists", NO_VALUE, 0, False),
    ("integer", "eq", 3, 3, True),
    ("integer", "eq", "3", 3, True),
    ("integer", "eq", 3.0, 3, True),
    ("integer", "eq", 3, 4, False),
    ("integer", "ne", 3, 4, True),
    ("integer", "ne", 3, 3, False),
    ("integer", "in", [1, "2"], 2, True),
    ("integer", "in", [1, 2], 3, False),
    ("integer", "notIn", [1, 2], 3, True),
    ("integer", "notIn", [1, 2], 1, False),
    ("integer", "gt", 2, 3, True),
    ("integer", "gt", 3, 3, False),
    ("integer", "gte", 3, 3, True),
    ("integer", "gte", 4, 3, False),
    ("integer", "lt", 4, 3, True),
    ("integer", "lt", 3, 3, False),
    ("integer", "lte", 3, 3, True),
    ("integer", "lte", 2, 3, False),
    ("integer", "between", [1, 3], 1, True),
    ("integer", "between", [1, 3], 3, True),
    ("integer", "between", [1, 3], 4, False),
    ("integer", "between", [1, 3], 0, False),
    ("integer", "between", [-5, -5], -5, True),
    ("float", "exists", NO_VALUE, 0.0, True),
    ("float", "notExists", NO_VALUE, 0.0, False),
    ("float", "eq", 0.1, 0.1, True),
    ("float", "eq", "12.5", 12.5, True),
    ("float", "eq", 50, 50.0, True),
    ("float", "eq", 0.1, 0.30000000000000004 - 0.2, False),
    ("float", "ne", 50, 50.5, True),
    ("float", "ne", 50, 50.0, False),
    ("float", "in", [1, 2.5], 2.5, True),
    ("float", "notIn", [1, 2.5], 2.5, False),
    ("float", "notIn", [1, 2.5], 3.0, True),
    ("float", "in", [1, 2.5], 3.0, False),
    ("float", "gt", 50, 50.5, True),
    ("float", "gt", "50", 50.0, False),
    ("float", "gte", 50, 50.0, True),
    ("float", "gte", 50, 49.99, False),
    ("float", "lt", 0, -0.5, True),
    ("float", "lt", 0, 0.0, False),
    ("float", "lte", 1e-300, 0.0, True),
    ("float", "lte", -1e-300, 0.0, False),
    ("float", "between", [0.5, 1.5], 1.5, True),
    ("float", "between", [0.5, 1.5], 1.5000000000000002, False),
    # booleans
    ("boolean", "exists", NO_VALUE, False, True),
    ("boolean", "notExists", NO_VALUE, False, False),
    ("boolean", "eq", True, True, True),
    ("boolean", "eq", "false", False, True),
    ("boolean", "eq", True, False, False),
    ("boolean", "ne", True, False, True),
    ("boolean", "ne", True, True, False),
    ("boolean", "in", [True], True, True),
    ("boolean", "in", [True], False, False),
    ("boolean", "notIn", ["TRUE"], False, True),
    ("boolean", "notIn", [True, False], False, False),
    # dates, by instant
    ("date", "exists", NO_VALUE, "2024-05-01T10:00:00Z", True),
    ("date", "notExists", NO_VALUE, "2024-05-01T10:00:00Z", False),
    ("date", "eq", "2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00Z", True),
    ("date", "eq", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00.000000001Z", False),
    ("date", "ne", "2024-05-01T10:00:00.000Z", "2024-05-01T10:00:00Z", False),
    ("date", "ne", "2024-05-01T10:00:00Z", "2024-05-02T10:00:00Z", True),
    ("date", "in", ["2024-05-01T06:00:00-04:00"], "2024-05-01T10:00:00Z", True),
    ("date", "in", ["2024-05-01T06:00:00Z"], "2024-05-01T10:00:00Z", False),
    ("date", "notIn", ["2024-05-01T06:00:00Z"], "2024-05-01T10:00:00Z", True),
    ("date", "notIn", ["2024-05-01T10:00:00.0Z"], "2024-05-01T10:00:00Z", False),
    ("date", "gt", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00.001Z", True),
    ("date", "gt", "2024-05-01T10:00:00Z", "2024-05-01T11:00:00+01:00", False),
    ("date", "gte", "2024-05-01T10:00:00Z", "2024-05-01T11:00:00+01:00", True),
    ("date", "gte", "2024-05-01T10:00:00Z", "2024-05-01T09:59:59.999Z", False),
    ("date", "lt", "2024-05-01T10:00:00Z", "2024-05-01T09:59:59.999999999999Z", True),
    ("date", "lt", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z", False),
    ("date", "lte", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z", True),
    ("date", "lte", "2024-05-01T10:00:00Z", "2024-05-01T10:00:01Z", False),
    ("date", "between", MAY, "2024-05-31T23:59:59Z", True),
    ("date", "between", MAY, "2024-06-01T00:00:00Z", False),
    # relative, at NOW = 2024-05-04T10:00:00Z: in (now - d, now], [now, now + d), before now - d
    ("date", "inTheLast", "3d", "2024-05-01T10:00:00Z", False),
    ("date", "inTheLast", "3d", "2024-05-01T10:00:00.001Z", True),
    ("date", "inTheLast", "3d", "2024-05-04T10:00:00Z", True),
    ("date", "inTheLast", "3d", "2024-05-04T10:00:00.001Z", False),
    ("date", "inTheLast", "1mo", "2024-04-04T10:00:01Z", True),
    ("date", "inTheLast", "1mo", "2024-04-04T10:00:00Z", False),
    ("date", "inTheNext", "1d", "2024-05-04T10:00:00Z", True),
    ("date", "inTheNext", "1d", "2024-05-05T09:59:59.999Z", True),
    ("date", "inTheNext", "1d", "2024-05-05T10:00:00Z", False),
    ("date", "inTheNext", "1d", "2024-05-04T09:59:59Z", False),
    ("date", "notInTheLast", "30d", "2024-04-04T10:00:00Z", False),
    ("date", "notInTheLast", "30d", "2024-04-04T09:59:59.999Z", True),
    ("date", "notInTheLast", "30d", "2024-05-04T11:00:00Z", False),
    ("date", "notInTheLast", "1y", "2023-05-04T09:59:59Z", True),
]  # fmt: skip

CASES: list[Case] = [case for kind in TEXT_SAMPLES for case in text_cases(kind)] + SPECIFIC


def rule_id(case: Case) -> str:
    kind, op, value, stored, expected = case
    shown = "-" if value is NO_VALUE else repr(value)
    return f"{kind}-{op}-{shown}-{stored!r}-{expected}"


@pytest.mark.parametrize("case", CASES, ids=rule_id)
def test_operator_on_a_value(case: Case) -> None:
    kind, op, value, stored, expected = case
    assert compile_rule(kind, op, value).holds(stored, NOW) is expected


def test_cases_cover_every_operator_of_every_type() -> None:
    covered = {(kind, op) for kind, op, _, _, _ in CASES}
    assert covered == {(kind, op) for kind in TYPES for op in operators_for(kind)}
    for kind, op, *_ in CASES:  # and both outcomes (exists on None: see the missing tests)
        if op in ("exists", "notExists"):
            continue
        outcomes = {expected for k, o, _, _, expected in CASES if (k, o) == (kind, op)}
        assert outcomes == {True, False}, (kind, op)


def test_operators_by_type() -> None:
    every = {"exists", "notExists", "eq", "ne", "in", "notIn"}
    order = {"gt", "gte", "lt", "lte", "between"}
    text = {"like", "notLike", "iLike", "notILike", "startsWith", "endsWith", "contains"}
    relative = {"inTheLast", "inTheNext", "notInTheLast"}
    assert set(operators_for("boolean")) == every
    assert set(operators_for("integer")) == set(operators_for("float")) == every | order
    assert set(operators_for("date")) == every | order | relative
    for kind in TEXT_TYPES:
        assert set(operators_for(kind)) == every | text
    assert set(OPERATORS) == every | order | text | relative


# --- missing values and arrays -------------------------------------------------------------------


def sample_rules() -> list[tuple[str, str, Any]]:
    """One valid rule value for every (type, operator)."""
    seen: dict[tuple[str, str], Any] = {}
    for kind, op, value, _, _ in CASES:
        seen.setdefault((kind, op), value)
    return [(kind, op, value) for (kind, op), value in seen.items()]


@pytest.mark.parametrize(("kind", "op", "value"), sample_rules())
def test_missing_value_matches_only_not_exists(kind: str, op: str, value: Any) -> None:
    assert compile_rule(kind, op, value).holds(None, NOW) is (op == "notExists")


@pytest.mark.parametrize(("kind", "op", "value"), sample_rules())
def test_empty_array_matches_not_exists_and_the_negative_operators(
    kind: str, op: str, value: Any
) -> None:
    rule = compile_rule(kind, op, value, array=True)
    expected = op == "notExists" or op in NEGATIVE
    assert rule.holds(None, NOW) is expected
    assert rule.holds([], NOW) is expected


def grouped_cases() -> list[tuple[str, str, Any, list[tuple[Any, bool]]]]:
    """Cases sharing one rule, with their stored values and outcomes."""
    groups: dict[tuple[str, str, str], list[Case]] = defaultdict(list)
    for case in CASES:
        groups[(case[0], case[1], repr(case[2]))].append(case)
    return [
        (cases[0][0], cases[0][1], cases[0][2], [(c[3], c[4]) for c in cases])
        for cases in groups.values()
    ]


@pytest.mark.parametrize(("kind", "op", "value", "outcomes"), grouped_cases())
def test_arrays_any_element_for_positive_no_element_for_negative(
    kind: str, op: str, value: Any, outcomes: list[tuple[Any, bool]]
) -> None:
    rule = compile_rule(kind, op, value, array=True)
    scalar = compile_rule(kind, op, value)
    everything = [stored for stored, _ in outcomes]
    for stored, expected in outcomes:
        assert rule.holds([stored], NOW) is expected
        for other, other_expected in outcomes:
            pair = rule.holds([stored, other], NOW)
            if op in ("exists", "notExists"):
                assert pair is (op == "exists")
            elif op in NEGATIVE:  # no element matches the positive counterpart
                assert pair is (expected and other_expected)
            else:
                assert pair is (expected or other_expected)
    if op not in ("exists", "notExists"):
        combine = all if op in NEGATIVE else any
        held = [scalar.holds(s, NOW) for s in everything]
        assert rule.holds(everything, NOW) is combine(held)


# --- patterns and rule values --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "regex"),
    [
        ("a%b_c", "a.*b.c"),
        ("100\\%", "100%"),
        ("a.b", "a\\.b"),
        ("\\\\", "\\\\"),
        ("", ""),
    ],
)
def test_like_pattern(pattern: str, regex: str) -> None:
    assert like_pattern(pattern).pattern == regex


@pytest.mark.parametrize(
    ("kind", "op", "value", "pointer", "message"),
    [
        ("float", "gt", "abc", "/value", "value 'abc' is not a float"),
        ("integer", "eq", 3.5, "/value", "value 3.5 is not an integer"),
        ("integer", "eq", [1, 2], "/value", "value [1,2] is not an integer"),
        ("boolean", "eq", 1, "/value", "value 1 is not a boolean"),
        ("email", "eq", "nope", "/value", "value 'nope' is not an email"),
        ("date", "gt", "yesterday", "/value",
         "value 'yesterday' is not a date (expected RFC 3339 like 2024-05-01T10:00:00Z)"),
        ("integer", "in", [1, "x"], "/value/1", "value 'x' is not an integer"),
        ("integer", "in", [], "/value", "value must be a non-empty list of values"),
        ("integer", "notIn", 3, "/value", "value must be a non-empty list of values"),
        ("integer", "between", [1], "/value", TWO),
        ("integer", "between", [1, 2, 3], "/value", TWO),
        ("integer", "between", 5, "/value", TWO),
        ("integer", "between", [3, 1], "/value", "value [low, high] has low above high"),
        ("float", "between", [0, "x"], "/value/1", "value 'x' is not a float"),
        ("date", "inTheLast", "3 days", "/value",
         "'3 days' is not a duration (expected a whole number >= 1 and a unit, like "
         "'30s', '15m', '12h', '3d', '2w', '1mo', '1q' or '1y')"),
        ("date", "inTheNext", 3, "/value",
         "3 is not a duration (expected a whole number >= 1 and a unit, like "
         "'30s', '15m', '12h', '3d', '2w', '1mo', '1q' or '1y')"),
        ("string", "like", "50\\", "/value", "pattern must not end with the escape character '\\'"),
        ("string", "like", 5, "/value", "value must be a string"),
        ("string", "contains", None, "/value", "value must be a string"),
        ("string", "exists", "x", "/value", "'exists' takes no value"),
        ("string", "eq", NO_VALUE, "", "'eq' needs a value"),
        ("string", "gt", "a", "/op", "operator 'gt' does not fit type 'string'"),
        ("boolean", "like", "a", "/op", "operator 'like' does not fit type 'boolean'"),
        ("integer", "inTheLast", "3d", "/op", "operator 'inTheLast' does not fit type 'integer'"),
        ("string", "equals", "a", "/op", "unknown operator 'equals'"),
    ],
)  # fmt: skip
def test_rule_errors(kind: str, op: str, value: Any, pointer: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        compile_rule(kind, op, value)
    assert (caught.value.pointer, caught.value.message) == (pointer, message)
