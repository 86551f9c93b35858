"""Typed readers: each takes a value at a place and returns it checked, or reports and gives None.

A value that is `BROKEN` was already reported (its interpolation failed), so readers skip it.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from pipeline.catalog.durations import parse_duration
from pipeline.catalog.interpolate import BROKEN, EnvText
from pipeline.catalog.places import Place
from pipeline.documents.schema import Schema

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def kind(value: Any) -> str:
    """How a message names what it found instead: 'nothing', 'the number 3', 'a list'."""
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


def suggest(word: str, options: Iterable[str]) -> str:
    """' (did you mean ...?)' with the closest option, or nothing when none is close."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def listing(values: Sequence[str]) -> str:
    """Values written as a YAML flow list: [/user, /event]."""
    return "[" + ", ".join(values) + "]"


def mapping(place: Place, value: Any, allowed: Sequence[str], what: str) -> dict[str, Any] | None:
    """`value` as a mapping with only `allowed` keys; reports anything else."""
    if value is BROKEN:
        return None
    if not isinstance(value, dict):
        place.report(f"{what} must be a mapping, not {kind(value)}")
        return None
    for key in value:
        if key not in allowed:
            expected = "expected one of " + ", ".join(a for a in allowed if a != "import")
            place.at(str(key)).report(
                f"unknown key '{key}'" + (suggest(str(key), allowed) or f" ({expected})")
            )
    return value


def required(place: Place, body: Mapping[str, Any], key: str) -> Any:
    """`body[key]`, or BROKEN after reporting that it is missing."""
    if key not in body:
        place.report(f"missing required key '{key}'")
        return BROKEN
    return body[key]


def string(place: Place, value: Any, what: str) -> str | None:
    """`value` if it is a string."""
    if value is BROKEN:
        return None
    if not isinstance(value, str):
        place.report(f"{what} must be a string, not {kind(value)}")
        return None
    return str(value)


def identifier(place: Place, value: Any, what: str) -> str | None:
    """A string that is a plain SQL identifier, so it can be used unquoted."""
    text = string(place, value, what)
    if text is not None and not _IDENTIFIER.fullmatch(text):
        place.report(
            f"{what} '{text}' is not a valid SQL identifier (expected [A-Za-z_][A-Za-z0-9_]*)"
        )
        return None
    return text


def integer(place: Place, value: Any, what: str) -> int | None:
    """An integer >= 1; a whole `${...}` is re-read as a YAML scalar first."""
    if value is BROKEN:
        return None
    if isinstance(value, EnvText) and value:
        with contextlib.suppress(yaml.YAMLError):
            value = yaml.safe_load(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        place.report(f"{what} must be an integer >= 1, not {kind(value)}")
        return None
    return value


def duration(place: Place, value: Any, what: str) -> float | None:
    """A positive duration ('30s', '7d', or seconds)."""
    if value is BROKEN:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        place.report(
            f"{what} must be a positive duration like '500ms', '45s', '30m', '12h', '7d'"
            f" or a number of seconds, not {kind(value)}"
        )
        return None
    return seconds


def json_pointers(
    place: Place, value: Any, what: str, schema: Schema | None, where: str
) -> tuple[str, ...] | None:
    """A non-empty list of JSON pointers, each declared by `schema` (skipped when it is None)."""
    if value is BROKEN:
        return None
    if not isinstance(value, list) or not value:
        place.report(
            f"{what} must be a non-empty list of JSON pointers like [/user], not {kind(value)}"
        )
        return None
    result: list[str] = []
    for i, item in enumerate(value):
        if item is BROKEN:
            continue
        if not isinstance(item, str) or not item.startswith("/"):
            place.at(i).report(
                f"{what} entry must be a JSON pointer like '/user', not {kind(item)}"
            )
            continue
        if schema is not None and not schema.has_location(item):
            suggestion = suggest(item, schema.property_names(""))
            place.at(i).report(f"{what} '{item}' does not exist in {where}{suggestion}")
            continue
        result.append(str(item))
    return tuple(result) if len(result) == len(value) else None
