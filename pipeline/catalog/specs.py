"""The frozen specs a checked catalog is made of."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.documents.schema import Schema


@dataclass(frozen=True)
class CollectionSpec:
    """A collection: its documents' schema, key, partition count and redelivery window."""

    name: str
    schema: Schema
    key: tuple[str, ...]
    partitions: int
    dedup_window: float | None

    @property
    def topic(self) -> str:
        """The topic name without namespace prefix: 'segment/events' -> 'segment.events'."""
        return self.name.replace("/", ".")


@dataclass(frozen=True)
class RegisterSpec:
    """Per-key state of a derivation, reduced by the register schema's annotations."""

    schema: Schema
    key: tuple[str, ...]


@dataclass(frozen=True)
class DerivationSpec:
    """How `collection` is derived from `source` by the `transform` ('module:attribute')."""

    collection: str
    source: str
    shuffle: tuple[str, ...]
    register: RegisterSpec | None
    transform: str


@dataclass(frozen=True)
class BindingSpec:
    """One collection written by a materialization (to `table` for Postgres)."""

    source: str
    table: str | None


@dataclass(frozen=True)
class MaterializationSpec:
    """A sink. `config` holds strings: durations as seconds ('20.0'), integers as digits."""

    name: str
    kind: str
    config: Mapping[str, str]
    bindings: tuple[BindingSpec, ...]
    enabled: bool


@dataclass(frozen=True)
class Catalog:
    """Everything the catalog declares, checked."""

    collections: Mapping[str, CollectionSpec]
    derivations: Mapping[str, DerivationSpec]
    materializations: Mapping[str, MaterializationSpec]

    def derivations_from(self, source: str) -> list[DerivationSpec]:
        """The derivations reading `source`, in declaration order."""
        return [d for d in self.derivations.values() if d.source == source]
