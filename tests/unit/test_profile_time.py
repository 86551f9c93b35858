"""Exact instants and durations of the profile layer: parsing, calendar arithmetic, month ends."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from derivations.profiles.durations import Duration, add, parse_duration, subtract
from derivations.profiles.instants import (
    Instant,
    civil_from_days,
    days_from_civil,
    format_instant,
    from_epoch_ns,
    next_nanosecond,
    parse_instant,
    to_epoch_ns,
)
from derivations.profiles.values import instant_of as at

# --- instants ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:00Z", Instant(0)),
        ("1970-01-01T00:00:00.000Z", Instant(0)),
        ("1970-01-01T00:00:01.5Z", Instant(1, "5")),
        ("1970-01-01T00:00:01.50z", Instant(1, "5")),
        ("1970-01-01t02:00:00+02:00", Instant(0)),
        ("1969-12-31T23:59:59.25Z", Instant(-1, "25")),
        ("1970-01-01T00:00:00-00:30", Instant(1800)),
        ("2024-05-01T10:00:00Z", Instant(1714557600)),
        ("2016-12-31T23:59:60Z", Instant(1483228800)),  # a leap second is the next second
        ("0000-01-01T00:00:00Z", Instant(-62167219200)),
        ("2024-02-29T00:00:00Z", Instant(1709164800)),
    ],
)
def test_parse_instant(text: str, expected: Instant) -> None:
    assert parse_instant(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01",
        "2024-05-01T10:00Z",
        "2024-05-01T10:00:00",  # no offset: the time zone would be a guess
        "2024-05-01 10:00:00Z",
        "2024-13-01T10:00:00Z",
        "2023-02-29T10:00:00Z",
        "2024-04-31T10:00:00Z",
        "2024-05-01T24:00:00Z",
        "2024-05-01T10:60:00Z",
        "2024-05-01T10:00:61Z",
        "2024-05-01T10:00:00+24:00",
        "2024-05-01T10:00:00+01:60",
        "2024-05-01T10:00:00.Z",
        " 2024-05-01T10:00:00Z",
        "+2024-05-01T10:00:00Z",
        "2024-05-01T10:00:00\uff3a",
    ],
)
def test_parse_instant_rejects(text: str) -> None:
    assert parse_instant(text) is None


def test_instants_compare_exactly_at_any_precision() -> None:
    texts = [
        "2024-05-01T10:00:00.1234567891234Z",
        "2024-05-01T10:00:00.123456789123Z",
        "2024-05-01T12:00:00.12345678912340+02:00",
        "2024-05-01T10:00:00.12345678912Z",
        "2024-05-01T10:00:00.2Z",
    ]
    instants = [at(t) for t in texts]
    assert instants[0] == instants[2]
    assert instants[3] < instants[1] < instants[0] < instants[4]


@given(st.datetimes(timezones=st.just(UTC)))
def test_parse_matches_datetime(moment: datetime) -> None:
    instant = at(moment.isoformat().replace("+00:00", "Z"))
    micros = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert to_epoch_ns(instant) == micros * 1000


@given(st.integers(-(10**20), 10**20))
def test_epoch_nanoseconds_round_trip(nanoseconds: int) -> None:
    instant = from_epoch_ns(nanoseconds)
    assert to_epoch_ns(instant) == nanoseconds
    assert to_epoch_ns(next_nanosecond(instant)) == nanoseconds + 1


def test_sub_nanosecond_instants_round_up() -> None:
    instant = at("2024-05-01T10:00:00.0000000001Z")
    assert to_epoch_ns(instant) == 1714557600 * 10**9 + 1
    assert next_nanosecond(instant) == at("2024-05-01T10:00:00.000000001Z")
    assert instant < next_nanosecond(instant)


@pytest.mark.parametrize(
    "text",
    ["2024-05-01T10:00:00Z", "1969-12-31T23:59:59.25Z", "0001-01-01T00:00:00.000000001Z"],
)
def test_format_round_trip(text: str) -> None:
    assert format_instant(at(text)) == text


def test_format_refuses_years_rfc3339_cannot_write() -> None:
    with pytest.raises(ValueError, match="year 10000"):
        format_instant(add(at("9999-12-31T00:00:00Z"), Duration("1y", months=12)))


@given(st.integers(-(10**7), 10**7))
def test_calendar_round_trip_for_any_year(days: int) -> None:
    assert days_from_civil(*civil_from_days(days)) == days


def test_calendar_far_from_datetime_range() -> None:
    assert civil_from_days(days_from_civil(-4000, 2, 29)) == (-4000, 2, 29)
    assert civil_from_days(days_from_civil(12000, 12, 31) + 1) == (12001, 1, 1)


# --- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds", "months"),
    [
        ("30s", 30, 0),
        ("15m", 900, 0),
        ("12h", 43200, 0),
        ("3d", 259200, 0),
        ("2w", 1209600, 0),
        ("1mo", 0, 1),
        ("1q", 0, 3),
        ("1y", 0, 12),
        ("18mo", 0, 18),
        ("100d", 8640000, 0),
    ],
)
def test_parse_duration(text: str, seconds: int, months: int) -> None:
    assert parse_duration(text) == Duration(text, seconds=seconds, months=months)


@pytest.mark.parametrize("text", ["0d", "-1d", "1.5h", "1 d", "d", "1D", "1M", "01d", "1", 3, None])
def test_parse_duration_rejects(text: object) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize(
    ("start", "duration", "end"),
    [
        ("2024-05-01T10:00:00Z", "3d", "2024-05-04T10:00:00Z"),
        ("2024-05-01T10:00:00.5Z", "30s", "2024-05-01T10:00:30.5Z"),
        ("2024-01-31T10:00:00Z", "1mo", "2024-02-29T10:00:00Z"),  # leap year: Feb 29
        ("2023-01-31T10:00:00Z", "1mo", "2023-02-28T10:00:00Z"),
        ("2100-01-31T10:00:00Z", "1mo", "2100-02-28T10:00:00Z"),  # 2100 is not a leap year
        ("2000-01-31T10:00:00Z", "1mo", "2000-02-29T10:00:00Z"),  # 2000 is
        ("2024-03-31T23:59:59Z", "1mo", "2024-04-30T23:59:59Z"),
        ("2024-02-29T00:00:00Z", "1y", "2025-02-28T00:00:00Z"),
        ("2024-02-29T00:00:00Z", "4y", "2028-02-29T00:00:00Z"),
        ("2024-11-30T00:00:00Z", "1q", "2025-02-28T00:00:00Z"),
        ("2024-12-15T00:00:00Z", "1mo", "2025-01-15T00:00:00Z"),
        ("2024-05-01T10:00:00Z", "2w", "2024-05-15T10:00:00Z"),
        ("2024-01-31T23:00:00-05:00", "1mo", "2024-03-01T04:00:00Z"),  # months count in UTC
    ],
)
def test_add(start: str, duration: str, end: str) -> None:
    parsed = parse_duration(duration)
    assert parsed is not None
    assert add(at(start), parsed) == at(end)


@pytest.mark.parametrize(
    ("start", "duration", "end"),
    [
        ("2024-03-31T10:00:00Z", "1mo", "2024-02-29T10:00:00Z"),
        ("2023-03-31T10:00:00Z", "1mo", "2023-02-28T10:00:00Z"),
        ("2024-01-15T00:00:00Z", "1mo", "2023-12-15T00:00:00Z"),
        ("2025-02-28T00:00:00Z", "1y", "2024-02-28T00:00:00Z"),
        ("2024-05-31T00:00:00Z", "1q", "2024-02-29T00:00:00Z"),
        ("2024-05-04T10:00:00Z", "3d", "2024-05-01T10:00:00Z"),
    ],
)
def test_subtract(start: str, duration: str, end: str) -> None:
    parsed = parse_duration(duration)
    assert parsed is not None
    assert subtract(at(start), parsed) == at(end)


def reference_add_months(moment: datetime, months: int) -> datetime:
    """Month arithmetic the obvious way, with the standard library (years 1..9999)."""
    year, month0 = divmod(moment.year * 12 + moment.month - 1 + months, 12)
    day = min(moment.day, calendar.monthrange(year, month0 + 1)[1])
    return moment.replace(year=year, month=month0 + 1, day=day)


@given(
    st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC)),
    st.sampled_from(["1mo", "1q", "1y", "7mo", "25mo"]),
)
def test_calendar_steps_match_the_standard_library(moment: datetime, text: str) -> None:
    duration = parse_duration(text)
    assert duration is not None
    start = at(moment.isoformat().replace("+00:00", "Z"))
    expected = reference_add_months(moment, duration.months)
    assert add(start, duration) == at(expected.isoformat().replace("+00:00", "Z"))
    back = reference_add_months(moment, -duration.months)
    assert subtract(start, duration) == at(back.isoformat().replace("+00:00", "Z"))
    assert subtract(add(start, duration), duration) <= start  # clamping only moves back
