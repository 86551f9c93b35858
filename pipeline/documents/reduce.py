"""Reduce documents by the `reduce: {strategy: ...}` annotations of their JSON Schema, as Flow does.

`compile_reducer` walks the schema once and builds nested closures, one small function per
strategy (picked from `_BUILDERS`); reducing then does no schema lookups. A location without an
annotation is `lastWriteWins`. Every strategy is associative, so documents may be combined in any
grouping (per event, per batch, per sink flush) with the same result.

Inside a reduction a failure travels as `_Failure`, collecting the document path on the way out;
the root reducer turns it into one `ReduceError` with the full pointer.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import islice
from typing import Any

from pipeline.documents import pointers
from pipeline.documents.pointers import MISSING
from pipeline.documents.schema import Schema
from pipeline.errors import ReduceError, SegflowError

Reducer = Callable[[Any, Any], Any]
"""`reduce(lhs, rhs) -> combined`: `lhs` is the earlier document, `rhs` the later one."""

STRATEGIES: frozenset[str] = frozenset(
    {"merge", "minimize", "maximize", "lastWriteWins", "firstWriteWins", "sum", "append", "set"}
)
_KEYED_STRATEGIES = ("merge", "set")
_ANNOTATION_MEMBERS = ("strategy", "key")
_SET_MEMBERS = frozenset({"add", "intersect", "remove"})
_MAX_SUBSCHEMAS = 1000  # a `$ref` loop with nothing in between would never end

Subschema = tuple[dict[str, Any], str]
"""A subschema and its base URI."""
Location = tuple[Subschema, ...]
"""Every subschema that applies at one document location."""
SortKey = tuple[Any, ...]


class _Failure(Exception):
    """Two values cannot be reduced; `tokens` is the path to them, innermost first."""

    def __init__(self, lhs: Any, rhs: Any, reason: str) -> None:
        super().__init__(reason)
        self.lhs = lhs
        self.rhs = rhs
        self.reason = reason
        self.tokens: list[str] = []


_KINDS: dict[type, str] = {str: "string", list: "array", dict: "object"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return _KINDS.get(type(value), type(value).__name__)


# -- ordering of JSON values (array keys, set members) ------------------------------------------


def _order(value: Any) -> SortKey:
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
        return (5, tuple(_order(v) for v in value))
    if kind is dict:
        return (6, tuple((k, _order(v)) for k, v in sorted(value.items())))
    if value is MISSING:
        return (0,)
    raise TypeError(f"not a JSON value: {value!r}")


def _sort_key_function(key: Sequence[str] | None) -> Callable[[Any], SortKey]:
    """Order items by the values at `key` (pointers relative to the item), or by the whole item."""
    if key is None:
        return lambda item: (_order(item),)
    paths = [pointers.parse(p) for p in key]
    getters = [pointers.value_getter(path) for path in paths]
    order = _order
    slow: Callable[[Any], SortKey]
    if len(getters) == 1:
        (g1,) = getters
        slow = lambda item: (order(g1(item)),)  # noqa: E731
    elif len(getters) == 2:
        g1, g2 = getters
        slow = lambda item: (order(g1(item)), order(g2(item)))  # noqa: E731
    else:
        slow = lambda item: tuple(order(g(item)) for g in getters)  # noqa: E731
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
            (4, v1) if type(v1) is str else order(v1),
            (4, v2) if type(v2) is str else order(v2),
        )

    return fast


def _direct(path: tuple[str, ...]) -> Callable[[Any], Any]:
    """Read a one- or two-token path by indexing: raises instead of answering MISSING."""
    if len(path) == 1:
        (a,) = path
        return lambda item: item[a]
    a, b = path
    return lambda item: item[a][b]


def _first(pair: tuple[SortKey, Any]) -> SortKey:
    return pair[0]


# -- date-time instants -----------------------------------------------------------------------

_DATE_TIME = re.compile(
    r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d):(\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)?", re.ASCII
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


@lru_cache(maxsize=1 << 16)
def _instant(text: str) -> tuple[int, str]:
    """RFC 3339 text as (seconds since the epoch, fraction digits): exact at any precision.

    Without an offset the time is taken as UTC; a leap second counts as the next second.
    """
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    date, minutes, seconds, fraction, offset = match.groups()
    leap = seconds == "60"
    offset = "+00:00" if offset is None or offset in "Zz" else offset
    moment = datetime.fromisoformat(f"{date}T{minutes}:{'59' if leap else seconds}{offset}")
    # Without trailing zeros, digit strings compare like the fractions they spell.
    return (moment - _EPOCH) // _SECOND + leap, (fraction or "").rstrip("0")


# -- scalar strategies --------------------------------------------------------------------------


def _last_write_wins(lhs: Any, rhs: Any) -> Any:
    return rhs


def _first_write_wins(lhs: Any, rhs: Any) -> Any:
    return lhs


_COMPARABLE = frozenset({int, float, str, bool})
_NUMBERS = frozenset({int, float})


def _comparable(lhs: Any, rhs: Any) -> bool:
    kl, kr = type(lhs), type(rhs)
    return (kl is kr and kl in _COMPARABLE) or (kl in _NUMBERS and kr in _NUMBERS)


def _minimize(lhs: Any, rhs: Any) -> Any:
    if _comparable(lhs, rhs):
        return rhs if rhs < lhs else lhs
    raise _Failure(lhs, rhs, f"cannot compare {_kind(lhs)} with {_kind(rhs)} to minimize")


def _maximize(lhs: Any, rhs: Any) -> Any:
    if _comparable(lhs, rhs):
        return lhs if lhs > rhs else rhs
    raise _Failure(lhs, rhs, f"cannot compare {_kind(lhs)} with {_kind(rhs)} to maximize")


def _minimize_instant(lhs: Any, rhs: Any) -> Any:
    try:
        return rhs if _instant(rhs) < _instant(lhs) else lhs
    except (TypeError, ValueError):
        raise _Failure(lhs, rhs, "minimize needs two RFC 3339 date-times") from None


def _maximize_instant(lhs: Any, rhs: Any) -> Any:
    try:
        return lhs if _instant(lhs) > _instant(rhs) else rhs
    except (TypeError, ValueError):
        raise _Failure(lhs, rhs, "maximize needs two RFC 3339 date-times") from None


def _sum(lhs: Any, rhs: Any) -> Any:
    if type(lhs) in _NUMBERS and type(rhs) in _NUMBERS:
        return lhs + rhs
    raise _Failure(lhs, rhs, f"sum needs two numbers, not {_kind(lhs)} and {_kind(rhs)}")


def _append(lhs: Any, rhs: Any) -> Any:
    if isinstance(lhs, list) and isinstance(rhs, list):
        return lhs + rhs
    raise _Failure(lhs, rhs, f"append needs two arrays, not {_kind(lhs)} and {_kind(rhs)}")


# -- the schema at a location -------------------------------------------------------------------


class _Compiler:
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
        cell.append(_BUILDERS[strategy](self, subs, key))
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
            problems = _annotation_problems(annotation)
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


# -- merge --------------------------------------------------------------------------------------


def _build_merge(compiler: _Compiler, subs: list[Subschema], key: list[str] | None) -> Reducer:
    declared, other = compiler.object_plan(subs)
    # None marks lastWriteWins, so the common case costs no call.
    props: dict[str, Reducer | None] = {
        name: None if r is _last_write_wins else r for name, r in declared.items()
    }
    prefix, items = compiler.array_plan(subs)
    merge_array = _keyed_merge(items, key) if key is not None else _indexed_merge(prefix, items)
    missing = MISSING
    unknown: Any = object()

    def merge(lhs: Any, rhs: Any) -> Any:
        if isinstance(lhs, dict) and isinstance(rhs, dict):
            out = dict(lhs)
            name = ""
            try:
                for name, right in rhs.items():
                    left = out.get(name, missing)
                    if left is missing:
                        out[name] = right
                        continue
                    reducer = props.get(name, unknown)
                    if reducer is unknown:
                        reducer = other(name)
                        reducer = None if reducer is _last_write_wins else reducer
                    out[name] = right if reducer is None else reducer(left, right)
            except _Failure as failure:
                failure.tokens.append(name)
                raise
            return out
        if isinstance(lhs, list) and isinstance(rhs, list):
            return merge_array(lhs, rhs)
        raise _Failure(
            lhs, rhs, f"merge needs two objects or two arrays, not {_kind(lhs)} and {_kind(rhs)}"
        )

    return merge


def _indexed_merge(prefix: list[Reducer], items: Reducer) -> Reducer:
    def merge_array(lhs: list[Any], rhs: list[Any]) -> list[Any]:
        out = list(rhs) if len(rhs) > len(lhs) else list(lhs)
        index = 0
        try:
            for index in range(min(len(lhs), len(rhs))):
                reducer = prefix[index] if index < len(prefix) else items
                out[index] = reducer(lhs[index], rhs[index])
        except _Failure as failure:
            failure.tokens.append(str(index))
            raise
        return out

    return merge_array


def _keyed_merge(items: Reducer, key: list[str]) -> Reducer:
    sort_key = _sort_key_function(key)
    no_key: Any = object()

    def merge_array(lhs: list[Any], rhs: list[Any]) -> list[Any]:
        pairs = [(sort_key(item), item) for item in lhs]
        pairs += [(sort_key(item), item) for item in rhs]
        pairs.sort(key=_first)  # stable: lhs before rhs, each side in its order
        out: list[Any] = []
        previous = no_key
        try:
            for k, item in pairs:
                if k == previous:
                    out[-1] = items(out[-1], item)
                else:
                    out.append(item)
                    previous = k
        except _Failure as failure:
            failure.tokens.append(str(len(out) - 1))  # the entry's index in the result
            raise
        return out

    return merge_array


# -- set ----------------------------------------------------------------------------------------

Members = dict[Any, Any]
"""A set's members by identity (a sort key for arrays, the name for objects)."""


