"""Checking derivation blocks: source, shuffle, register, and one shuffle per source."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.catalog.places import Entry, Place
from pipeline.catalog.readers import json_pointers, listing, mapping, required, string, suggest
from pipeline.catalog.schemas import SchemaFiles
from pipeline.catalog.specs import CollectionSpec, DerivationSpec, RegisterSpec
from pipeline.catalog.transform import check_transform
from pipeline.documents.schema import Schema

DERIVATION_KEYS = ("source", "shuffle", "register", "transform")
REGISTER_KEYS = ("schema", "key")


@dataclass
class Derivations:
    """Checks derivations one by one, remembering each shuffle to compare them per source."""

    schemas: SchemaFiles
    collection_schemas: Mapping[str, Schema]
    shuffles: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)

    def derivation(
        self, entry: Entry, collections: Mapping[str, CollectionSpec | None]
    ) -> DerivationSpec | None:
        """The derivation's spec, or None when its block has problems (all reported)."""
        place, name = entry.place, entry.name
        if name not in collections:
            place.report(
                f"no collection '{name}' is declared to publish into{suggest(name, collections)}"
            )
        body = mapping(place, entry.body, DERIVATION_KEYS, "a derivation")
        if body is None:
            return None
        source = string(place.at("source"), required(place, body, "source"), "source")
        source_schema: Schema | None = None
        if source is not None and source not in collections:
            place.at("source").report(
                f"source '{source}' is not a declared collection{suggest(source, collections)}"
            )
            source = None
        elif source == name:
            place.at("source").report(
                "source must be another collection, not the derivation itself"
            )
            source = None
        elif source is not None:
            # The source's schema serves even when its own block has other problems.
            source_schema = self.collection_schemas.get(source)
        where = f"schema of source '{source}'"
        shuffle = json_pointers(
            place.at("shuffle"), required(place, body, "shuffle"), "shuffle", source_schema, where
        )
        if source is not None and shuffle is not None:
            self.shuffles.append((name, source, shuffle))
        register = self.register(place.at("register"), body, shuffle, source_schema, where)
        transform = check_transform(place, body, has_register="register" in body)
        if source is None or shuffle is None or transform is None:
            return None
        if "register" in body and register is None:
            return None
        return DerivationSpec(name, source, shuffle, register, transform)

    def register(
        self,
        place: Place,
        body: Mapping[str, Any],
        shuffle: tuple[str, ...] | None,
        source_schema: Schema | None,
        where: str,
    ) -> RegisterSpec | None:
        """The register, whose key must include the shuffle so it stays within a partition."""
        if "register" not in body:
            return None
        register = mapping(place, body["register"], REGISTER_KEYS, "register")
        if register is None:
            return None
        schema = self.schemas.schema(place.at("schema"), required(place, register, "schema"))
        key = json_pointers(
            place.at("key"), required(place, register, "key"), "register key", source_schema, where
        )
        if key is not None and shuffle is not None:
            for pointer in shuffle:
                if pointer not in key:
                    place.at("key").report(
                        f"register key {listing(key)} must include shuffle pointer '{pointer}'"
                        " (a register must not span partitions)"
                    )
                    key = None
                    break
        return None if schema is None or key is None else RegisterSpec(schema, key)

    def check_shuffles(self, entries: Mapping[str, Entry]) -> None:
        """Every derivation of one source shuffles it the same way: one shuffle per source."""
        first: dict[str, tuple[str, tuple[str, ...]]] = {}
        for name, source, shuffle in self.shuffles:
            reference, expected = first.setdefault(source, (name, shuffle))
            if shuffle != expected:
                entries[name].place.at("shuffle").report(
                    f"shuffle {listing(shuffle)} differs from {listing(expected)}"
                    f" of derivation '{reference}', which reads the same source '{source}'"
                    " (one shuffle per source)"
                )
