"""Load JSON Schema (2020-12) files written in YAML, resolve `$ref`s, and validate documents."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from pipeline.documents import pointers

# Draft 2020-12's format checks, and one of ours (`int32`).
FORMAT_CHECKER = FormatChecker(())
FORMAT_CHECKER.checkers.update(Draft202012Validator.FORMAT_CHECKER.checkers)


def is_int32(instance: object) -> bool:
    """OpenAPI's `int32` (a Postgres `integer`), written as a JSON integer.

    JSON Schema counts 3.0 as an integer; Postgres does not ('3.0'::int fails), and as a key it
    is not 3 (keys are JSON text). Like every format, it says nothing about other types.
    """
    if isinstance(instance, bool) or not isinstance(instance, int | float):
        return True
    return isinstance(instance, int) and -(2**31) <= instance < 2**31


FORMAT_CHECKER.checks("int32")(is_int32)


def load_yaml(path: Path) -> Any:
    with path.open("rb") as f:
        return yaml.safe_load(f)


@functools.lru_cache(maxsize=256)
def _retrieve(uri: str) -> Resource[Any]:
    # Registries are immutable: without the cache a validator re-reads a referenced file on
    # every document it checks.
    if not uri.startswith("file://"):
        raise Unresolvable(uri)
    return Resource.from_contents(load_yaml(Path(uri.removeprefix("file://"))), DRAFT202012)


@dataclass
class Schema:
    """A schema file with everything it references, ready to validate and to walk."""

    path: Path
    contents: dict[str, Any]
    registry: Registry[Any] = field(repr=False)

    @property
    def uri(self) -> str:
        return self.path.resolve().as_uri()

    def validator(self) -> Draft202012Validator:
        """A validator that checks formats (uuid, date-time, ..., and `int32`)."""
        return Draft202012Validator(
            {"$ref": self.uri}, registry=self.registry, format_checker=FORMAT_CHECKER
        )

    def resolve(self, ref: str, base_uri: str) -> tuple[dict[str, Any], str]:
        """Follow `$ref` from a subschema whose base is `base_uri`: (target, its base URI)."""
        resolved = self.registry.resolver(base_uri=base_uri).lookup(ref)
        contents = resolved.contents
        if not isinstance(contents, dict):
            raise Unresolvable(ref)
        # The target's own base: the document's URI, without the fragment.
        target_uri = resolved.resolver._base_uri
        return contents, target_uri

    def subschemas(
        self, schema: dict[str, Any], base_uri: str
    ) -> Iterator[tuple[dict[str, Any], str]]:
        """`schema` and what it applies in place: `$ref` targets and `allOf` branches."""
        yield schema, base_uri
        ref = schema.get("$ref")
        if isinstance(ref, str):
            target, target_uri = self.resolve(ref, base_uri)
            yield from self.subschemas(target, target_uri)
        for branch in schema.get("allOf", ()):
            if isinstance(branch, dict):
                yield from self.subschemas(branch, base_uri)

    def has_location(self, pointer: str) -> bool:
        """Whether the schema declares the document location `pointer` (through properties)."""
        frontier = [(self.contents, self.uri)]
        for token in pointers.parse(pointer):
            following: list[tuple[dict[str, Any], str]] = []
            for schema, base in frontier:
                for sub, sub_base in self.subschemas(schema, base):
                    prop = sub.get("properties", {}).get(token)
                    if isinstance(prop, dict):
                        following.append((prop, sub_base))
            if not following:
                return False
            frontier = following
        return True

    def property_names(self, pointer: str) -> list[str]:
        """Every property name declared at the location `pointer`, as pointers (for suggestions)."""
        names: list[str] = []

        def walk(schema: dict[str, Any], base: str, prefix: str, depth: int) -> None:
            for sub, sub_base in self.subschemas(schema, base):
                for name, prop in sub.get("properties", {}).items():
                    here = prefix + "/" + pointers.escape(name)
                    names.append(here)
                    if isinstance(prop, dict) and depth < 4:
                        walk(prop, sub_base, here, depth + 1)

        walk(self.contents, self.uri, "", 0)
        return names


def load_schema(path: Path) -> Schema:
    """Load a schema file; raises OSError, yaml.YAMLError or SchemaError when it is unusable."""
    contents = load_yaml(path)
    if not isinstance(contents, dict):
        raise SchemaError(f"a schema must be an object, not {type(contents).__name__}")
    Draft202012Validator.check_schema(contents)
    uri = path.resolve().as_uri()
    registry: Registry[Any] = Registry(retrieve=_retrieve).with_resource(  # type: ignore[call-arg]
        uri, Resource.from_contents(contents, DRAFT202012)
    )
    return Schema(path=path, contents=contents, registry=registry)


def schema_of(contents: dict[str, Any], path: Path) -> Schema:
    """A schema built in code (an internal collection's), named as if read from `path`."""
    Draft202012Validator.check_schema(contents)
    uri = path.resolve().as_uri()
    registry: Registry[Any] = Registry(retrieve=_retrieve).with_resource(  # type: ignore[call-arg]
        uri, Resource.from_contents(contents, DRAFT202012)
    )
    return Schema(path=path, contents=contents, registry=registry)
