"""The schema walk: each subschema compiled once into a `Node`, keyword by keyword.

Type-specific keywords are gathered per type and guarded by one type test, which the schema's
own `type` makes unnecessary; `not`, `oneOf` and a recursive `$ref` keep exactness honest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.documents.fastcheck.keywords import DIALECTS, DYNAMIC_EVALUATION, KEYWORDS
from pipeline.documents.fastcheck.nodes import (
    GUARDS,
    IMPLIES,
    PLAIN_TYPES,
    TYPES,
    Check,
    Node,
    Unsupported,
    all_of,
    always,
    any_of,
    guarded,
    never,
    one_of,
)
from pipeline.documents.fastcheck.scalars import (
    FORMATS,
    NUMBER_FORMATS,
    const,
    count,
    enum,
    number,
)
from pipeline.documents.schema import Schema


class Compiler:
    """Walks a schema once into nodes; a `$ref` is compiled once, a recursive one through a cell."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.done: dict[tuple[str, int], Node] = {}
        self.pending: dict[tuple[str, int], list[Check]] = {}

    def node(self, schema: Any, base: str) -> Node:
        if schema is True:
            return Node(always, exact=True)
        if schema is False:
            return Node(never, exact=True)
        if not isinstance(schema, dict):
            raise Unsupported(repr(schema))
        unknown = schema.keys() - KEYWORDS
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        if "$schema" in schema and schema["$schema"] not in DIALECTS:
            raise Unsupported(schema["$schema"])

        declared = schema.get("type")
        known = IMPLIES.get(declared, declared) if isinstance(declared, str) else None
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
                inner = all_of(kind_checks)
                checks.append(inner if kind == known else guarded(GUARDS[kind], inner))
        nodes: list[Node] = []
        if "$ref" in schema:
            nodes.append(self.ref(schema["$ref"], base))
        if "const" in schema:
            nodes.append(Node(const(schema["const"]), exact=True))
        if "enum" in schema:
            nodes.append(Node(enum(schema["enum"]), exact=True))
        nodes += self.applicators(schema, base)
        checks += [n.check for n in nodes]
        exact = all(n.exact for n in nodes + children)
        if "unevaluatedProperties" in schema:
            checks.append(self.unevaluated(schema, base))
            exact = False
        return Node(all_of(checks), exact)

    def type(self, declared: Any) -> Check:
        names = [declared] if isinstance(declared, str) else declared
        if not isinstance(names, list) or not all(n in TYPES for n in names):
            raise Unsupported(f"type {declared!r}")
        if len(names) == 1:
            return TYPES[names[0]]
        tests = tuple(TYPES[n] for n in names)
        # The plain JSON types these names accept, tested first with one set lookup.
        plain = frozenset(t for n in names for t in PLAIN_TYPES[n])

        def any_type(x: Any) -> bool:
            if type(x) in plain:
                return True
            for test in tests:  # noqa: SIM110 -- the hot loop; any() over a generator is slower
                if test(x):
                    return True
            return False

        return any_type

    def ref(self, ref: Any, base: str) -> Node:
        if not isinstance(ref, str):
            raise Unsupported("$ref")
        target, target_base = self.schema.resolve(ref, base)
        key = (target_base, id(target))
        if key in self.done:
            return self.done[key]
        if key in self.pending:  # a recursive schema: call through a cell filled in later
            cell = self.pending[key]

            def later(x: Any) -> bool:
                return cell[0](x)

            return Node(later, exact=False)
        self.pending[key] = cell = [never]
        compiled = self.node(target, target_base)
        cell[0] = compiled.check
        del self.pending[key]
        self.done[key] = compiled
        return compiled

    def numbers(self, schema: Mapping[str, Any], out: list[Check]) -> None:
        if "minimum" in schema:
            low = number(schema, "minimum")
            out.append(lambda x: not x < low)
        if "exclusiveMinimum" in schema:
            xlow = number(schema, "exclusiveMinimum")
            out.append(lambda x: not x <= xlow)
        if "maximum" in schema:
            high = number(schema, "maximum")
            out.append(lambda x: not x > high)
        if "exclusiveMaximum" in schema:
            xhigh = number(schema, "exclusiveMaximum")
            out.append(lambda x: not x >= xhigh)
        if schema.get("format") in NUMBER_FORMATS:
            out.append(NUMBER_FORMATS[schema["format"]])

    def strings(self, schema: Mapping[str, Any], out: list[Check]) -> None:
        if "minLength" in schema:
            shortest = count(schema, "minLength")
            out.append(lambda x: len(x) >= shortest)
        if "maxLength" in schema:
            longest = count(schema, "maxLength")
            out.append(lambda x: len(x) <= longest)
        if "pattern" in schema:
            if not isinstance(schema["pattern"], str):
                raise Unsupported("pattern")
            search = re.compile(schema["pattern"]).search  # what jsonschema's re.search compiles
            out.append(lambda x: search(x) is not None)
        if "format" in schema and schema["format"] not in NUMBER_FORMATS:
            check = FORMATS.get(schema["format"])
            if check is None:
                raise Unsupported(f"format {schema['format']!r}")
            out.append(check)

    def objects(self, schema: Mapping[str, Any], base: str, out: list[Check]) -> list[Node]:
        nodes: list[Node] = []
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise Unsupported("required")
        if required:
            names = frozenset(required)
            out.append(lambda x: x.keys() >= names)
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise Unsupported("properties")
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
            other_check = other.check

            def each_other(x: dict[str, Any]) -> bool:
                for k, v in x.items():  # noqa: SIM110 -- the hot loop; all() is slower
                    if k not in properties and not other_check(v):
                        return False
                return True

            out.append(each_other)
        if "minProperties" in schema:
            fewest = count(schema, "minProperties")
            out.append(lambda x: len(x) >= fewest)
        if "maxProperties" in schema:
            most = count(schema, "maxProperties")
            out.append(lambda x: len(x) <= most)
        return nodes

    def arrays(self, schema: Mapping[str, Any], base: str, out: list[Check]) -> list[Node]:
        nodes: list[Node] = []
        if "items" in schema:
            item = self.node(schema["items"], base)
            nodes.append(item)
            check = item.check
            out.append(lambda x: all(check(e) for e in x))
        if "minItems" in schema:
            fewest = count(schema, "minItems")
            out.append(lambda x: len(x) >= fewest)
        if "maxItems" in schema:
            most = count(schema, "maxItems")
            out.append(lambda x: len(x) <= most)
        return nodes

    def applicators(self, schema: Mapping[str, Any], base: str) -> list[Node]:
        nodes: list[Node] = []
        for keyword in ("allOf", "anyOf", "oneOf"):
            if keyword not in schema:
                continue
            branches = schema[keyword]
            if not isinstance(branches, list) or not branches:
                raise Unsupported(keyword)
            compiled = [self.node(b, base) for b in branches]
            exact = all(n.exact for n in compiled)
            checks = [n.check for n in compiled]
            if keyword == "allOf":
                nodes.append(Node(all_of(checks), exact))
            elif keyword == "anyOf":
                nodes.append(Node(any_of(checks), exact))
            elif exact:
                nodes.append(Node(one_of(checks), exact=True))
            else:  # "exactly one" needs exact "no" answers from the others
                raise Unsupported("oneOf with a branch that is not exact")
        if "not" in schema:
            negated = self.node(schema["not"], base)
            if not negated.exact:
                raise Unsupported("not with a subschema that is not exact")
            inner = negated.check
            nodes.append(Node(lambda x: not inner(x), exact=True))
        return nodes

    def unevaluated(self, schema: dict[str, Any], base: str) -> Check:
        """`unevaluatedProperties` when `$ref` and `allOf` alone decide what is evaluated."""
        flag = schema["unevaluatedProperties"]
        if flag is True:
            return always
        if flag is not False:
            raise Unsupported("unevaluatedProperties with a subschema")
        evaluated: set[str] = set()
        seen: set[tuple[str, int]] = set()

        def walk(sub: Any, sub_base: str, top: bool) -> None:
            if not isinstance(sub, dict):
                return
            if (sub_base, id(sub)) in seen:
                raise Unsupported("a $ref cycle")
            seen.add((sub_base, id(sub)))
            dynamic = [k for k in DYNAMIC_EVALUATION if k in sub]
            if dynamic or (not top and sub.get("unevaluatedProperties", False) is not False):
                raise Unsupported(f"unevaluatedProperties beside {dynamic}")
            evaluated.update(sub.get("properties", {}))
            if "$ref" in sub:
                walk(*self.schema.resolve(sub["$ref"], sub_base), top=False)
            for branch in sub.get("allOf", ()):
                walk(branch, sub_base, top=False)

        walk(schema, base, top=True)
        names = frozenset(evaluated)
        return lambda x: not isinstance(x, dict) or x.keys() <= names
