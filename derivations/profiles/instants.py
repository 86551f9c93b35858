"""RFC 3339 date-times as exact instants, and the proleptic Gregorian calendar for any year.

An `Instant` is (whole seconds since 1970-01-01T00:00:00Z, rounded down; the fraction's digits
without trailing zeros). Tuples compare like the instants they stand for: digit strings without
trailing zeros order like the fractions they spell ('45' < '5' as 0.45 < 0.5). So two texts are the
same instant exactly when their `Instant`s are equal, at any precision, and nothing is a float.
The JSON form of an `Instant` is the list `[seconds, "fraction"]`.

The calendar works for every year (not only datetime's 1..9999): a Gregorian 400-year cycle has a
whole number of days (146,097) and the same leap years, so any year is shifted into 1..400, done
with the standard library, and shifted back. Durations of months can then never overflow.
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache
from typing import NamedTuple

DAY = 86_400
_CYCLE_DAYS = 146_097
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_NANO_DIGITS = 9

_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:([Zz])|([+-])(\d\d):(\d\d))",
    re.ASCII,
)


class Instant(NamedTuple):
    """A point in time, exact: whole seconds since the epoch (floor) and fraction digits."""

    seconds: int
    fraction: str = ""


def is_leap(year: int) -> bool:
    """Gregorian leap year (proleptic: also before 1582 and for year 0)."""
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def days_in_month(year: int, month: int) -> int:
    """28 to 31."""
    if month == 2:
        return 29 if is_leap(year) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a valid calendar date, for any year."""
    cycles, year_in_cycle = divmod(year - 1, 400)
    ordinal = date(year_in_cycle + 1, month, day).toordinal() + cycles * _CYCLE_DAYS
    return ordinal - _EPOCH_ORDINAL


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count since 1970-01-01, for any year."""
    cycles, rest = divmod(days + _EPOCH_ORDINAL - 1, _CYCLE_DAYS)
    found = date.fromordinal(rest + 1)
    return found.year + 400 * cycles, found.month, found.day


@lru_cache(maxsize=1 << 16)
def parse_instant(text: str) -> Instant | None:
    """The instant an RFC 3339 date-time stands for, or None if `text` is not one.

    Strict: a full date, `T`, a time with seconds, and an offset (`Z` or +hh:mm) are required.
    A leap second (`:60`) is taken as the first second after it. Cached: rules read the same
    stored texts again and again.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, _, sign, offset_hours, offset_minutes = (
        match.groups()
    )
    days = _days(int(year), int(month), int(day))
    hour, minute, second = int(hour), int(minute), int(second)
    if days is None or hour > 23 or minute > 59 or second > 60:
        return None
    offset = 0
    if sign is not None:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            return None
        offset = (int(offset_hours) * 3600 + int(offset_minutes) * 60) * (-1 if sign == "-" else 1)
    clock = hour * 3600 + minute * 60 + second
    return Instant(days * DAY + clock - offset, (fraction or "").rstrip("0"))


@lru_cache(maxsize=1 << 12)
def _days(year: int, month: int, day: int) -> int | None:
    """`days_from_civil`, or None for a day the month does not have (events share few days)."""
    if not (1 <= month <= 12 and 1 <= day <= days_in_month(year, month)):
        return None
    return days_from_civil(year, month, day)


def from_epoch_ns(nanoseconds: int) -> Instant:
    """The instant `nanoseconds` after the epoch (what `time.time_ns()` returns)."""
    seconds, nanos = divmod(nanoseconds, 10**_NANO_DIGITS)
    return Instant(seconds, f"{nanos:09d}".rstrip("0"))


def to_epoch_ns(instant: Instant) -> int:
    """Nanoseconds since the epoch, rounded up: a timer set to it never fires early."""
    digits = instant.fraction[:_NANO_DIGITS].ljust(_NANO_DIGITS, "0")
    nanos: int = instant.seconds * 10**_NANO_DIGITS + int(digits)
    return nanos + (1 if len(instant.fraction) > _NANO_DIGITS else 0)


def next_nanosecond(instant: Instant) -> Instant:
    """The first whole nanosecond strictly after `instant`.

    Where a rule's new outcome begins just after a boundary (an open end such as 'before
    now - d'), there is no first instant of it; this is the one the rules use instead.
    """
    return from_epoch_ns(to_epoch_ns(instant) + (0 if len(instant.fraction) > _NANO_DIGITS else 1))


def add_seconds(instant: Instant, seconds: int) -> Instant:
    """`instant` moved by a whole number of seconds (negative moves back)."""
    return Instant(instant.seconds + seconds, instant.fraction)


def format_instant(instant: Instant) -> str:
    """RFC 3339 text in UTC (`Z`), with the fraction's digits if there are any.

    Raises ValueError for years outside 0000..9999, which RFC 3339 cannot write.
    """
    days, clock = divmod(instant.seconds, DAY)
    year, month, day = civil_from_days(days)
    if not 0 <= year <= 9999:
        raise ValueError(f"year {year} cannot be written in RFC 3339")
    hours, rest = divmod(clock, 3600)
    fraction = f".{instant.fraction}" if instant.fraction else ""
    return (
        f"{year:04d}-{month:02d}-{day:02d}T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}{fraction}Z"
    )
