"""A fast, one-sided stand-in for jsonschema: a schema compiled once into nested closures.

`compile_check` returns a predicate that says True only for documents that jsonschema
(`Schema.validator()`: Draft 2020-12 with format checking) accepts. False means "ask jsonschema",
which keeps the final word and the error messages. A schema using anything this package does not
mirror exactly compiles to None, and the caller uses jsonschema alone.

Every compiled node also knows whether it is *exact* (False also means invalid), because `not`,
`oneOf` and `anyOf` may only be built from exact nodes: negating a one-sided check is unsound.

- `compiler.py`: the schema walk, keyword by keyword
- `keywords.py`: the dialect and keywords mirrored
- `nodes.py`: nodes, the combinators (all/any/one) and the type tests
- `scalars.py`: `const`/`enum`, the formats (uuid, date-time, int32), numeric keyword values
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml
from referencing.exceptions import NoSuchResource, Unresolvable, Unretrievable

from pipeline.documents.fastcheck.compiler import Compiler
from pipeline.documents.fastcheck.nodes import Unsupported
from pipeline.documents.schema import Schema

__all__ = ["compile_check"]


def compile_check(schema: Schema) -> Callable[[Any], bool] | None:
    """A predicate true only for documents valid under `schema`, or None when not supported."""
    try:
        return Compiler(schema).node(schema.contents, schema.uri).check
    except (
        Unsupported,
        Unresolvable,
        NoSuchResource,
        Unretrievable,
        OSError,
        yaml.YAMLError,
        re.error,
    ):
        return None
