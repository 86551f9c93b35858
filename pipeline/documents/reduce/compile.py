"""Compile a schema's `reduce` annotations into one reducer of whole documents, as Flow does.

`Compiler` walks the schema once, location by location, and asks `BUILDERS` for the reducer of
each location's strategy; reducing then does no schema lookups. `compile_reducer` wraps the
root reducer so that an inner `Failure` leaves as one `ReduceError` with the full pointer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from itertools import islice
from typing import Any

from pipeline.documents import pointers
from pipeline.documents.pointers import MISSING
from pipeline.documents.reduce.annotations import STRATEGIES, annotation_problems
from pipeline.documents.reduce.failure import Failure
from pipeline.documents.reduce.merge import build_merge
from pipeline.documents.reduce.sets import build_set
from pipeline.documents.reduce.strategies import (
    append,
    first_write_wins,
    last_write_wins,
    maximize,
    maximize_instant,
    minimize,
    minimize_instant,
    sum_,
)
from pipeline.documents.schema import Schema
from pipeline.errors import ReduceError, SegflowError

Reducer = Callable[[Any, Any], Any]
"""`reduce(lhs, rhs) -> combined`: `lhs` is the earlier document, `rhs` the later one."""

Subschema = tuple[dict[str, Any], str]
"""A subschema and its base URI."""
Location = tuple[Subschema, ...]
"""Every subschema that applies at one document location."""
Builder = Callable[["Compiler", list[Subschema], list[str] | None], Reducer]
"""Builds a strategy's reducer for a location from its subschemas and its `key`."""

_MAX_SUBSCHEMAS = 1000  # a `$ref` loop with nothing in between would never end


class Compiler:
    """Compiles the reducer of each location once; a `$ref` cycle reuses the one being built."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._done: dict[tuple[tuple[str, str], ...], list[Reducer]] = {}

    def reducer(self, location: Location) -> Reducer:
        # By content, not id(): `Schema.resolve` loads another file afresh each time.
        memo_key = tuple((repr(s), base) for s, base in location)
        done = self._done.get(memo_key)
        if done is not None:
            if done:
                return done[0]
            return lambda lhs, rhs: done[0](lhs, rhs)  # still compiling: a recursive schema
        cell: list[Reducer] = []
        self._done[memo_key] = cell
        subs = self.expand(location)
        strategy, key = self.annotation(subs)
        cell.append(BUILDERS[strategy](self, subs, key))
        return cell[0]

    def expand(self, location: Location) -> list[Subschema]:
        """The location's subschemas with what they apply in place (`$ref`, `allOf`)."""
        seen: dict[tuple[int, str], Subschema] = {}
        for schema, base in location:
            found = islice(self.schema.subschemas(schema, base), _MAX_SUBSCHEMAS + 1)
            for n, (sub, sub_base) in enumerate(found):
                if n == _MAX_SUBSCHEMAS:
                    raise SegflowError(f"{self.schema.uri}: `$ref`/`allOf` loop without end")
                seen.setdefault((id(sub), sub_base), (sub, sub_base))
        return list(seen.values())

    def annotation(self, subs: list[Subschema]) -> tuple[str, list[str] | None]:
        for sub, base in subs:
            annotation = sub.get("reduce")
            if annotation is None:
                continue
            problems = annotation_problems(annotation)
            if problems:
                where, message = problems[0]
                raise SegflowError(f"{base}: `reduce{where}`: {message}")
            return annotation["strategy"], annotation.get("key")
        return "lastWriteWins", None

    def property_location(self, subs: list[Subschema], name: str) -> Location:
        """Where property `name` leads: per subschema `properties`, else patterns, else the rest."""
        found: list[Subschema] = []
        for sub, base in subs:
            prop = sub.get("properties", {}).get(name)
            if isinstance(prop, dict):
                found.append((prop, base))
                continue
            patterns = [
                (p, base)
                for pattern, p in sub.get("patternProperties", {}).items()
                if isinstance(p, dict) and re.search(pattern, name)
            ]
            additional = sub.get("additionalProperties")
            if patterns:
                found += patterns
            elif isinstance(additional, dict):
                found.append((additional, base))
        return tuple(found)

    def item_location(self, subs: list[Subschema], index: int) -> Location:
        found: list[Subschema] = []
        for sub, base in subs:
            prefix = sub.get("prefixItems", ())
            item = prefix[index] if index < len(prefix) else sub.get("items")
            if isinstance(item, dict):
                found.append((item, base))
        return tuple(found)

    def object_plan(
        self, subs: list[Subschema]
    ) -> tuple[dict[str, Reducer], Callable[[str], Reducer]]:
        """Reducers of the declared properties, and a function for any other name."""
        names = {name: None for sub, _ in subs for name in sub.get("properties", {})}
        declared = {name: self.reducer(self.property_location(subs, name)) for name in names}
        if not any(sub.get("patternProperties") for sub, _ in subs):
            rest = self.reducer(self.property_location(subs, "\0 no such property"))
            return declared, lambda name: rest

        # Names matching patterns are only known at run time: compile each once, when first seen.
        @lru_cache(maxsize=4096)
        def other(name: str) -> Reducer:
            return self.reducer(self.property_location(subs, name))

        return declared, other

    def array_plan(self, subs: list[Subschema]) -> tuple[list[Reducer], Reducer]:
        """Reducers of the `prefixItems`, and of the items after them."""
        length = max((len(sub.get("prefixItems", ())) for sub, _ in subs), default=0)
        prefix = [self.reducer(self.item_location(subs, i)) for i in range(length)]
        return prefix, self.reducer(self.item_location(subs, length))


def _is_date_time(subs: list[Subschema]) -> bool:
    return any(sub.get("format") == "date-time" for sub, _ in subs)


def _build_min(compiler: Compiler, subs: list[Subschema], key: list[str] | None) -> Reducer:
    return minimize_instant if _is_date_time(subs) else minimize


def _build_max(compiler: Compiler, subs: list[Subschema], key: list[str] | None) -> Reducer:
    return maximize_instant if _is_date_time(subs) else maximize


def _constant(reducer: Reducer) -> Builder:
    return lambda compiler, subs, key: reducer


BUILDERS: dict[str, Builder] = {
    "merge": build_merge,
    "set": build_set,
    "minimize": _build_min,
    "maximize": _build_max,
    "lastWriteWins": _constant(last_write_wins),
    "firstWriteWins": _constant(first_write_wins),
    "sum": _constant(sum_),
    "append": _constant(append),
}
assert BUILDERS.keys() == STRATEGIES


def compile_reducer(schema: Schema) -> Reducer:
    """The reducer of whole documents of `schema`; raises SegflowError on a bad annotation."""
    inner = Compiler(schema).reducer(((schema.contents, schema.uri),))
    missing = MISSING

    def reduce(lhs: Any, rhs: Any) -> Any:
        if lhs is missing:
            return rhs
        if rhs is missing:
            return lhs
        try:
            return inner(lhs, rhs)
        except Failure as failure:
            pointer = pointers.join(*reversed(failure.tokens))
            raise ReduceError(pointer, failure.lhs, failure.rhs, failure.reason) from None

    return reduce


def reduce_all(reducer: Reducer, docs: Iterable[Any]) -> Any:
    """Fold `docs` left to right with `reducer`; MISSING when there are none."""
    result = MISSING
    for doc in docs:
        result = doc if result is MISSING else reducer(result, doc)
    return result
