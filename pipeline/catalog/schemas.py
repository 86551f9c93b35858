"""A collection's or register's schema file: loaded once, with every reason it is unusable."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml
from jsonschema.exceptions import SchemaError
from referencing.exceptions import Unresolvable, Unretrievable

from pipeline.catalog.places import Place
from pipeline.catalog.readers import string
from pipeline.catalog.yaml_files import yaml_error
from pipeline.documents import pointers
from pipeline.documents.schema import Schema, load_schema
from pipeline.errors import Problem

# Keywords whose values are data, not subschemas: a "$ref" inside them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples", "reduce"})


def unresolved_ref(schema: Schema) -> str | None:
    """Follow every `$ref`, also into other files: a description of the first that fails."""
    seen: set[tuple[str, str]] = set()

    def walk(node: Any, base: str, at: str) -> str | None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                if (found := walk(item, base, f"{at}/{i}")) is not None:
                    return found
            return None
        if not isinstance(node, dict) or (base, at) in seen:
            return None
        seen.add((base, at))
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                target, target_base = schema.resolve(ref, base)
            except (Unresolvable, Unretrievable):
                where = at or "/"
                if base != schema.uri:
                    where += " of " + Path(unquote(urlparse(base).path)).name
                return f"has a $ref '{ref}' at {where} that cannot be resolved"
            fragment = ref.partition("#")[2]
            if (found := walk(target, target_base, fragment)) is not None:
                return found
        for key, child in node.items():
            if key in _DATA_KEYWORDS:
                continue
            if (found := walk(child, base, at + "/" + pointers.escape(str(key)))) is not None:
                return found
        return None

    return walk(schema.contents, schema.uri, "")


def annotation_problems(schema: Schema, shown: str) -> list[Problem]:
    """Problems with the schema's `reduce` annotations, located in the schema file."""
    from pipeline.documents.reduce import check_annotations

    return [Problem(shown, pointer, message) for pointer, message in check_annotations(schema)]


def load_schema_file(path: Path, shown: str) -> Schema | str:
    """The schema at `path`, or why it is unusable."""
    try:
        schema = load_schema(path)
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    except yaml.YAMLError as error:
        return f"is not valid YAML ({yaml_error(error)})"
    except SchemaError as error:
        where = pointers.join(*error.absolute_path)
        return f"is not a valid 2020-12 JSON Schema at {where or '/'}: {error.message}"
    unresolved = unresolved_ref(schema)
    return schema if unresolved is None else unresolved


@dataclass
class SchemaFiles:
    """The schema files named so far, each loaded and checked once however often it is named.

    Problems inside a schema file (its `reduce` annotations) go to `problems` on first load;
    why a schema is unusable is reported at every place that names it.
    """

    problems: list[Problem]
    loaded: dict[Path, Schema | str] = field(default_factory=dict)

    def schema(self, place: Place, ref: Any) -> Schema | None:
        """Load the schema `ref` (relative to the catalog file), reporting at `place`."""
        text = string(place, ref, "schema")
        if text is None:
            return None
        path = place.file.path.parent / text
        resolved = path.resolve()
        if resolved not in self.loaded:
            shown = os.path.normpath(path)
            loaded = self.loaded[resolved] = load_schema_file(path, shown)
            if isinstance(loaded, Schema):
                self.problems += annotation_problems(loaded, shown)
        loaded = self.loaded[resolved]
        if isinstance(loaded, str):
            place.report(f"schema '{text}' {loaded}")
            return None
        return loaded