def _build_set(compiler: _Compiler, subs: list[Subschema], key: list[str] | None) -> Reducer:
    """Flow's `set`: a value is an update {intersect?|remove?, add?} to a set, as a function.

    `{remove: R, add: A}` maps a set S to (S - R) + A and `{intersect: I, add: A}` maps it to
    (S & I) + A, where + adds members and deep-merges the value of a member S already has (with
    the reducer of `add`'s items, or of `add`'s property for object sets). Reducing two updates
    composes the functions, which is associative:

        lhs remove R1    then rhs remove R2    -> remove R1 | R2,   add (A1 - R2) + A2
        lhs intersect I1 then rhs remove R2    -> intersect I1 - R2, add (A1 - R2) + A2
        lhs remove R1    then rhs intersect I2 -> intersect I2 - R1, add (A1 & I2) + A2
        lhs intersect I1 then rhs intersect I2 -> intersect I1 & I2, add (A1 & I2) + A2
        rhs with only add                      -> lhs's remove/intersect, add A1 + A2

    `remove` and `intersect` only name members: their values are never merged and the earliest
    surviving one is kept. A member appears in the result iff it appears in an input (`add` if
    any input has one, `intersect` if any has one, else `remove` if any has one). Array members
    are identified by `key` (or by the whole item), kept sorted and unique.
    """
    add_subs = compiler.expand(compiler.property_location(subs, "add"))
    declared, other = compiler.object_plan(add_subs)
    _, items = compiler.array_plan(add_subs)
    sort_key = _sort_key_function(key)
    keyed = key is not None

    def combine(member: Any, lhs: Any, rhs: Any, is_array: bool) -> Any:
        if is_array:
            return items(lhs, rhs) if keyed else lhs
        reducer = declared.get(member) or other(member)
        try:
            return reducer(lhs, rhs)
        except _Failure as failure:
            failure.tokens.append(member)
            raise

    def members(value: Any, name: str, is_array: bool, merge: bool) -> Members:
        if is_array:
            if not isinstance(value, list):
                raise _Failure(value, None, f"set member '{name}' must be an array like the others")
            found: Members = {}
            for item in value:
                k = sort_key(item)
                if k not in found:
                    found[k] = item
                elif merge:
                    found[k] = combine(k, found[k], item, True)
            return found
        if not isinstance(value, dict):
            raise _Failure(value, None, f"set member '{name}' must be an object like the others")
        return value

    def parse(value: Any, is_array: bool | None) -> tuple[dict[str, Members], bool | None]:
        if not isinstance(value, dict) or not value.keys() <= _SET_MEMBERS:
            raise _Failure(value, None, "a set is an object with only add, intersect and remove")
        if "intersect" in value and "remove" in value:
            raise _Failure(value, None, "a set may not have both intersect and remove")
        parsed: dict[str, Members] = {}
        for name, member in value.items():
            if is_array is None:
                is_array = isinstance(member, list)
            try:
                parsed[name] = members(member, name, is_array, name == "add")
            except _Failure as failure:
                failure.tokens.append(name)
                raise
        return parsed, is_array

    def add(left: Members, right: Members, is_array: bool) -> Members:
        out = dict(left)
        for k, v in right.items():
            out[k] = combine(k, out[k], v, is_array) if k in out else v
        return out

    def reduce_set(lhs: Any, rhs: Any) -> Any:
        try:
            left, is_array = parse(lhs, None)
            right, is_array = parse(rhs, is_array)
        except _Failure as failure:
            failure.lhs, failure.rhs = lhs, rhs
            raise
        a1, a2 = left.get("add"), right.get("add")
        out: dict[str, Members] = {}
        if "intersect" in right:
            i2 = right["intersect"]
            if "intersect" in left:
                out["intersect"] = {k: v for k, v in left["intersect"].items() if k in i2}
            elif "remove" in left:
                out["intersect"] = {k: v for k, v in i2.items() if k not in left["remove"]}
            else:
                out["intersect"] = i2
            if a1 is not None:
                a1 = {k: v for k, v in a1.items() if k in i2}
        elif "remove" in right:
            r2 = right["remove"]
            if "intersect" in left:
                out["intersect"] = {k: v for k, v in left["intersect"].items() if k not in r2}
            elif "remove" in left:
                out["remove"] = dict(left["remove"])
                for k, v in r2.items():
                    out["remove"].setdefault(k, v)
            else:
                out["remove"] = r2
            if a1 is not None:
                a1 = {k: v for k, v in a1.items() if k not in r2}
        else:
            out.update((name, m) for name, m in left.items() if name != "add")
        if a1 is not None or a2 is not None:
            try:
                out["add"] = add(a1 or {}, a2 or {}, bool(is_array))
            except _Failure as failure:
                failure.tokens.append("add")
                raise
        if not is_array:
            return out
        return {name: [v for _, v in sorted(m.items(), key=_first)] for name, m in out.items()}

    return reduce_set


