"""Durations of relative rules (`30s`, `15m`, `12h`, `3d`, `2w`, `1mo`, `1q`, `1y`) and their
exact arithmetic on instants.

Seconds, minutes, hours, days and weeks are fixed lengths (a day is 86,400 s: instants are UTC and
carry no time zone, so there are no daylight-saving days). Months, quarters (3 months) and years
(12 months) are calendar lengths, counted in UTC: the same day of the month N months on, at the
same time of day; a day the target month does not have becomes its last day, like most calendars
(Jan 31 + 1mo = Feb 29 in 2024 and Feb 28 in 2023; Feb 29 2024 + 1y = Feb 28 2025). So calendar
steps do not always undo each other: Mar 31 - 1mo + 1mo = Mar 29.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .instants import DAY, Instant, civil_from_days, days_from_civil, days_in_month

_FIXED = {"s": 1, "m": 60, "h": 3600, "d": DAY, "w": 7 * DAY}
_MONTHS = {"mo": 1, "q": 3, "y": 12}
_TEXT = re.compile(r"([1-9][0-9]*)(mo|[smhdwqy])", re.ASCII)
EXAMPLES = "'30s', '15m', '12h', '3d', '2w', '1mo', '1q' or '1y'"


@dataclass(frozen=True)
class Duration:
    """A positive length of time: whole seconds or whole calendar months (never both)."""

    text: str
    seconds: int = 0
    months: int = 0


def parse_duration(text: object) -> Duration | None:
    """The duration `text` spells (a whole number >= 1 and a unit), or None."""
    if not isinstance(text, str):
        return None
    match = _TEXT.fullmatch(text)
    if match is None:
        return None
    amount, unit = int(match.group(1)), match.group(2)
    if unit in _MONTHS:
        return Duration(text, months=amount * _MONTHS[unit])
    return Duration(text, seconds=amount * _FIXED[unit])


def describe_bad(text: object) -> str:
    """Why `text` is not a duration, worded for a catalog problem."""
    shown = f"'{text}'" if isinstance(text, str) else f"{text!r}"
    return f"{shown} is not a duration (expected a whole number >= 1 and a unit, like {EXAMPLES})"


def add(instant: Instant, duration: Duration) -> Instant:
    """`instant` plus `duration`, exactly."""
    return _shift(instant, duration, 1)


def subtract(instant: Instant, duration: Duration) -> Instant:
    """`instant` minus `duration`, exactly."""
    return _shift(instant, duration, -1)


def _shift(instant: Instant, duration: Duration, sign: int) -> Instant:
    if not duration.months:
        return Instant(instant.seconds + sign * duration.seconds, instant.fraction)
    days, clock = divmod(instant.seconds, DAY)
    year, month, day = civil_from_days(days)
    year, month0 = divmod(year * 12 + month - 1 + sign * duration.months, 12)
    day = min(day, days_in_month(year, month0 + 1))
    return Instant(days_from_civil(year, month0 + 1, day) * DAY + clock, instant.fraction)
