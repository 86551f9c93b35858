"""A fast, one-sided stand-in for jsonschema: a schema compiled once into nested closures.

`compile_check` returns a predicate that says True only for documents that jsonschema
(`Schema.validator()`: Draft 2020-12 with format checking) accepts. False means "ask jsonschema",
which keeps the final word and the error messages. A schema using anything this module does not
mirror exactly compiles to None, and the caller uses jsonschema alone.

Every compiled node also knows whether it is *exact* (False also means invalid), because `not`,
`oneOf` and `anyOf` may only be built from exact nodes: negating a one-sided check is unsound.
"""

from __future__ import annotations

import calendar
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from referencing.exceptions import NoSuchResource, Unresolvable, Unretrievable

from pipeline.documents.schema import FORMAT_CHECKER, Schema, is_int32

Check = Callable[[Any], bool]

_DIALECTS = {
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2020-12/schema#",
}
# Keywords that never change the outcome (`reduce` and `errorMessage` are ours; `$defs` is
# reached through `$ref`).
_IGNORED = {
    "$comment",
    "$defs",
    "$schema",
    "default",
    "deprecated",
    "description",
    "errorMessage",
    "examples",
    "readOnly",
    "reduce",
    "title",
    "writeOnly",
}
_KEYWORDS = _IGNORED | {
    "$ref",
    "additionalProperties",
    "allOf",
    "anyOf",
    "const",
    "enum",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "format",
    "items",
    "maxItems",
    "maxLength",
    "maxProperties",
    "maximum",
    "minItems",
    "minLength",
    "minProperties",
    "minimum",
    "not",
    "oneOf",
    "pattern",
    "properties",
    "required",
    "type",
    "unevaluatedProperties",
}
# Keywords that make the set of evaluated properties depend on the document.
_DYNAMIC_EVALUATION = (
    "additionalProperties",
    "patternProperties",
    "dependentSchemas",
    "if",
    "then",
    "else",
    "anyOf",
    "oneOf",
    "$dynamicRef",
)

# Stricter than jsonschema (ASCII digits only, `\Z` rather than `$`); a miss falls back to it.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DATE_TIME = re.compile(
    r"([0-9]{4})-(0[1-9]|1[0-2])-([0-9]{2})[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]+)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)


class _Unsupported(Exception):
    """The schema uses something this module does not mirror."""


@dataclass(frozen=True)
class _Node:
    check: Check
    exact: bool  # check(x) == jsonschema's verdict for every x, not only when True


def compile_check(schema: Schema) -> Callable[[Any], bool] | None:
    """A predicate true only for documents valid under `schema`, or None when not supported."""
    try:
        return _Compiler(schema).node(schema.contents, schema.uri).check
    except (
        _Unsupported,
        Unresolvable,
        NoSuchResource,
        Unretrievable,
        OSError,
        yaml.YAMLError,
        re.error,
    ):
        return None


def _always(x: Any) -> bool:
    return True


def _never(x: Any) -> bool:
    return False


def _all(checks: list[Check]) -> Check:
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        a, b = checks

        def both(x: Any) -> bool:
            return a(x) and b(x)

        return both
    fixed = tuple(checks)

    def every(x: Any) -> bool:
        for check in fixed:  # noqa: SIM110 -- a plain loop beats all() over a generator here
            if not check(x):
                return False
        return True

    return every


def _any(checks: list[Check]) -> Check:
    fixed = tuple(checks)

    def some(x: Any) -> bool:
        return any(check(x) for check in fixed)

    return some


def _one(checks: list[Check]) -> Check:
    fixed = tuple(checks)

    def exactly_one(x: Any) -> bool:
        return sum(1 for check in fixed if check(x)) == 1

    return exactly_one


# Type tests, exactly as jsonschema's Draft 2020-12 type checker.


def _is_number(x: Any) -> bool:
    t = type(x)
    if t is int or t is float:
        return True
    return not isinstance(x, bool) and isinstance(x, numbers.Number)


def _is_integer(x: Any) -> bool:
    if type(x) is int:
        return True
    if isinstance(x, bool):
        return False
    return isinstance(x, int) or (isinstance(x, float) and x.is_integer())


