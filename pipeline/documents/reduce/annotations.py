"""What a `reduce` annotation may say, and every problem with the annotations of a schema file.

The catalog loader reports all problems at once, located in the schema file; the compiler
(`compile.py`) reuses the same check to refuse the first bad annotation it meets.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from typing import Any

from pipeline.documents import pointers
from pipeline.documents.pointers import MISSING
from pipeline.documents.reduce.failure import kind
from pipeline.documents.schema import Schema

STRATEGIES: frozenset[str] = frozenset(
    {"merge", "minimize", "maximize", "lastWriteWins", "firstWriteWins", "sum", "append", "set"}
)
_KEYED_STRATEGIES = ("merge", "set")
_ANNOTATION_MEMBERS = ("strategy", "key")


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), by_lower, n=1, cutoff=0.6)
    return f" (did you mean '{by_lower[close[0]]}'?)" if close else ""


def annotation_problems(annotation: Any) -> list[tuple[str, str]]:
    """Problems of one `reduce` value, as (pointer relative to it, message)."""
    if not isinstance(annotation, dict):
        return [("", f"must be an object like {{strategy: merge}}, not {kind(annotation)}")]
    problems: list[tuple[str, str]] = []
    for name in annotation:
        if name not in _ANNOTATION_MEMBERS:
            hint = _did_you_mean(str(name), _ANNOTATION_MEMBERS)
            problems.append((pointers.join(str(name)), f"unknown member '{name}'{hint}"))
    strategy = annotation.get("strategy", MISSING)
    if strategy is MISSING:
        problems.append(("", "needs a `strategy`, one of " + ", ".join(sorted(STRATEGIES))))
    elif not isinstance(strategy, str):
        problems.append(("/strategy", f"must be a string, not {kind(strategy)}"))
    elif strategy not in STRATEGIES:
        hint = _did_you_mean(strategy, STRATEGIES) or " (expected one of {})".format(
            ", ".join(sorted(STRATEGIES))
        )
        problems.append(("/strategy", f"unknown strategy '{strategy}'{hint}"))
    if "key" in annotation:
        problems += _key_problems(annotation["key"], strategy)
    return problems


def _key_problems(key: Any, strategy: Any) -> list[tuple[str, str]]:
    if strategy not in _KEYED_STRATEGIES:
        return [("/key", f"`key` needs strategy 'merge' or 'set', not {strategy!r}")]
    if not isinstance(key, list) or not key:
        return [("/key", "must be a non-empty list of JSON pointers like ['/id']")]
    problems: list[tuple[str, str]] = []
    for index, pointer in enumerate(key):
        if not isinstance(pointer, str):
            problems.append((f"/key/{index}", f"must be a JSON pointer, not {kind(pointer)}"))
            continue
        try:
            pointers.parse(pointer)
        except ValueError:
            problems.append(
                (f"/key/{index}", f"'{pointer}' is not a JSON pointer (did you mean '/{pointer}'?)")
            )
    return problems


_SCHEMA_KEYWORDS = frozenset(
    {"items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames"}
    | {"unevaluatedItems", "unevaluatedProperties", "additionalItems"}
)
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
_SCHEMA_MAPS_TOO = frozenset({"dependentSchemas"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})


def _walk(schema: Any, pointer: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema of a schema file with its pointer (keywords only, never property names)."""
    if not isinstance(schema, dict):
        return
    yield pointer, schema
    for keyword, value in schema.items():
        here = pointer + "/" + pointers.escape(keyword)
        if keyword in _SCHEMA_KEYWORDS:
            yield from _walk(value, here)
        elif keyword in _SCHEMA_MAPS or keyword in _SCHEMA_MAPS_TOO:
            if isinstance(value, dict):
                for name, sub in value.items():
                    yield from _walk(sub, here + "/" + pointers.escape(name))
        elif keyword in _SCHEMA_LISTS and isinstance(value, list):
            for index, sub in enumerate(value):
                yield from _walk(sub, f"{here}/{index}")


def check_annotations(schema: Schema) -> list[tuple[str, str]]:
    """Every invalid `reduce` annotation in the schema file, as (pointer in the file, message)."""
    problems: list[tuple[str, str]] = []
    for pointer, sub in _walk(schema.contents, ""):
        if "reduce" in sub:
            for where, message in annotation_problems(sub["reduce"]):
                problems.append((f"{pointer}/reduce{where}", message))
    return problems
