"""The scalar strategies: reducers that need nothing from the schema but, at most, its `format`.

Each is a plain `reduce(lhs, rhs)` shared by every location that names it; `merge` and `set`
walk the schema and are built per location in `merge.py` and `sets.py`. All are associative.
"""

from __future__ import annotations

from typing import Any

from pipeline.documents.reduce.failure import Failure, kind
from pipeline.documents.reduce.instants import instant


def last_write_wins(lhs: Any, rhs: Any) -> Any:
    """The default: the later document's value."""
    return rhs


def first_write_wins(lhs: Any, rhs: Any) -> Any:
    """The earlier document's value."""
    return lhs


_COMPARABLE = frozenset({int, float, str, bool})
_NUMBERS = frozenset({int, float})


def _comparable(lhs: Any, rhs: Any) -> bool:
    kl, kr = type(lhs), type(rhs)
    return (kl is kr and kl in _COMPARABLE) or (kl in _NUMBERS and kr in _NUMBERS)


def minimize(lhs: Any, rhs: Any) -> Any:
    """The smaller of two numbers, strings or booleans; the earlier one on a tie."""
    if _comparable(lhs, rhs):
        return rhs if rhs < lhs else lhs
    raise Failure(lhs, rhs, f"cannot compare {kind(lhs)} with {kind(rhs)} to minimize")


def maximize(lhs: Any, rhs: Any) -> Any:
    """The larger of two numbers, strings or booleans; the later one on a tie."""
    if _comparable(lhs, rhs):
        return lhs if lhs > rhs else rhs
    raise Failure(lhs, rhs, f"cannot compare {kind(lhs)} with {kind(rhs)} to maximize")


def minimize_instant(lhs: Any, rhs: Any) -> Any:
    """`minimize` of `format: date-time` values, by the instant they name."""
    try:
        return rhs if instant(rhs) < instant(lhs) else lhs
    except (TypeError, ValueError):
        raise Failure(lhs, rhs, "minimize needs two RFC 3339 date-times") from None


def maximize_instant(lhs: Any, rhs: Any) -> Any:
    """`maximize` of `format: date-time` values, by the instant they name."""
    try:
        return lhs if instant(lhs) > instant(rhs) else rhs
    except (TypeError, ValueError):
        raise Failure(lhs, rhs, "maximize needs two RFC 3339 date-times") from None


def sum_(lhs: Any, rhs: Any) -> Any:
    """The sum of two numbers."""
    if type(lhs) in _NUMBERS and type(rhs) in _NUMBERS:
        return lhs + rhs
    raise Failure(lhs, rhs, f"sum needs two numbers, not {kind(lhs)} and {kind(rhs)}")


def append(lhs: Any, rhs: Any) -> Any:
    """The later array's items after the earlier array's."""
    if isinstance(lhs, list) and isinstance(rhs, list):
        return lhs + rhs
    raise Failure(lhs, rhs, f"append needs two arrays, not {kind(lhs)} and {kind(rhs)}")
