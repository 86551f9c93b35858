"""Manual group memberships (SPEC 8.4) as documents of the catalog's `profiles.groupMembers`
collection (profile/group-members): which groups take them, the document of one person joining
or leaving one, and the body of `POST /groups/{name}/members`. Shared by `segflow groups` and
the ingestion API, which both validate the documents against the collection's schema and write
them with `CollectionWriter`.

The body is `{"add": [PERSON...], "remove": [PERSON...]}`, each list optional (not both absent).
A PERSON is an object with `userId`, `anonymousId` or both, and optionally the document's own
`id` (to retry with the same ids) and `occurredAt`; every item becomes one document.
"""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.catalog import Catalog
from pipeline.documents import pointers

LISTS = ("add", "remove")
"""The lists of a members body: people joining, people leaving."""
PERSON = ("userId", "anonymousId")
ITEM_KEYS = (*PERSON, "id", "occurredAt")
"""What an item of a members body may hold: the rest of a document comes from the request."""
BODY = '{"add": [{"userId": ...} | {"anonymousId": ...}], "remove": [...]}'


def members_collection(catalog: Catalog) -> str | None:
    """Where manual memberships go; None without a `profiles:` section."""
    return catalog.profiles.group_members if catalog.profiles is not None else None


def manual_groups(catalog: Catalog) -> list[str]:
    """The names of the catalog's manual groups, sorted."""
    if catalog.profiles is None:
        return []
    return sorted(name for name, group in catalog.profiles.groups.items() if group.manual)


def refusal(catalog: Catalog, group: str) -> str | None:
    """Why `group` takes no manual memberships (unknown, calculated, or nowhere to write them),
    naming the groups that do; None when it takes them."""
    manual = manual_groups(catalog)
    these = f"the manual groups are {manual}" if manual else "the catalog has no manual groups"
    groups = catalog.profiles.groups if catalog.profiles is not None else {}
    if group not in groups:
        close = difflib.get_close_matches(group, manual, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown group {group!r}{hint}; {these}"
    if not groups[group].manual:
        return f"group {group!r} is calculated from its rules, not manual; {these}"
    collection = members_collection(catalog)
    if collection not in catalog.collections:
        return (
            f"the catalog declares no collection {collection!r}, where manual memberships go;"
            " declare it (schemas/profile-group-member.schema.yaml)"
        )
    return None


def membership(group: str, person: Mapping[str, Any], *, remove: bool, now: str) -> dict[str, Any]:
    """The document of `person` joining `group` (leaving it with `remove`): a new id and `now`
    as occurredAt, unless `person` carries its own."""
    doc: dict[str, Any] = {"id": str(uuid.uuid4()), "group": group, **person}
    doc.setdefault("occurredAt", now)
    if remove:
        doc["remove"] = True
    return doc


@dataclass(frozen=True)
class Item:
    """One person of a members body: its list, its index in the list, and what it holds."""

    list: str
    index: int
    person: Any


def items_of(body: Any) -> list[Item] | str:
    """The items of a members body, in order (adds first), or why the body is not one."""
    if not isinstance(body, dict):
        return f"expected a JSON object {BODY}"
    unknown = sorted(set(body) - set(LISTS))
    if unknown:
        return f"unexpected {', '.join(map(repr, unknown))} in the body; expected {BODY}"
    if not body:
        return f"expected 'add', 'remove' or both: {BODY}"
    items: list[Item] = []
    for name in LISTS:
        people = body.get(name, [])
        if not isinstance(people, list):
            return f"'{name}' must be an array of people ({{userId | anonymousId}} objects)"
        items.extend(Item(name, index, person) for index, person in enumerate(people))
    return items


def item_problems(person: Any) -> list[tuple[str, str]]:
    """(path, message) of what an item holds that no document may take from it; the document
    schema checks the rest."""
    if not isinstance(person, dict):
        kind = "array" if isinstance(person, list) else type(person).__name__
        return [("", f"expected an object with userId, anonymousId or both, got {kind}")]
    return [
        (pointers.join(key), f"not allowed in an item; expected {', '.join(ITEM_KEYS)}")
        for key in person
        if key not in ITEM_KEYS
    ]