def _isinstance(kind: type) -> Check:
    def check(x: Any) -> bool:
        return isinstance(x, kind)

    return check


def _is_null(x: Any) -> bool:
    return x is None


_TYPES: dict[str, Check] = {
    "array": _isinstance(list),
    "boolean": _isinstance(bool),
    "integer": _is_integer,
    "null": _is_null,
    "number": _is_number,
    "object": _isinstance(dict),
    "string": _isinstance(str),
}
# Type-specific keywords (minimum, minLength, required, items, ...) ignore other instance types;
# they skip this guard when the schema's single `type` already implies theirs.
_GUARDS = {kind: _TYPES[kind] for kind in ("number", "string", "object", "array")}
_IMPLIES = {"integer": "number"}


def _unbool(x: Any, true: object = object(), false: object = object()) -> Any:
    if x is True:
        return true
    if x is False:
        return false
    return x


def _equal(one: Any, two: Any) -> bool:
    """jsonschema's `_utils.equal`: like ==, but True != 1, recursively."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(_equal(i, j) for i, j in zip(one, two, strict=True))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return len(one) == len(two) and all(
            key in two and _equal(value, two[key]) for key, value in one.items()
        )
    return bool(_unbool(one) == _unbool(two))


def _const(value: Any) -> Check:
    if value is True or value is False or value is None:

        def same(x: Any) -> bool:
            return x is value

        return same
    if isinstance(value, str):

        def text(x: Any) -> bool:
            return isinstance(x, str) and x == value

        return text

    def equal(x: Any) -> bool:
        return _equal(x, value)

    return equal


def _enum(values: Any) -> Check:
    if not isinstance(values, list):
        raise _Unsupported("enum")
    if all(isinstance(v, str) for v in values):
        texts = frozenset(values)

        def text(x: Any) -> bool:
            return isinstance(x, str) and x in texts

        return text
    options = tuple(values)

    def any_equal(x: Any) -> bool:
        return any(_equal(x, v) for v in options)

    return any_equal


def _uuid(x: str) -> bool:
    return _UUID.fullmatch(x) is not None or bool(FORMAT_CHECKER.conforms(x, "uuid"))


def _date_time(x: str) -> bool:
    # jsonschema: rfc3339_validator.validate_rfc3339(x.upper()); this regex matches a subset
    # (ASCII only, so upper() only turns t/z into T/Z), then the same calendar checks.
    m = _DATE_TIME.fullmatch(x)
    if m is not None:
        year, month, day = int(m[1]), int(m[2]), int(m[3])
        if year and day >= 1 and (day <= 28 or day <= calendar.monthrange(year, month)[1]):
            return True
    return bool(FORMAT_CHECKER.conforms(x, "date-time"))


_FORMATS: dict[str, Callable[[str], bool]] = {"uuid": _uuid, "date-time": _date_time}
# Formats of numbers: they ignore other types themselves, like jsonschema's checkers.
_NUMBER_FORMATS: dict[str, Check] = {"int32": is_int32}


def _number(schema: Mapping[str, Any], keyword: str) -> Any:
    value = schema[keyword]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Unsupported(keyword)
    return value


def _count(schema: Mapping[str, Any], keyword: str) -> int:
    value = schema[keyword]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Unsupported(keyword)
    return value


class _Compiler:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.done: dict[tuple[str, int], _Node] = {}
        self.pending: dict[tuple[str, int], list[Check]] = {}

    def node(self, schema: Any, base: str) -> _Node:
        if schema is True:
            return _Node(_always, exact=True)
        if schema is False:
            return _Node(_never, exact=True)
        if not isinstance(schema, dict):
            raise _Unsupported(repr(schema))
        unknown = schema.keys() - _KEYWORDS
        if unknown:
            raise _Unsupported(", ".join(sorted(unknown)))
        if "$schema" in schema and schema["$schema"] not in _DIALECTS:
            raise _Unsupported(schema["$schema"])

        declared = schema.get("type")
        known = _IMPLIES.get(declared, declared) if isinstance(declared, str) else None
        # The type test comes first; keywords about that type then skip their own guard.
        checks = [self.type(declared)] if "type" in schema else []
        typed: dict[str, list[Check]] = {"number": [], "string": [], "object": [], "array": []}
        self.numbers(schema, typed["number"])
        self.strings(schema, typed["string"])
        # Subschemas of properties and items: checked by typed closures, counted for exactness.
        children = self.objects(schema, base, typed["object"])
        children += self.arrays(schema, base, typed["array"])
        for kind, kind_checks in typed.items():
            if kind_checks:
                inner = _all(kind_checks)
                checks.append(inner if kind == known else _guarded(_GUARDS[kind], inner))
        nodes: list[_Node] = []
        if "$ref" in schema:
            nodes.append(self.ref(schema["$ref"], base))
        if "const" in schema:
            nodes.append(_Node(_const(schema["const"]), exact=True))
        if "enum" in schema:
            nodes.append(_Node(_enum(schema["enum"]), exact=True))
        nodes += self.applicators(schema, base)
        checks += [n.check for n in nodes]
        exact = all(n.exact for n in nodes + children)
        if "unevaluatedProperties" in schema:
            checks.append(self.unevaluated(schema, base))
            exact = False
        return _Node(_all(checks), exact)

    def type(self, declared: Any) -> Check:
        names = [declared] if isinstance(declared, str) else declared
        if not isinstance(names, list) or not all(n in _TYPES for n in names):
            raise _Unsupported(f"type {declared!r}")
        if len(names) == 1:
            return _TYPES[names[0]]
        tests = tuple(_TYPES[n] for n in names)

        def any_type(x: Any) -> bool:
            return any(test(x) for test in tests)

        return any_type

    def ref(self, ref: Any, base: str) -> _Node:
        if not isinstance(ref, str):
            raise _Unsupported("$ref")
        target, target_base = self.schema.resolve(ref, base)
        key = (target_base, id(target))
        if key in self.done:
            return self.done[key]
        if key in self.pending:  # a recursive schema: call through a cell filled in later
            cell = self.pending[key]

            def later(x: Any) -> bool:
                return cell[0](x)

            return _Node(later, exact=False)
        self.pending[key] = cell = [_never]
        compiled = self.node(target, target_base)
        cell[0] = compiled.check
        del self.pending[key]
        self.done[key] = compiled
        return compiled

    def numbers(self, schema: Mapping[str, Any], out: list[Check]) -> None:
        if "minimum" in schema:
            low = _number(schema, "minimum")
            out.append(lambda x: not x < low)
        if "exclusiveMinimum" in schema:
            xlow = _number(schema, "exclusiveMinimum")
            out.append(lambda x: not x <= xlow)
        if "maximum" in schema:
            high = _number(schema, "maximum")
            out.append(lambda x: not x > high)
        if "exclusiveMaximum" in schema:
            xhigh = _number(schema, "exclusiveMaximum")
            out.append(lambda x: not x >= xhigh)
        if schema.get("format") in _NUMBER_FORMATS:
            out.append(_NUMBER_FORMATS[schema["format"]])

    def strings(self, schema: Mapping[str, Any], out: list[Check]) -> None:
        if "minLength" in schema:
            shortest = _count(schema, "minLength")
            out.append(lambda x: len(x) >= shortest)
        if "maxLength" in schema:
            longest = _count(schema, "maxLength")
            out.append(lambda x: len(x) <= longest)
        if "pattern" in schema:
            if not isinstance(schema["pattern"], str):
                raise _Unsupported("pattern")
            search = re.compile(schema["pattern"]).search  # what jsonschema's re.search compiles
            out.append(lambda x: search(x) is not None)
        if "format" in schema and schema["format"] not in _NUMBER_FORMATS:
            check = _FORMATS.get(schema["format"])
            if check is None:
                raise _Unsupported(f"format {schema['format']!r}")
            out.append(check)

    def objects(self, schema: Mapping[str, Any], base: str, out: list[Check]) -> list[_Node]:
        nodes: list[_Node] = []
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise _Unsupported("required")
        if required:
            names = frozenset(required)
            out.append(lambda x: x.keys() >= names)
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise _Unsupported("properties")
        if properties:
            compiled = {name: self.node(sub, base) for name, sub in properties.items()}
            nodes += compiled.values()
            pairs = tuple((name, node.check) for name, node in compiled.items())

            def each_property(x: dict[str, Any]) -> bool:
                for name, check in pairs:  # noqa: SIM110 -- the hot loop; all() is slower
                    if name in x and not check(x[name]):
                        return False
                return True

            out.append(each_property)
        extra = schema.get("additionalProperties", True)
        if extra is False:
            declared = frozenset(properties)
            out.append(lambda x: x.keys() <= declared)
        elif extra is not True:
            other = self.node(extra, base)
            nodes.append(other)
            out.append(lambda x: all(other.check(v) for k, v in x.items() if k not in properties))
        if "minProperties" in schema:
            fewest = _count(schema, "minProperties")
            out.append(lambda x: len(x) >= fewest)
        if "maxProperties" in schema:
            most = _count(schema, "maxProperties")
            out.append(lambda x: len(x) <= most)
        return nodes

    def arrays(self, schema: Mapping[str, Any], base: str, out: list[Check]) -> list[_Node]:
        nodes: list[_Node] = []
        if "items" in schema:
            item = self.node(schema["items"], base)
            nodes.append(item)
            check = item.check
            out.append(lambda x: all(check(e) for e in x))
        if "minItems" in schema:
            fewest = _count(schema, "minItems")
            out.append(lambda x: len(x) >= fewest)
        if "maxItems" in schema:
            most = _count(schema, "maxItems")
            out.append(lambda x: len(x) <= most)
        return nodes

    def applicators(self, schema: Mapping[str, Any], base: str) -> list[_Node]:
        nodes: list[_Node] = []
        for keyword in ("allOf", "anyOf", "oneOf"):
            if keyword not in schema:
                continue
            branches = schema[keyword]
            if not isinstance(branches, list) or not branches:
                raise _Unsupported(keyword)
            compiled = [self.node(b, base) for b in branches]
            exact = all(n.exact for n in compiled)
            checks = [n.check for n in compiled]
            if keyword == "allOf":
                nodes.append(_Node(_all(checks), exact))
            elif keyword == "anyOf":
                nodes.append(_Node(_any(checks), exact))
            elif exact:
                nodes.append(_Node(_one(checks), exact=True))
            else:  # "exactly one" needs exact "no" answers from the others
                raise _Unsupported("oneOf with a branch that is not exact")
        if "not" in schema:
            negated = self.node(schema["not"], base)
            if not negated.exact:
                raise _Unsupported("not with a subschema that is not exact")
            inner = negated.check
            nodes.append(_Node(lambda x: not inner(x), exact=True))
        return nodes

    def unevaluated(self, schema: dict[str, Any], base: str) -> Check:
        """`unevaluatedProperties` when `$ref` and `allOf` alone decide what is evaluated."""
        flag = schema["unevaluatedProperties"]
        if flag is True:
            return _always
        if flag is not False:
            raise _Unsupported("unevaluatedProperties with a subschema")
        evaluated: set[str] = set()
        seen: set[tuple[str, int]] = set()

        def walk(sub: Any, sub_base: str, top: bool) -> None:
            if not isinstance(sub, dict):
                return
            if (sub_base, id(sub)) in seen:
                raise _Unsupported("a $ref cycle")
            seen.add((sub_base, id(sub)))
            dynamic = [k for k in _DYNAMIC_EVALUATION if k in sub]
            if dynamic or (not top and sub.get("unevaluatedProperties", False) is not False):
                raise _Unsupported(f"unevaluatedProperties beside {dynamic}")
            evaluated.update(sub.get("properties", {}))
            if "$ref" in sub:
                walk(*self.schema.resolve(sub["$ref"], sub_base), top=False)
            for branch in sub.get("allOf", ()):
                walk(branch, sub_base, top=False)

        walk(schema, base, top=True)
        names = frozenset(evaluated)
        return lambda x: not isinstance(x, dict) or x.keys() <= names


def _guarded(guard: Check, inner: Check) -> Check:
    def check(x: Any) -> bool:
        return not guard(x) or inner(x)

    return check
