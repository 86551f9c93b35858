"""How a failure travels inside a reduction, and how values are named in its message.

A reducer raises `Failure` where two values meet that cannot be combined; each enclosing merge
adds its token on the way out, so the root reducer (`compile.compile_reducer`) can turn it into
one `ReduceError` carrying the full pointer without any reducer knowing where it sits.
"""

from __future__ import annotations

from typing import Any


class Failure(Exception):
    """Two values cannot be reduced; `tokens` is the path to them, innermost first."""

    def __init__(self, lhs: Any, rhs: Any, reason: str) -> None:
        super().__init__(reason)
        self.lhs = lhs
        self.rhs = rhs
        self.reason = reason
        self.tokens: list[str] = []


_KINDS: dict[type, str] = {str: "string", list: "array", dict: "object"}


def kind(value: Any) -> str:
    """The JSON kind of `value` ("null", "number", "object", ...) for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return _KINDS.get(type(value), type(value).__name__)
