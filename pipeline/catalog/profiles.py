"""The catalog's `profiles:` section (SPEC 8): checked by `derivations.profiles.spec`, and turned
into the stages that build records, as derivations the runtime runs like any other.

- identity: `events` shuffled by anonymousId (the userId when there is none), so one owner sees
  every event of a device in arrival order. It links anonymousIds to userIds and writes each
  event, with the id of the record it belongs to, into the internal collection
  `<records>.identified`, partitioned by that record id.
- records: `<records>.identified` (already in its owners' partitions) into `records`.
- members, when `groupMembers` is declared: manual memberships into the identity stage's
  shuffle topic, keyed like product events, so they reach their person's record through the
  same links and merges (an anonymousId's membership follows it into the person's record).
- unique, only when a property is `unique: true`: the records stage writes each record's claims
  on the values of its unique properties into `<records>.claims`, partitioned by (property,
  value); the index there tells each claimant who holds the value, back through
  `<records>.identified` (`derivations.profiles.uniqueness` says who does).

The stages' transforms are the runtime's own (`IDENTITY`, `RECORDS`, `UNIQUE`, `MEMBERS`): they
need more than the publish/update contract of user derivations (state of other keys, deletes,
moving a record).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from derivations.profiles.model import ProfilesSpec
from derivations.profiles.spec import parse_valid_part
from pipeline.catalog.places import Place
from pipeline.catalog.specs import CollectionSpec, DerivationSpec
from pipeline.documents.schema import Schema, schema_of

IDENTITY = "segflow:profiles-identity"
RECORDS = "segflow:profiles-records"
UNIQUE = "segflow:profiles-unique"
MEMBERS = "segflow:profiles-members"
STAGES = (IDENTITY, RECORDS, UNIQUE, MEMBERS)
SEGMENT_EVENTS = "segment/events"
"""Where groups' membership changes go (SPEC 8.4): the segmentation path's captured events."""

_IDENTIFIED_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "an event with its record id, or a record moving into another (internal)",
    "type": "object",
    "properties": {"r": {"type": "string"}},
    "required": ["r"],
}


_CLAIMS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "a record claiming or releasing a value of a unique property (internal)",
    "type": "object",
    "properties": {"k": {"type": "string"}, "r": {"type": "string"}, "p": {"type": "string"}},
    "required": ["k", "r", "p", "v"],
}


def identified(records: str) -> str:
    """The internal collection between the identity and records stages."""
    return records + ".identified"


def claims(records: str) -> str:
    """The internal collection of claims on unique values (the unique stage's source)."""
    return records + ".claims"


def forwarded(records: str) -> str:
    """The internal collection of product events forwarded to destinations (SPEC 9, enriched
    events): `{"r": record id, "event": event, "document": the record's document after it}`,
    partitioned by record like `records`. Declared only when a destination lists `events`."""
    return records + ".forwarded"


def routed(group_members: str) -> str:
    """The name the members stage is kept under in `Catalog.derivations` (it derives no
    collection of its own: it feeds the identity stage)."""
    return group_members + ".routed"


def internal_collections(spec: ProfilesSpec) -> tuple[str, ...]:
    """The internal collections the profile stages of `spec` write."""
    if spec.unique:
        return identified(spec.records), claims(spec.records)
    return (identified(spec.records),)


@dataclass(frozen=True)
class Declared:
    """The names a `profiles:` section declares, valid or not: what destinations and imports are
    checked against, so a mistake in the section hides none of theirs, and a broken property or
    group is not reported again where it is named. None where `properties` or `groups` is not a
    mapping (reported in the section): nothing is checked against it."""

    properties: tuple[str, ...] | None
    groups: tuple[str, ...] | None
    imports: Mapping[str, str]
    """Property -> the import it reads (`from: {import: NAME}`)."""


def declared_names(raw: Any) -> Declared:
    """What the `profiles:` section `raw` (decoded YAML) declares."""
    body = {} if raw is None else raw

    def names(key: str) -> tuple[str, ...] | None:
        blocks = (body.get(key) or {}) if isinstance(body, dict) else None
        return tuple(map(str, blocks)) if isinstance(blocks, dict) else None

    properties = body.get("properties") if isinstance(body, dict) else None
    imports = {
        str(name): prop["from"]["import"]
        for name, prop in (properties.items() if isinstance(properties, dict) else ())
        if isinstance(prop, dict)
        and isinstance(prop.get("from"), dict)
        and isinstance(prop["from"].get("import"), str)
    }
    return Declared(names("properties"), names("groups"), imports)


def check_profiles(
    place: Place,
    raw: Any,
    collections: Mapping[str, CollectionSpec | None],
    derived: set[str],
) -> tuple[ProfilesSpec | None, dict[str, CollectionSpec], dict[str, DerivationSpec]]:
    """The section's spec, the internal collections and the stages (empty on problems)."""
    events_schema: Schema | None = None

    def declared(path: str) -> bool:
        if path == "/data" or path.startswith("/data/"):
            return True  # `data` is the producer's: any name may be in it
        return events_schema is not None and events_schema.has_location(path)

    names = set(collections)
    raw = {} if raw is None else raw  # an empty `profiles:`
    events = raw.get("events", "profile/events") if isinstance(raw, dict) else None
    if isinstance(events, str) and collections.get(events) is not None:
        events_schema = collections[events].schema  # type: ignore[union-attr]
    # The checks below run on the valid part too: a mistake in a property hides no other.
    spec, problems = parse_valid_part(
        raw, pointer=place.pointer, event_paths=declared, collections=names
    )
    before = len(place.file.problems)  # the catalog's list: what follows is this section's
    for pointer, message in problems:
        place.file.report(pointer, message)
    if not isinstance(raw, dict):
        return None, {}, {}
    for key, name in (("events", spec.events), ("records", spec.records)):
        if name not in collections and key not in raw:
            place.report(
                f"{key}: '{name}' (the default) is not a declared collection; declare it, or"
                f" name yours with '{key}:'"
            )
        elif name in derived:
            place.at(key).report(
                f"'{name}' is derived by a derivation of its own; profiles need a collection"
                " only they write"
                if key == "records"
                else f"'{name}' is derived; product events must be a captured collection"
            )
    if spec.groups and (SEGMENT_EVENTS not in collections or SEGMENT_EVENTS in derived):
        place.at("groups").report(
            f"groups flow into '{SEGMENT_EVENTS}' as segments of vendor groupVendor (SPEC 8.4):"
            f" declare it as a captured collection (catalog/segment.yaml has it)"
        )
    manual = [name for name, group in spec.groups.items() if group.manual]
    members = collections.get(spec.group_members)
    # A name given and not declared is reported above; a declared one in its own block.
    missing = spec.group_members not in collections and "groupMembers" not in raw
    if manual and (missing or spec.group_members in derived):
        place.at("groups", manual[0]).report(
            f"manual groups take their members from '{spec.group_members}' (SPEC 8.4): declare"
            " it as a captured collection (catalog/profiles.yaml has it), or name yours with"
            " 'groupMembers:'"
        )
    source, target = collections.get(spec.events), collections.get(spec.records)
    if len(place.file.problems) > before or source is None or target is None:
        return None, {}, {}
    if manual and members is None:  # declared, with problems of its own
        return None, {}, {}
    middle = identified(spec.records)

    def internal(name: str, schema: dict[str, Any], key: str) -> CollectionSpec:
        path = Path(str(target.schema.path)).with_name(name.replace("/", ".") + ".schema.json")
        return CollectionSpec(name, schema_of(schema, path), (key,), target.partitions, None)

    internals = {middle: internal(middle, _IDENTIFIED_SCHEMA, "/r")}
    stages = {
        middle: DerivationSpec(
            middle, spec.events, ("/anonymousId", "/userId"), None, IDENTITY, shuffle_first=True
        ),
        spec.records: DerivationSpec(spec.records, middle, ("/r",), None, RECORDS),
    }
    if len(internal_collections(spec)) > 1:
        index = claims(spec.records)
        internals[index] = internal(index, _CLAIMS_SCHEMA, "/k")
        # Keyed by its source: `derivations` maps a derived collection to what derives it, and
        # the tells go into `<records>.identified`, which the identity stage derives.
        stages[index] = DerivationSpec(middle, index, ("/k",), None, UNIQUE)
    if members is not None and spec.group_members not in derived:
        # Memberships resolve to records through the identity stage's links: this stage hands
        # them to it, in the identity stage's shuffle partitions.
        stages[routed(spec.group_members)] = DerivationSpec(
            middle, spec.group_members, ("/anonymousId", "/userId"), None, MEMBERS, True
        )
    return spec, internals, stages
