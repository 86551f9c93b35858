"""Where a problem is: a catalog file, a JSON pointer inside it, and what lives there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.documents import pointers
from pipeline.errors import Problem


@dataclass
class File:
    """One catalog file and the problem list its findings go to."""

    path: Path
    problems: list[Problem]

    def report(self, pointer: str, message: str) -> None:
        """Record `message` at `pointer` in this file."""
        self.problems.append(Problem(str(self.path), pointer, message))


@dataclass(frozen=True)
class Place:
    """A location in a catalog file, and what lives there ("collection 'segment/events'")."""

    file: File
    pointer: str
    label: str

    def at(self, *tokens: str | int) -> Place:
        """The place `tokens` below this one, with the same label."""
        return Place(self.file, self.pointer + pointers.join(*tokens), self.label)

    def report(self, message: str) -> None:
        """Record `message` here, prefixed with the label so it names the thing."""
        self.file.report(self.pointer, f"{self.label}: {message}" if self.label else message)


@dataclass(frozen=True)
class Entry:
    """One named block under a section, not yet checked."""

    place: Place
    name: str
    body: Any
