"""Property types: what each normalises to, and the exact `invalid` reason of what it rejects."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from derivations.profiles.values import TYPES, Invalid, normalise, order_key

ACCEPTED: list[tuple[str, Any, Any]] = [
    ("string", "hello", "hello"),
    ("string", "", ""),
    ("string", "  spaced  ", "  spaced  "),
    ("string", "a" * 1000, "a" * 1000),
    ("string", 123, "123"),  # /userId may be an integer
    ("string", 12.5, "12.5"),
    ("string", True, "true"),
    ("string", "\u00e9\U0001f600", "\u00e9\U0001f600"),
    ("integer", 3, 3),
    ("integer", -3, -3),
    ("integer", 3.0, 3),
    ("integer", "3", 3),
    ("integer", " -3 ", -3),
    ("integer", "+3", 3),
    ("integer", "3.0", 3),
    ("integer", "1e3", 1000),
    ("integer", 2**63 - 1, 2**63 - 1),
    ("integer", -(2**63), -(2**63)),
    ("float", 12.5, 12.5),
    ("float", "12.5", 12.5),
    ("float", 3, 3.0),
    ("float", "3", 3.0),
    ("float", ".5", 0.5),
    ("float", "5.", 5.0),
    ("float", "-1.5e-3", -0.0015),
    ("float", -0.0, 0.0),
    ("float", "-0", 0.0),
    ("float", 1e308, 1e308),
    ("boolean", True, True),
    ("boolean", False, False),
    ("boolean", "true", True),
    ("boolean", "false", False),
    ("boolean", "TRUE", True),
    ("boolean", "False", False),
    ("date", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z"),
    ("date", "2024-05-01T12:00:00.123+02:00", "2024-05-01T12:00:00.123+02:00"),
    ("date", "2024-05-01T10:00:00-15:59", "2024-05-01T10:00:00-15:59"),
    ("email", "ann@example.com", "ann@example.com"),
    ("email", "  Ann.Lee+tag@Example.COM ", "Ann.Lee+tag@example.com"),
    ("email", "ann@sub.m\u00fcnchen.de", "ann@sub.m\u00fcnchen.de"),
    ("email", "ann@EXAMPLE.co.uk", "ann@example.co.uk"),
    ("url", "https://example.com", "https://example.com"),
    ("url", " HTTPS://Example.COM/Path?Q=A#Frag ", "https://example.com/Path?Q=A#Frag"),
    ("url", "http://User@Example.com:8080/x", "http://User@example.com:8080/x"),
    ("url", "myapp://Settings", "myapp://settings"),
    ("phoneNumber", "+14155550123", "+14155550123"),
    ("phoneNumber", "+1 (415) 555-0123", "+14155550123"),
    ("phoneNumber", "+44 20.7946.0958", "+442079460958"),
    ("phoneNumber", "0044 20 7946 0958", "+442079460958"),
    ("phoneNumber", "+12345678", "+12345678"),
    ("phoneNumber", "+123456789012345", "+123456789012345"),
]


@pytest.mark.parametrize(("kind", "raw", "expected"), ACCEPTED)
def test_normalise_accepts(kind: str, raw: Any, expected: Any) -> None:
    value = normalise(kind, raw)
    assert not isinstance(value, Invalid), value
    assert orjson.dumps(value) == orjson.dumps(expected)  # exact: 3 is not 3.0 nor True


DATE_WHY = " (expected RFC 3339 like 2024-05-01T10:00:00Z)"
URL_WHY = " (expected scheme://host, like https://example.com/)"
PHONE_WHY = " (expected + and 8 to 15 digits, like +14155550123)"
REJECTED: list[tuple[str, Any, str]] = [
    ("string", None, "null is not a string"),
    ("string", [1, 2], "[1,2] is not a string"),
    ("string", {"a": 1}, '{"a":1} is not a string'),
    ("string", "a" * 1001, f"'{'a' * 60}...' is not a string (1,001 characters, at most 1,000)"),
    ("string", "nul\x00", "'nul\x00' is not a string (contains U+0000)"),
    ("string", "\ud800", "'\ud800' is not a string (contains a lone surrogate)"),
    ("integer", 3.5, "3.5 is not an integer"),
    ("integer", "3.5", "'3.5' is not an integer"),
    ("integer", "abc", "'abc' is not an integer"),
    ("integer", True, "true is not an integer"),
    ("integer", "", "'' is not an integer"),
    ("integer", "1,000", "'1,000' is not an integer"),
    ("integer", "0x10", "'0x10' is not an integer"),
    ("integer", 2**63, "9223372036854775808 is not an integer (outside the 64-bit range)"),
    ("integer", "-1e19", "'-1e19' is not an integer (outside the 64-bit range)"),
    ("integer", [3], "[3] is not an integer"),
    ("float", "abc", "'abc' is not a float"),
    ("float", "NaN", "'NaN' is not a float"),
    ("float", "inf", "'inf' is not a float"),
    ("float", "1_000", "'1_000' is not a float"),
    ("float", "1e999", "'1e999' is not a float (out of range)"),
    ("float", 10**400, f"{str(10**400)[:60]}... is not a float (out of range)"),
    ("float", math.nan, "NaN is not a float"),
    ("float", math.inf, "Infinity is not a float"),
    ("float", False, "false is not a float"),
    ("float", None, "null is not a float"),
    ("boolean", 1, "1 is not a boolean"),
    ("boolean", "yes", "'yes' is not a boolean"),
    ("boolean", "1", "'1' is not a boolean"),
    ("boolean", None, "null is not a boolean"),
    ("date", "abc", "'abc' is not a date" + DATE_WHY),
    ("date", "2024-05-01", "'2024-05-01' is not a date" + DATE_WHY),
    (
        "date",
        "2024-05-01T10:00:00",
        "'2024-05-01T10:00:00' is not a date" + DATE_WHY,
    ),
    ("date", 1714557600, "1714557600 is not a date" + DATE_WHY),
    (
        "date",
        "2024-05-01T10:00:00+16:00",
        "'2024-05-01T10:00:00+16:00' is not a date "
        "(Postgres timestamptz takes years from 1, offsets to 15:59)",
    ),
    (
        "date",
        "0000-05-01T10:00:00Z",
        "'0000-05-01T10:00:00Z' is not a date "
        "(Postgres timestamptz takes years from 1, offsets to 15:59)",
    ),
    ("email", "abc", "'abc' is not an email"),
    ("email", "ann@localhost", "'ann@localhost' is not an email"),
    ("email", "@example.com", "'@example.com' is not an email"),
    ("email", "ann@", "'ann@' is not an email"),
    ("email", "a b@example.com", "'a b@example.com' is not an email"),
    ("email", "a@b@example.com", "'a@b@example.com' is not an email"),
    ("email", "ann@-example.com", "'ann@-example.com' is not an email"),
    ("email", "ann@exa_mple.com", "'ann@exa_mple.com' is not an email"),
    ("email", "ann@example..com", "'ann@example..com' is not an email"),
    ("email", "ann@1.2.3.4", "'ann@1.2.3.4' is not an email"),
    ("email", 42, "42 is not an email"),
    ("url", "example.com", "'example.com' is not a url" + URL_WHY),
    ("url", "https://", "'https://' is not a url" + URL_WHY),
    ("url", "https:///path", "'https:///path' is not a url" + URL_WHY),
    ("url", "https://exa mple.com", "'https://exa mple.com' is not a url" + URL_WHY),
    ("url", "1http://x.com", "'1http://x.com' is not a url" + URL_WHY),
    ("url", 3, "3 is not a url"),
    ("phoneNumber", "4155550123", "'4155550123' is not a phoneNumber" + PHONE_WHY),
    ("phoneNumber", "+1234567", "'+1234567' is not a phoneNumber" + PHONE_WHY),
    ("phoneNumber", "+1234567890123456", "'+1234567890123456' is not a phoneNumber" + PHONE_WHY),
    ("phoneNumber", "+0123456789", "'+0123456789' is not a phoneNumber" + PHONE_WHY),
    ("phoneNumber", "+1 415 555 ext 4", "'+1 415 555 ext 4' is not a phoneNumber" + PHONE_WHY),
    ("phoneNumber", 14155550123, "14155550123 is not a phoneNumber"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "raw", "reason"), REJECTED)
def test_normalise_rejects_with_reason(kind: str, raw: Any, reason: str) -> None:
    assert normalise(kind, raw) == Invalid(reason)


def test_every_type_is_covered() -> None:
    assert {kind for kind, _, _ in ACCEPTED} == set(TYPES) == {kind for kind, _, _ in REJECTED}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=5,
)


@given(st.sampled_from(TYPES), JSON)
def test_normalise_never_raises_and_is_idempotent(kind: str, raw: Any) -> None:
    value = normalise(kind, raw)
    if isinstance(value, Invalid):
        assert value.reason
        return
    orjson.dumps(value)  # storable as it is
    assert normalise(kind, value) == value
    order_key(kind)(value)  # ordered without error


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_and_their_text_agree(number: float) -> None:
    assert normalise("float", repr(number)) == normalise("float", number)
