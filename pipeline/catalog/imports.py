"""Checking import blocks (SPEC 10): a Postgres table or query read by high watermark on a
schedule, each row naming its record by an identity column."""

from __future__ import annotations

import re
from typing import Any

from pipeline.catalog.places import Entry, Place
from pipeline.catalog.readers import duration, identifier, integer, kind, mapping, required, string
from pipeline.catalog.specs import ImportSpec

IMPORT_KEYS = ("postgres", "watermark", "interval", "pageSize", "identity")
POSTGRES_KEYS = ("dsn", "table", "query")
IDENTITY_KEYS = ("userId", "anonymousId")
DEFAULT_INTERVAL = 60.0
DEFAULT_PAGE_SIZE = 1000
PAGE_SIZE_MAX = 1_000_000
_TABLE = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*")


def check_import(entry: Entry) -> ImportSpec | None:
    """The import's spec, or None when its block has problems (all reported).

    It is disabled (not an error) when its dsn is empty, e.g. `${WAREHOUSE_DSN:-}` unset.
    """
    place = entry.place
    body = mapping(place, entry.body, IMPORT_KEYS, "an import")
    if body is None:
        return None
    source = postgres(place.at("postgres"), required(place, body, "postgres"))
    watermark = identifier(
        place.at("watermark"), required(place, body, "watermark"), "watermark column"
    )
    interval = duration(place.at("interval"), body.get("interval", DEFAULT_INTERVAL), "interval")
    page_size = integer(place.at("pageSize"), body.get("pageSize", DEFAULT_PAGE_SIZE), "pageSize")
    if page_size is not None and page_size > PAGE_SIZE_MAX:
        place.at("pageSize").report(
            f"pageSize must be at most {PAGE_SIZE_MAX}, not the number {page_size}"
        )
        page_size = None
    who = identity(place.at("identity"), required(place, body, "identity"))
    if source is None or watermark is None or interval is None or page_size is None or who is None:
        return None
    dsn, table, query = source
    return ImportSpec(
        entry.name, dsn, table, query, watermark, interval, page_size, who, enabled=dsn != ""
    )


def postgres(place: Place, value: Any) -> tuple[str, str | None, str | None] | None:
    """(dsn, table, query), exactly one of table (`[schema.]table`) and query set."""
    body = mapping(place, value, POSTGRES_KEYS, "postgres")
    if body is None:
        return None
    dsn = string(place.at("dsn"), required(place, body, "dsn"), "postgres dsn")
    kinds = [k for k in ("table", "query") if k in body]
    if len(kinds) != 1:
        place.report(
            "postgres needs exactly one of 'table' or 'query', "
            + ("not both" if kinds else "found none")
        )
        return None
    table: str | None = None
    query: str | None = None
    if kinds == ["table"]:
        table = string(place.at("table"), body["table"], "postgres table")
        if table is not None and not _TABLE.fullmatch(table):
            place.at("table").report(
                f"postgres table '{table}' is not a valid table name (expected an SQL"
                " identifier [A-Za-z_][A-Za-z0-9_]*, optionally after 'schema.')"
            )
            table = None
        if table is None:
            return None
    else:
        query = string(place.at("query"), body["query"], "postgres query")
        if query is not None and not query.strip():
            place.at("query").report(
                f"postgres query must be a non-empty SQL query, not {kind(query)}"
            )
            query = None
        if query is None:
            return None
    return None if dsn is None else (dsn, table, query)


def identity(place: Place, value: Any) -> tuple[str, str] | None:
    """('userId' or 'anonymousId', the column holding it)."""
    body = mapping(place, value, IDENTITY_KEYS, "identity")
    if body is None:
        return None
    kinds = [k for k in IDENTITY_KEYS if k in body]
    if len(kinds) != 1:
        if kinds or len(body) == 0:  # an unknown key alone was reported, maybe misspelt
            place.report(
                "identity needs exactly one of 'userId' or 'anonymousId' (the column naming"
                " the record), " + ("not both" if kinds else "found none")
            )
        return None
    column = identifier(place.at(kinds[0]), body[kinds[0]], "identity column")
    return None if column is None else (kinds[0], column)