# -- compiling and checking ---------------------------------------------------------------------


def _build_min(compiler: _Compiler, subs: list[Subschema], key: list[str] | None) -> Reducer:
    return _minimize_instant if _is_date_time(subs) else _minimize


def _build_max(compiler: _Compiler, subs: list[Subschema], key: list[str] | None) -> Reducer:
    return _maximize_instant if _is_date_time(subs) else _maximize


def _constant(
    reducer: Reducer,
) -> Callable[[_Compiler, list[Subschema], list[str] | None], Reducer]:
    return lambda compiler, subs, key: reducer


_BUILDERS: dict[str, Callable[[_Compiler, list[Subschema], list[str] | None], Reducer]] = {
    "merge": _build_merge,
    "set": _build_set,
    "minimize": _build_min,
    "maximize": _build_max,
    "lastWriteWins": _constant(_last_write_wins),
    "firstWriteWins": _constant(_first_write_wins),
    "sum": _constant(_sum),
    "append": _constant(_append),
}
assert _BUILDERS.keys() == STRATEGIES


def compile_reducer(schema: Schema) -> Reducer:
    """The reducer of whole documents of `schema`; raises SegflowError on a bad annotation."""
    inner = _Compiler(schema).reducer(((schema.contents, schema.uri),))
    missing = MISSING

    def reduce(lhs: Any, rhs: Any) -> Any:
        if lhs is missing:
            return rhs
        if rhs is missing:
            return lhs
        try:
            return inner(lhs, rhs)
        except _Failure as failure:
            pointer = pointers.join(*reversed(failure.tokens))
            raise ReduceError(pointer, failure.lhs, failure.rhs, failure.reason) from None

    return reduce


