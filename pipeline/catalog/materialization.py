"""Checking materialization blocks: one endpoint (postgres or webhook) and its bindings."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pipeline.catalog.interpolate import BROKEN
from pipeline.catalog.places import Entry, Place
from pipeline.catalog.readers import (
    duration,
    identifier,
    integer,
    kind,
    mapping,
    required,
    string,
    suggest,
)
from pipeline.catalog.specs import BindingSpec, MaterializationSpec

MATERIALIZATION_KEYS = ("postgres", "webhook", "bindings")
POSTGRES_KEYS = ("dsn", "schema")
WEBHOOK_KEYS = ("url", "secret", "max_batch", "timeout", "max_attempts")
BINDING_KEYS = ("source", "table")


def check_materialization(
    entry: Entry, collections: Mapping[str, Any]
) -> MaterializationSpec | None:
    """The materialization's spec, or None when its block has problems (all reported).

    It is disabled (not an error) when its dsn or url is empty, e.g. `${PG_DSN:-}` unset.
    """
    place = entry.place
    body = mapping(place, entry.body, MATERIALIZATION_KEYS, "a materialization")
    if body is None:
        return None
    kinds = [k for k in ("postgres", "webhook") if k in body]
    endpoint = kinds[0] if len(kinds) == 1 else None
    config: dict[str, str] | None = None
    if endpoint is None:
        place.report(
            "needs exactly one endpoint, 'postgres' or 'webhook', "
            + ("not both" if kinds else "found none")
        )
    elif endpoint == "postgres":
        config = postgres(place.at(endpoint), body[endpoint])
    else:
        config = webhook(place.at(endpoint), body[endpoint])
    found = bindings(place, required(place, body, "bindings"), endpoint, collections)
    if endpoint is None or config is None or found is None:
        return None
    enabled = config["dsn" if endpoint == "postgres" else "url"] != ""
    return MaterializationSpec(entry.name, endpoint, MappingProxyType(config), found, enabled)


def postgres(place: Place, value: Any) -> dict[str, str] | None:
    """A postgres endpoint's config: dsn and schema."""
    body = mapping(place, value, POSTGRES_KEYS, "postgres")
    if body is None:
        return None
    dsn = string(place.at("dsn"), required(place, body, "dsn"), "postgres dsn")
    schema = identifier(place.at("schema"), body.get("schema", "public"), "postgres schema")
    return None if dsn is None or schema is None else {"dsn": dsn, "schema": schema}


def webhook(place: Place, value: Any) -> dict[str, str] | None:
    """A webhook endpoint's config: url, secret and the optional limits, all as strings."""
    body = mapping(place, value, WEBHOOK_KEYS, "webhook")
    if body is None:
        return None
    ok = True
    config: dict[str, str] = {}
    url = string(place.at("url"), required(place, body, "url"), "webhook url")
    if url and not url.startswith(("http://", "https://")):
        place.at("url").report(f"webhook url '{url}' must start with http:// or https://")
        ok = False
    secret = string(place.at("secret"), body.get("secret", ""), "webhook secret")
    if url is None or secret is None:
        ok = False
    else:
        config.update(url=url, secret=secret)
    for name in ("max_batch", "max_attempts"):
        if name in body:
            number = integer(place.at(name), body[name], name)
            ok = ok and number is not None
            config[name] = str(number)
    if "timeout" in body:
        seconds = duration(place.at("timeout"), body["timeout"], "timeout")
        ok = ok and seconds is not None
        config["timeout"] = str(seconds)
    return config if ok else None


def bindings(
    place: Place, value: Any, endpoint: str | None, collections: Mapping[str, Any]
) -> tuple[BindingSpec, ...] | None:
    """The bindings, each a declared source (and a table for postgres), or None."""
    at = place.at("bindings")
    if value is BROKEN:
        return None
    if not isinstance(value, list) or not value:
        at.report(f"bindings must be a non-empty list of {{source, table}}, not {kind(value)}")
        return None
    result: list[BindingSpec] = []
    for i, item in enumerate(value):
        binding = mapping(at.at(i), item, BINDING_KEYS, "a binding")
        if binding is None:
            continue
        source = string(at.at(i, "source"), required(at.at(i), binding, "source"), "source")
        if source is not None and source not in collections:
            at.at(i, "source").report(
                f"source '{source}' is not a declared collection{suggest(source, collections)}"
            )
            source = None
        table: str | None = None
        if endpoint == "postgres":
            table = identifier(at.at(i, "table"), required(at.at(i), binding, "table"), "table")
            if table is None:
                continue
        elif endpoint == "webhook" and "table" in binding:
            at.at(i, "table").report("a webhook binding has no 'table'")
            continue
        if source is not None:
            result.append(BindingSpec(source, table))
    return tuple(result) if len(result) == len(value) else None
