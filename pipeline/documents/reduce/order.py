"""The total order of JSON values, which identifies and sorts array keys and set members.

Keyed merges and sets sort their items by it, so the order must be total and agree with
Flow's; sort keys are plain tuples so that Python's sort compares them without callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pipeline.documents import pointers
from pipeline.documents.pointers import MISSING

SortKey = tuple[Any, ...]


def order(value: Any) -> SortKey:
    """Flow's total order: absent < null < false < true < numbers < strings < arrays < objects."""
    kind = type(value)
    if kind is str:
        return (4, value)
    if kind is int or kind is float:
        return (3, value)
    if kind is bool:
        return (2, value)
    if value is None:
        return (1,)
    if kind is list:
        return (5, tuple(order(v) for v in value))
    if kind is dict:
        return (6, tuple((k, order(v)) for k, v in sorted(value.items())))
    if value is MISSING:
        return (0,)
    raise TypeError(f"not a JSON value: {value!r}")


def sort_key_function(key: Sequence[str] | None) -> Callable[[Any], SortKey]:
    """Order items by the values at `key` (pointers relative to the item), or by the whole item."""
    if key is None:
        return lambda item: (order(item),)
    paths = [pointers.parse(p) for p in key]
    getters = [pointers.value_getter(path) for path in paths]
    order_ = order
    slow: Callable[[Any], SortKey]
    if len(getters) == 1:
        (g1,) = getters
        slow = lambda item: (order_(g1(item)),)  # noqa: E731
    elif len(getters) == 2:
        g1, g2 = getters
        slow = lambda item: (order_(g1(item)), order_(g2(item)))  # noqa: E731
    else:
        slow = lambda item: tuple(order_(g(item)) for g in getters)  # noqa: E731
    if len(paths) != 2 or not all(1 <= len(path) <= 2 for path in paths):
        return slow
    # The hot path (profiles' segments keyed by /segment/vendor and /segment/name): direct
    # lookups, and strings ordered inline. A missing name raises KeyError, a value that is not
    # an object TypeError; the slow path then orders MISSING as `pointers` reads it.
    (d1, d2) = (_direct(path) for path in paths)

    def fast(item: Any) -> SortKey:
        try:
            v1 = d1(item)
            v2 = d2(item)
        except (KeyError, TypeError):
            return slow(item)
        return (
            (4, v1) if type(v1) is str else order_(v1),
            (4, v2) if type(v2) is str else order_(v2),
        )

    return fast


def _direct(path: tuple[str, ...]) -> Callable[[Any], Any]:
    """Read a one- or two-token path by indexing: raises instead of answering MISSING."""
    if len(path) == 1:
        (a,) = path
        return lambda item: item[a]
    a, b = path
    return lambda item: item[a][b]


def first(pair: tuple[SortKey, Any]) -> SortKey:
    """The sort key of a (sort key, item) pair: sorting by it alone keeps equal keys in order."""
    return pair[0]
