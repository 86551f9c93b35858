"""Checking one collection block: name, schema, key, partitions, dedup window, topic."""

from __future__ import annotations

import re

from pipeline.catalog.places import Entry
from pipeline.catalog.readers import duration, integer, json_pointers, mapping, required
from pipeline.catalog.schemas import SchemaFiles
from pipeline.catalog.specs import CollectionSpec, TopicSpec
from pipeline.catalog.topics import check_topic
from pipeline.documents.schema import Schema

COLLECTION_KEYS = ("schema", "key", "partitions", "dedup", "topic")
_COLLECTION_NAME = re.compile(r"[a-z0-9_.-]+(/[a-z0-9_.-]+)*")


def check_collection(
    entry: Entry, derived: bool, schemas: SchemaFiles, collection_schemas: dict[str, Schema]
) -> CollectionSpec | None:
    """The collection's spec, or None when its block has problems (all reported).

    Its schema goes into `collection_schemas` even then, so derivations reading it still check
    their pointers against it.
    """
    place = entry.place
    if not _COLLECTION_NAME.fullmatch(entry.name):
        place.report(
            "invalid name: expected lowercase parts of [a-z0-9_.-] separated by '/',"
            " like 'segment/events'"
        )
    body = mapping(place, entry.body, COLLECTION_KEYS, "a collection")
    if body is None:
        return None
    schema = schemas.schema(place.at("schema"), required(place, body, "schema"))
    if schema is not None:
        collection_schemas[entry.name] = schema
    key = json_pointers(place.at("key"), required(place, body, "key"), "key", schema, "schema")
    partitions = integer(place.at("partitions"), body.get("partitions", 1), "partitions")
    dedup: float | None = None
    if "dedup" in body:
        if derived:
            place.at("dedup").report(
                "dedup is only allowed on captured collections, and this one is derived"
            )
        elif (dedup := duration(place.at("dedup"), body["dedup"], "dedup")) is None:
            return None
    topic: TopicSpec | None = TopicSpec()
    if "topic" in body:
        topic = check_topic(place.at("topic"), body["topic"], dedup)
    if schema is None or key is None or partitions is None or topic is None:
        return None
    return CollectionSpec(entry.name, schema, key, partitions, dedup, topic)