def reduce_all(reducer: Reducer, docs: Iterable[Any]) -> Any:
    """Fold `docs` left to right with `reducer`; MISSING when there are none."""
    result = MISSING
    for doc in docs:
        result = doc if result is MISSING else reducer(result, doc)
    return result


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), by_lower, n=1, cutoff=0.6)
    return f" (did you mean '{by_lower[close[0]]}'?)" if close else ""


def _annotation_problems(annotation: Any) -> list[tuple[str, str]]:
    """Problems of one `reduce` value, as (pointer relative to it, message)."""
    if not isinstance(annotation, dict):
        return [("", f"must be an object like {{strategy: merge}}, not {_kind(annotation)}")]
    problems: list[tuple[str, str]] = []
    for name in annotation:
        if name not in _ANNOTATION_MEMBERS:
            hint = _did_you_mean(str(name), _ANNOTATION_MEMBERS)
            problems.append((pointers.join(str(name)), f"unknown member '{name}'{hint}"))
    strategy = annotation.get("strategy", MISSING)
    if strategy is MISSING:
        problems.append(("", "needs a `strategy`, one of " + ", ".join(sorted(STRATEGIES))))
    elif not isinstance(strategy, str):
        problems.append(("/strategy", f"must be a string, not {_kind(strategy)}"))
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
            problems.append((f"/key/{index}", f"must be a JSON pointer, not {_kind(pointer)}"))
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
            for where, message in _annotation_problems(sub["reduce"]):
                problems.append((f"{pointer}/reduce{where}", message))
    return problems
