"""Validating documents of a collection: a compiled fast check first, jsonschema for verdicts
and messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jsonschema.exceptions import ValidationError

from pipeline.documents import pointers
from pipeline.documents.fastcheck import compile_check
from pipeline.documents.schema import Schema


@dataclass(frozen=True)
class Invalid:
    """One reason a document is invalid: where (JSON pointer) and what was expected."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '/'}: {self.message}"


class Validator:
    """Validates documents against a collection's schema, with format checking."""

    def __init__(self, schema: Schema) -> None:
        self._validator = schema.validator()
        # A compiled check that only says yes to valid documents: ~30x cheaper than jsonschema.
        self._fast = compile_check(schema) or self._validator.is_valid

    def is_valid(self, doc: Any) -> bool:
        return bool(self._fast(doc) or self._validator.is_valid(doc))

    def problems(self, doc: Any) -> list[Invalid]:
        """Every reason `doc` is invalid, ordered by location; empty when it is valid."""
        if self._fast(doc):
            return []
        # Several keywords of one schema can share a message: each reason is said once.
        found = dict.fromkeys(
            Invalid(pointers.join(*e.absolute_path), message(e))
            for e in self._validator.iter_errors(doc)
        )
        return sorted(found, key=lambda p: p.path)

    def errors(self, doc: Any) -> list[str]:
        """`problems` as 'path: message' lines."""
        return [str(p) for p in self.problems(doc)]


def message(error: ValidationError) -> str:
    """The schema's own `errorMessage` for the failing keyword (as in ajv-errors: a string for
    every keyword of that schema, or an object by keyword), else jsonschema's message."""
    custom = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
    if isinstance(custom, dict):
        custom = custom.get(error.validator)
    return custom if isinstance(custom, str) else error.message
