"""Durations as the catalog writes them: '7d', '12h', '30m', '45s', '500ms' or seconds."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str | int | float) -> float:
    """Seconds in '7d', '12h', '30m', '45s', '500ms' or a plain number of seconds."""
    if isinstance(text, bool):
        raise ValueError(f"a duration is a number or text like '30s', not {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    elif isinstance(text, str) and (match := _DURATION.fullmatch(text.strip())):
        seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    else:
        raise ValueError(
            f"invalid duration {text!r}: expected seconds or e.g. '500ms', '45s', '30m', '12h'"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {text!r}: must be a finite number >= 0")
    return seconds
