"""The frozen specs a checked catalog is made of."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.documents import pointers
from pipeline.documents.schema import Schema

if TYPE_CHECKING:
    from derivations.profiles.model import ProfilesSpec


@dataclass(frozen=True)
class TopicSpec:
    """A collection block's `topic:` settings; None where it leaves the default
    (`pipeline.catalog.topics`)."""

    cleanup: str | None = None
    """'compact' or 'delete'."""
    retention: float | None = None
    """Seconds a `delete` topic keeps its records (math.inf: forever)."""


@dataclass(frozen=True)
class CollectionSpec:
    """A collection: its documents' schema, key, partition count, redelivery window and the
    settings its block gives its topic."""

    name: str
    schema: Schema
    key: tuple[str, ...]
    partitions: int
    dedup_window: float | None
    topic_spec: TopicSpec = field(default_factory=TopicSpec)

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
    shuffle_first: bool = False
    """Shuffle on the first of the `shuffle` pointers that has a value (profile events: the
    anonymousId, else the userId), as its text, rather than on all of them."""

    def shuffle_encoder(self) -> Callable[[Any], bytes]:
        """The record key (and, hashed, the partition) this derivation's source is shuffled by."""
        if self.shuffle_first:
            return pointers.first_present_encoder(self.shuffle)
        return pointers.key_encoder(self.shuffle)


@dataclass(frozen=True)
class BindingSpec:
    """One collection written by a materialization (to `table` for Postgres)."""

    source: str
    table: str | None
    records: bool = False
    """The source is the `profiles:` section's records collection, whatever its name: its rows
    take the records shape (SPEC 8.5)."""


@dataclass(frozen=True)
class MaterializationSpec:
    """A sink. `config` holds strings: durations as seconds ('20.0'), integers as digits."""

    name: str
    kind: str
    config: Mapping[str, str]
    bindings: tuple[BindingSpec, ...]
    enabled: bool


@dataclass(frozen=True)
class DestinationSpec:
    """A destination (SPEC 9): chosen records kept in sync in another system.

    `kind` is 'webhook' (config: url, secret and the optional max_batch, timeout, max_attempts,
    as for a webhook materialization) or 'postgres' (config: dsn, schema, table). `groups` maps
    each tracked group to the tag sent for it, `properties` each remote field to the property
    it takes (`userId` and `id` name the record's own), `events` the product event types
    forwarded enriched. Disabled (not an error) when its url or dsn is empty.
    """

    name: str
    kind: str
    config: Mapping[str, str]
    groups: Mapping[str, str]
    properties: Mapping[str, str]
    mode: str = "sync"
    events: tuple[str, ...] = ()
    enabled: bool = True


@dataclass(frozen=True)
class ImportSpec:
    """An import (SPEC 10): rows of a Postgres table or query read by high watermark.

    Exactly one of `table` (optionally schema-qualified, `schema.table`) and `query` is set.
    `identity` is ('userId' or 'anonymousId', the column holding it). Disabled (not an error)
    when its dsn is empty.
    """

    name: str
    dsn: str
    table: str | None
    query: str | None
    watermark: str
    interval: float
    """Seconds between two runs of the schedule."""
    page_size: int
    identity: tuple[str, str]
    enabled: bool = True


@dataclass(frozen=True)
class Catalog:
    """Everything the catalog declares, checked."""

    collections: Mapping[str, CollectionSpec]
    derivations: Mapping[str, DerivationSpec]
    materializations: Mapping[str, MaterializationSpec]
    profiles: ProfilesSpec | None = None
    """The `profiles:` section (SPEC 8), whose stages are among `derivations`."""
    destinations: Mapping[str, DestinationSpec] = field(default_factory=dict)
    """The `destinations:` blocks (SPEC 9)."""
    imports: Mapping[str, ImportSpec] = field(default_factory=dict)
    """The `imports:` blocks (SPEC 10)."""

    def captured_source(self, name: str) -> str:
        """The captured collection a derived collection's documents come from, through every
        stage (`profile/records` and the profile stages' internal collections: the product
        events); `name` itself when it is captured. For what producers should write instead."""
        seen: set[str] = set()
        while name in self.derivations and name not in seen:
            seen.add(name)
            name = self.derivations[name].source
        if name in seen and self.profiles is not None:
            return self.profiles.events  # the unique stage reads what the records stage writes
        return name

    def captured(self) -> list[str]:
        """The collections producers may write, sorted: neither derived nor written by the
        records stage (the events it forwards to destinations, `profiles.forwarded`)."""
        own = set(self.derivations)
        if self.profiles is not None:
            own.add(self.profiles.records + ".forwarded")
        return sorted(name for name in self.collections if name not in own)

    def derivations_from(self, source: str) -> list[DerivationSpec]:
        """The derivations reading `source`, in declaration order."""
        return [d for d in self.derivations.values() if d.source == source]
