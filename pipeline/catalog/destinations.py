"""Checking destination blocks (SPEC 9): one endpoint, the tracked groups and their tags, the
mapped properties, the sync mode and the events forwarded enriched.

A destination sends profile records, so it needs the `profiles:` section: its groups and
properties are checked against the names that section declares, valid or not (`Declared`), so
the section's own problems are not reported again as the destination's, and hide none of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from derivations.profiles.model import ProfilesSpec
from pipeline.catalog.interpolate import BROKEN
from pipeline.catalog.materialization import webhook
from pipeline.catalog.places import Entry, Place
from pipeline.catalog.profiles import Declared
from pipeline.catalog.readers import identifier, kind, mapping, required, string, suggest
from pipeline.catalog.specs import CollectionSpec, DestinationSpec
from pipeline.documents.schema import schema_of

DESTINATION_KEYS = ("webhook", "postgres", "groups", "properties", "mode", "events")
POSTGRES_KEYS = ("dsn", "schema", "table")
MODES = ("sync", "additive", "enrich")
RECORD_FIELDS = ("id", "userId")
"""What a remote field may take besides a declared property: the record's own ids."""
TAG_LENGTH = 100
NAME = re.compile(r"[A-Za-z0-9_.-]+")
"""Destination names: they become parts of consumer-group and topic names."""

_FORWARDED_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "a product event forwarded to destinations, with its record (internal)",
    "type": "object",
    "properties": {"r": {"type": "string"}},
    "required": ["r"],
}


def check_destination(
    entry: Entry, profiles: ProfilesSpec | None, declared: Declared | None
) -> DestinationSpec | None:
    """The destination's spec, or None when its block has problems (all reported).

    `profiles` is the checked `profiles:` section, None when it has problems (reported there)
    or when there is none; `declared` what the section declares, None when there is none (a
    problem of this destination). It is disabled (not an error) when its url or dsn is empty,
    e.g. `${CRM_URL:-}` unset.
    """
    place = entry.place
    if not NAME.fullmatch(entry.name):
        place.report(
            "invalid name: expected letters, digits, '-', '_' or '.' (it is part of topic and"
            " consumer-group names)"
        )
    body = mapping(place, entry.body, DESTINATION_KEYS, "a destination")
    if body is None:
        return None
    if declared is None:
        place.report(
            "destinations send profile records: the catalog needs a 'profiles:' section (SPEC 8)"
        )
    kinds = [k for k in ("webhook", "postgres") if k in body]
    endpoint = kinds[0] if len(kinds) == 1 else None
    config: dict[str, str] | None = None
    if endpoint is None:
        place.report(
            "needs exactly one endpoint, 'webhook' or 'postgres', "
            + ("not both" if kinds else "found none")
        )
    elif endpoint == "postgres":
        config = postgres(place.at(endpoint), body[endpoint])
    else:
        config = webhook(place.at(endpoint), body[endpoint])
    # Without a section (reported above) no name is checked.
    names = Declared(None, None, {}) if declared is None else declared
    groups = tracked_groups(place.at("groups"), required(place, body, "groups"), names.groups)
    properties = mapped_properties(
        place.at("properties"), body.get("properties", {}), names.properties
    )
    mode = sync_mode(place.at("mode"), body.get("mode", "sync"))
    events = event_types(place.at("events"), body["events"]) if "events" in body else ()
    if (
        endpoint is None
        or config is None
        or groups is None
        or properties is None
        or mode is None
        or events is None
        or profiles is None
    ):
        return None
    return DestinationSpec(
        entry.name,
        endpoint,
        MappingProxyType(config),
        MappingProxyType(groups),
        MappingProxyType(properties),
        mode,
        events,
        enabled=config["url" if endpoint == "webhook" else "dsn"] != "",
    )


def postgres(place: Place, value: Any) -> dict[str, str] | None:
    """A postgres destination's config: dsn, schema (default public) and table."""
    body = mapping(place, value, POSTGRES_KEYS, "postgres")
    if body is None:
        return None
    dsn = string(place.at("dsn"), required(place, body, "dsn"), "postgres dsn")
    schema = identifier(place.at("schema"), body.get("schema", "public"), "postgres schema")
    table = identifier(place.at("table"), required(place, body, "table"), "postgres table")
    if dsn is None or schema is None or table is None:
        return None
    return {"dsn": dsn, "schema": schema, "table": table}


