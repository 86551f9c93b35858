"""The catalog: YAML files the user edits, read into frozen specs (`Catalog`, `CollectionSpec`,
`DerivationSpec`, `MaterializationSpec`, `BindingSpec`) with `${NAME}` interpolation, every
problem collected with its file and JSON pointer before failing.

Uses `pipeline.errors` and `pipeline.documents`. The modules, bottom up:

- `specs`: the frozen specs a checked catalog is made of.
- `durations`: `parse_duration`, '500ms' to '7d' or seconds.
- `places`: where a problem is (file, JSON pointer, what lives there).
- `yaml_files`: the duplicate-key-rejecting YAML loader, error positions, the files to read.
- `interpolate`: `${NAME}`, `${NAME:-default}` and `$$`.
- `readers`: typed readers that report at a place (mapping, string, integer, pointers, ...).
- `schemas`: schema files loaded once, with unresolved `$ref`s and `reduce` problems.
- `topics`: what a collection's topic keeps (compacted, or records kept for a time), and the
  collection block's `topic:` settings.
- `collection`, `derivation`, `transform`, `materialization`: checking each kind of block.
- `profiles`: the `profiles:` section's stages and internal collections (SPEC 8).
- `destinations`, `imports`: the `destinations:` and `imports:` blocks (SPEC 9, 10).
- `load`: `load_catalog`, which reads every file, checks every block and raises once.
"""

from pipeline.catalog.durations import parse_duration
from pipeline.catalog.load import load_catalog
from pipeline.catalog.specs import (
    BindingSpec,
    Catalog,
    CollectionSpec,
    DerivationSpec,
    DestinationSpec,
    ImportSpec,
    MaterializationSpec,
    RegisterSpec,
    TopicSpec,
)

__all__ = [
    "BindingSpec",
    "Catalog",
    "CollectionSpec",
    "DerivationSpec",
    "DestinationSpec",
    "ImportSpec",
    "MaterializationSpec",
    "RegisterSpec",
    "TopicSpec",
    "load_catalog",
    "parse_duration",
]
