"""RFC 3339 date-times as exact instants, so `minimize`/`maximize` of `format: date-time` values
compare moments rather than text (offsets differ, and fractions may be longer than microseconds).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

_DATE_TIME = re.compile(
    r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d):(\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)?", re.ASCII
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


@lru_cache(maxsize=1 << 16)
def instant(text: str) -> tuple[int, str]:
    """RFC 3339 text as (seconds since the epoch, fraction digits): exact at any precision.

    Without an offset the time is taken as UTC; a leap second counts as the next second.
    """
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    date, minutes, seconds, fraction, offset = match.groups()
    leap = seconds == "60"
    offset = "+00:00" if offset is None or offset in "Zz" else offset
    moment = datetime.fromisoformat(f"{date}T{minutes}:{'59' if leap else seconds}{offset}")
    # Without trailing zeros, digit strings compare like the fractions they spell.
    return (moment - _EPOCH) // _SECOND + leap, (fraction or "").rstrip("0")
