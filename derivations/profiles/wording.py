"""How catalog problems name things: values, suggestions, JSON pointers."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice `word` was most likely meant to be, ignoring case, or None."""
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    meant = closest(word, choices)
    return "" if meant is None else f" (did you mean '{meant}'?)"


def one_of(choices: Iterable[str]) -> str:
    """'a, b or c', in the order given."""
    names = [f"'{choice}'" for choice in choices]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def unknown(what: str, word: str, choices: Iterable[str]) -> str:
    """ "unknown type 'strin' (did you mean 'string'?)", or the choices when none is close."""
    options = list(choices)
    hint = did_you_mean(word, options) or f" (expected {one_of(options)})"
    return f"unknown {what} '{word}'{hint}"


def kind_of(value: Any) -> str:
    """A YAML value as a message names it: 'the number 0', 'a list', ..."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return "a mapping" if value else "an empty mapping"


def join(pointer: str, *tokens: str | int) -> str:
    """`pointer` extended by reference tokens, escaped as RFC 6901 says."""
    escaped = (str(t).replace("~", "~0").replace("/", "~1") for t in tokens)
    return pointer + "".join("/" + token for token in escaped)
