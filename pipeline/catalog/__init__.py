"""The catalog: YAML files the user edits, read into frozen specs (`Catalog`, `CollectionSpec`,
`DerivationSpec`, `MaterializationSpec`, `BindingSpec`) with `${NAME}` interpolation, every
problem collected with its file and JSON pointer before failing.

Uses `pipeline.errors` and `pipeline.documents`.
"""

from pipeline.catalog.load import (
    BindingSpec,
    Catalog,
    CollectionSpec,
    DerivationSpec,
    MaterializationSpec,
    RegisterSpec,
    load_catalog,
    parse_duration,
)

__all__ = [
    "BindingSpec",
    "Catalog",
    "CollectionSpec",
    "DerivationSpec",
    "MaterializationSpec",
    "RegisterSpec",
    "load_catalog",
    "parse_duration",
]
