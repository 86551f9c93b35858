"""Error types. Every error Segflow raises on purpose derives from SegflowError."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class SegflowError(Exception):
    """Root of Segflow's own errors."""


@dataclass(frozen=True)
class Problem:
    """One catalog problem: which file, where in it (JSON pointer), and what was expected."""

    file: str
    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.pointer or '/'}: {self.message}"


class CatalogError(SegflowError):
    """The catalog is invalid. Carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        lines = [f"catalog has {len(self.problems)} problem(s):"]
        lines += [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class ReduceError(SegflowError):
    """Two values cannot be reduced at a location of the document."""

    def __init__(self, pointer: str, lhs: Any, rhs: Any, reason: str) -> None:
        self.pointer = pointer
        self.lhs = lhs
        self.rhs = rhs
        super().__init__(
            f"cannot reduce at '{pointer or '/'}': {reason} (lhs={lhs!r}, rhs={rhs!r})"
        )


class BrokerStateLost(SegflowError):
    """The broker no longer holds data this worker's local state was built from."""


class TestFileError(SegflowError):
    """A `segflow test` file is malformed: names the file, the test and the step."""

    __test__ = False  # not a pytest class