def tracked_groups(
    place: Place, value: Any, declared: Sequence[str] | None
) -> dict[str, str] | None:
    """Tracked group -> tag; each group one of `declared` (unchecked when it is None)."""
    if value is BROKEN:
        return None
    if not isinstance(value, dict) or not value:
        place.report(
            f"groups must be a non-empty mapping of tracked group to tag, like {{vip: VIP}},"
            f" not {kind(value)}"
        )
        return None
    result: dict[str, str] = {}
    for raw_name, tag in value.items():
        name = str(raw_name)
        at = place.at(name)
        ok = True
        if declared is not None and name not in declared:
            at.report(f"groups: '{name}' is not a declared group{suggest(name, declared)}")
            ok = False
        if tag is BROKEN:
            continue
        if not isinstance(tag, str) or not tag:
            at.report(
                f"group '{name}': tag must be a non-empty string of at most {TAG_LENGTH}"
                f" characters, not {kind(tag)}"
            )
        elif len(tag) > TAG_LENGTH:
            at.report(f"group '{name}': tag is {len(tag)} characters long (at most {TAG_LENGTH})")
        elif ok:
            result[name] = tag
    return result if len(result) == len(value) else None


def mapped_properties(
    place: Place, value: Any, declared: Sequence[str] | None
) -> dict[str, str] | None:
    """Remote field -> property (or `id` / `userId`), checked against the `declared`
    properties when given."""
    if value is BROKEN:
        return None
    if not isinstance(value, dict):
        place.report(
            "properties must be a mapping of remote field to property, like"
            f" {{customer_email: email}}, not {kind(value)}"
        )
        return None
    result: dict[str, str] = {}
    for field, name in value.items():
        at = place.at(str(field))
        if not isinstance(field, str) or not field:
            at.report(f"properties: remote field must be a non-empty string, not {kind(field)}")
            continue
        if name is BROKEN:
            continue
        if not isinstance(name, str) or not name:
            at.report(f"properties: '{field}' must name a property, not {kind(name)}")
            continue
        if declared is not None and name not in RECORD_FIELDS and name not in declared:
            choices = [*declared, *RECORD_FIELDS]
            at.report(
                f"properties: '{field}' takes '{name}', which is not a declared property nor"
                f" {' or '.join(RECORD_FIELDS)}{suggest(name, choices)}"
            )
            continue
        result[field] = name
    return result if len(result) == len(value) else None


def sync_mode(place: Place, value: Any) -> str | None:
    """One of MODES."""
    if value is BROKEN:
        return None
    if isinstance(value, str) and value in MODES:
        return value
    options = ", ".join(MODES[:-1]) + " or " + MODES[-1]
    if isinstance(value, str):
        place.report(
            f"unknown mode '{value}'" + (suggest(value, MODES) or f" (expected {options})")
        )
    else:
        place.report(f"mode must be one of {options}, not {kind(value)}")
    return None


def event_types(place: Place, value: Any) -> tuple[str, ...] | None:
    """A non-empty list of distinct product event types."""
    if value is BROKEN:
        return None
    if not isinstance(value, list) or not value:
        place.report(
            f"events must be a non-empty list of product event types, like [purchase],"
            f" not {kind(value)}"
        )
        return None
    result: list[str] = []
    for i, item in enumerate(value):
        if item is BROKEN:
            continue
        if not isinstance(item, str) or not item:
            place.at(i).report(f"events entry must be a non-empty string, not {kind(item)}")
        elif item in result:
            place.at(i).report(f"events: '{item}' is listed twice")
        else:
            result.append(item)
    return tuple(result) if len(result) == len(value) else None


def forwarded_collection(name: str, records: CollectionSpec) -> CollectionSpec:
    """The internal collection `name` of events forwarded to destinations: keyed and
    partitioned by record like `records`, its schema named as if beside the records schema."""
    path = Path(str(records.schema.path)).with_name(name.replace("/", ".") + ".schema.json")
    return CollectionSpec(
        name, schema_of(_FORWARDED_SCHEMA, path), ("/r",), records.partitions, None
    )
