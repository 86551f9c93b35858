"""`load_catalog`: read every file, then check collections, profiles, derivations,
materializations, destinations, imports, and what the collections ask of their topics.

It interpolates environment variables, checks everything it can and raises one `CatalogError`
carrying every problem (file, JSON pointer inside it, reason), never just the first.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import yaml

from pipeline.catalog.collection import check_collection
from pipeline.catalog.derivation import Derivations
from pipeline.catalog.destinations import check_destination, forwarded_collection
from pipeline.catalog.imports import check_import
from pipeline.catalog.interpolate import BROKEN, interpolate
from pipeline.catalog.materialization import check_materialization
from pipeline.catalog.places import Entry, File, Place
from pipeline.catalog.profiles import Declared, check_profiles, declared_names, forwarded
from pipeline.catalog.readers import mapping, suggest
from pipeline.catalog.schemas import SchemaFiles
from pipeline.catalog.specs import (
    Catalog,
    CollectionSpec,
    DerivationSpec,
    MaterializationSpec,
)
from pipeline.catalog.topics import check_topics
from pipeline.catalog.yaml_files import UniqueKeyLoader, catalog_files, yaml_error
from pipeline.documents import pointers
from pipeline.documents.schema import Schema
from pipeline.errors import CatalogError, Problem

_TOP_KEYS = (
    "collections",
    "derivations",
    "materializations",
    "profiles",
    "destinations",
    "imports",
    "import",
)
_SECTIONS = {
    "collections": "collection",
    "derivations": "derivation",
    "materializations": "materialization",
    "destinations": "destination",
    "imports": "import",
}


@dataclass
class _Loader:
    """Collects the entries of every file first, so blocks may refer to each other freely."""

    env: Mapping[str, str]
    problems: list[Problem] = field(default_factory=list)
    entries: dict[str, dict[str, Entry]] = field(
        default_factory=lambda: {section: {} for section in _SECTIONS}
    )
    profiles: Entry | None = None

    def read(self, path: Path) -> None:
        """Parse one file, interpolate it, and file its entries by section."""
        file = File(path, self.problems)
        try:
            document = yaml.load(path.read_bytes(), Loader=UniqueKeyLoader)
        except OSError as error:
            file.report("", f"cannot read the catalog file ({error.strerror or error})")
            return
        except yaml.YAMLError as error:
            file.report("", f"invalid YAML at {yaml_error(error)}")
            return
        if document is None:
            return  # an empty file declares nothing
        top = Place(file, "", "")
        if mapping(top, document, _TOP_KEYS, "the top level of a catalog file") is None:
            return
        if "profiles" in document:
            self._profiles(top, document["profiles"])
        for section, kind in _SECTIONS.items():
            if section not in document or document[section] is None:
                continue
            blocks = interpolate(document[section], top.at(section), self.env)
            if blocks is BROKEN:
                continue
            if not isinstance(blocks, dict):
                top.at(section).report(f"'{section}' must be a mapping of name to {kind}")
                continue
            for name, body in blocks.items():
                place = Place(file, pointers.join(section, str(name)), f"{kind} '{name}'")
                self._add(section, Entry(place, str(name), body))

    def _profiles(self, top: Place, raw: object) -> None:
        """The one `profiles:` section (SPEC 8), checked once every collection is known."""
        place = Place(top.file, "/profiles", "")
        body = interpolate(raw, place, self.env)
        if body is BROKEN:
            return
        if self.profiles is not None:
            place.report(f"profiles: already declared in {self.profiles.place.file.path}")
            return
        self.profiles = Entry(place, "profiles", body)

    def _add(self, section: str, entry: Entry) -> None:
        first = self.entries[section].get(entry.name)
        if first is None:
            self.entries[section][entry.name] = entry
        elif first.place.file.path == entry.place.file.path:
            entry.place.report("declared twice in this file")
        else:
            entry.place.report(
                f"declared in both {first.place.file.path} and {entry.place.file.path}"
            )

    def build(self) -> Catalog:
        """Check every entry read, in order: collections, profiles, derivations,
        materializations, destinations, imports."""
        schemas = SchemaFiles(self.problems)
        collection_schemas: dict[str, Schema] = {}
        derived = set(self.entries["derivations"])
        checked = {
            name: check_collection(entry, name in derived, schemas, collection_schemas)
            for name, entry in self.entries["collections"].items()
        }
        profiles = None
        stages: dict[str, DerivationSpec] = {}
        if self.profiles is not None:
            profiles, internal, stages = check_profiles(
                self.profiles.place, self.profiles.body, checked, derived
            )
            checked.update(internal)
        # Valid or not, a declared collection may be referenced: only its own block is reported.
        checker = Derivations(schemas, collection_schemas)
        derivations = {
            name: checker.derivation(entry, checked)
            for name, entry in self.entries["derivations"].items()
        }
        valid_derivations = {k: v for k, v in derivations.items() if v is not None}
        valid_derivations.update(stages)
        checker.check_shuffles(self.entries["derivations"])
        materializations = {
            name: check_materialization(entry, checked)
            for name, entry in self.entries["materializations"].items()
        }
        valid_materializations = {k: v for k, v in materializations.items() if v is not None}
        if profiles is not None:
            valid_materializations = {
                name: _marking_records(spec, profiles.records)
                for name, spec in valid_materializations.items()
            }
        declared = None if self.profiles is None else declared_names(self.profiles.body)
        destinations = {
            name: check_destination(entry, profiles, declared)
            for name, entry in self.entries["destinations"].items()
        }
        valid_destinations = {k: v for k, v in destinations.items() if v is not None}
        self._check_names()
        imports = {name: check_import(entry) for name, entry in self.entries["imports"].items()}
        if declared is not None and self.profiles is not None:
            self._check_import_sources(self.profiles.place, declared)
        if profiles is not None and any(d.events for d in valid_destinations.values()):
            checked.update(_forwarding(profiles.records, checked))
        catalog = Catalog(
            MappingProxyType({k: v for k, v in checked.items() if v is not None}),
            MappingProxyType(valid_derivations),
            MappingProxyType(valid_materializations),
            profiles,
            destinations=MappingProxyType(valid_destinations),
            imports=MappingProxyType({k: v for k, v in imports.items() if v is not None}),
        )
        check_topics(catalog, {name: e.place for name, e in self.entries["collections"].items()})
        return catalog

    def _check_names(self) -> None:
        """A destination and a materialization of one name would share a dead-letter topic
        (`Names.sink_dead_letter`) and `segflow dlq NAME`."""
        for name, entry in self.entries["destinations"].items():
            if name in self.entries["materializations"]:
                first = self.entries["materializations"][name].place.file.path
                entry.place.report(
                    f"a materialization in {first} has this name too: the two would share a"
                    f" dead-letter topic and `segflow dlq {name}`"
                )

    def _check_import_sources(self, place: Place, profiles: Declared) -> None:
        """Every property read from an import names a declared import (valid or not: only its
        own block is reported), whether or not the `profiles:` section has problems."""
        declared = self.entries["imports"]
        for name, source in profiles.imports.items():
            if source not in declared:
                place.at("properties", name, "from", "import").report(
                    f"property '{name}': import '{source}' is not a declared import"
                    f"{suggest(source, declared)}"
                )


def _forwarding(
    records: str, collections: Mapping[str, CollectionSpec | None]
) -> dict[str, CollectionSpec]:
    """The internal collection of events forwarded to destinations, beside `records`."""
    target = collections.get(records)
    if target is None:
        return {}
    name = forwarded(records)
    return {name: forwarded_collection(name, target)}


def _marking_records(spec: MaterializationSpec, records: str) -> MaterializationSpec:
    """`spec` with its bindings of the profile records collection marked as such."""
    bindings = tuple(
        dataclasses.replace(b, records=True) if b.source == records else b for b in spec.bindings
    )
    return dataclasses.replace(spec, bindings=bindings)


def load_catalog(paths: Sequence[Path] | Path, env: Mapping[str, str] | None = None) -> Catalog:
    """Load and check catalog files (or every *.yaml / *.yml in a directory).

    `env` (default: os.environ) feeds `${NAME}` and `${NAME:-default}`. Raises CatalogError
    listing every problem found.
    """
    loader = _Loader(os.environ if env is None else env)
    files = catalog_files(paths, loader.problems)
    for path in files:
        loader.read(path)
    catalog = loader.build()
    if loader.problems:
        # Grouped by catalog file in reading order, then schema files; within one, as found.
        order = {str(path): i for i, path in enumerate(files)}
        problems = sorted(loader.problems, key=lambda problem: order.get(problem.file, len(order)))
        raise CatalogError(problems)
    return catalog
