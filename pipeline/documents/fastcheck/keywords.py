"""The vocabulary the compiler mirrors: the dialect, the keywords it knows, and those it refuses
beside `unevaluatedProperties`. A schema with any other keyword compiles to None.
"""

from __future__ import annotations

DIALECTS = {
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
KEYWORDS = _IGNORED | {
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
DYNAMIC_EVALUATION = (
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
