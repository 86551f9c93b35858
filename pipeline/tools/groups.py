"""`segflow groups`: manual group memberships by hand, and who is in which group (SPEC 8.4).

- `groups add GROUP (--user-id U | --anonymous-id A)...` and `groups remove GROUP ...` write one
  document per person into the catalog's `profiles.groupMembers` collection
  (profile/group-members) with a new id and now as occurredAt, through the writer the ingestion
  API uses, and print them as JSON lines. GROUP must be a manual group; nothing is written
  unless every document is valid.
- `groups list` prints every group with its kind and member count, `groups list GROUP` the ids
  of its members: both read from the current documents of the records collection (their
  `groups`), so they show what the pipeline has applied, not what was just written.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from pipeline.catalog import Catalog, load_catalog
from pipeline.documents.validation import Validator
from pipeline.errors import SegflowError
from pipeline.producers import members
from pipeline.producers.api import received_at
from pipeline.runtime.produce import CollectionWriter, make_producer
from pipeline.runtime.settings import Settings
from pipeline.runtime.topics import Names, collection_topics, ensure_topics
from pipeline.tools.read import current_documents

PRODUCER_ID = "segflow-groups"
"""The `segflow.producer` header of what `segflow groups add|remove` writes."""
_FLAGS = {"userId": "--user-id", "anonymousId": "--anonymous-id"}
"""The flag naming a person by each field of a membership document."""


def _broker(settings: Settings) -> str:
    if not settings.broker:
        raise SegflowError("SEGFLOW_BROKER is not set: which broker holds the groups?")
    return settings.broker


def change_documents(
    catalog: Catalog, group: str, people: list[dict[str, Any]], *, remove: bool, now: str
) -> list[dict[str, Any]]:
    """One valid document per person, or a SegflowError naming every problem."""
    refused = members.refusal(catalog, group)
    if refused is not None:
        raise SegflowError(refused)
    if not people:
        raise SegflowError("name at least one person: --user-id U or --anonymous-id A")
    collection = members.members_collection(catalog)
    assert collection is not None  # refusal() says so otherwise
    validator = Validator(catalog.collections[collection].schema)
    docs = [members.membership(group, person, remove=remove, now=now) for person in people]
    problems = [
        f"{_who(person)}: {problem}"
        for person, doc in zip(people, docs, strict=True)
        for problem in validator.errors(doc)
    ]
    if problems:
        raise SegflowError("nothing written:\n  " + "\n  ".join(problems))
    return docs


def _who(person: dict[str, Any]) -> str:
    """The flag that named a person: `--user-id 'u1'`."""
    return " ".join(f"{_FLAGS[key]} {value!r}" for key, value in person.items())


async def write_changes(settings: Settings, catalog: Catalog, docs: list[dict[str, Any]]) -> None:
    """Write the documents to the members collection and wait for the broker's ack."""
    collection = members.members_collection(catalog)
    assert collection is not None
    spec, names = catalog.collections[collection], Names(settings.topic_prefix)
    bootstrap = _broker(settings)
    await ensure_topics(bootstrap, collection_topics(catalog, names, spec.name))
    producer = make_producer(bootstrap, settings.linger_ms)
    await producer.start()
    try:
        await CollectionWriter(catalog, collection, names, producer, PRODUCER_ID).send_all(docs)
    finally:
        await producer.stop()


def cmd_groups_change(args: argparse.Namespace, settings: Settings) -> int:
    catalog = load_catalog(settings.catalog)
    remove = args.groups_command == "remove"
    docs = change_documents(
        catalog, args.group, args.people or [], remove=remove, now=received_at()
    )
    _broker(settings)
    try:
        asyncio.run(write_changes(settings, catalog, docs))
    except KafkaError as exc:
        raise SegflowError(f"broker {settings.broker}: {exc}") from exc
    for doc in docs:
        sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
    sys.stdout.flush()
    done = "removed from" if remove else "added to"
    print(f"{len(docs)} person(s) {done} group {args.group!r}", file=sys.stderr)
    return 0


async def records(settings: Settings, catalog: Catalog) -> list[Any]:
    """The current documents of the records collection."""
    assert catalog.profiles is not None
    spec = catalog.collections[catalog.profiles.records]
    topic = Names(settings.topic_prefix).collection(spec.name)
    return await current_documents(_broker(settings), topic, spec)


def cmd_groups_list(args: argparse.Namespace, settings: Settings) -> int:
    catalog = load_catalog(settings.catalog)
    groups = catalog.profiles.groups if catalog.profiles is not None else {}
    if args.group is not None and args.group not in groups:
        raise SegflowError(f"unknown group {args.group!r}; the groups are {sorted(groups)}")
    if not groups:
        print("no groups in the catalog", file=sys.stderr)
        return 0
    _broker(settings)
    try:
        docs = asyncio.run(records(settings, catalog))
    except KafkaError as exc:
        raise SegflowError(f"broker {settings.broker}: {exc}") from exc
    if args.group is not None:
        ids = [doc["id"] for doc in docs if args.group in (doc.get("groups") or ())]
        for record_id in ids:
            print(record_id)
        print(f"{len(ids)} member(s) in group {args.group!r}", file=sys.stderr)
        return 0
    counts = Counter(name for doc in docs for name in set(doc.get("groups") or ()))
    rows = [("GROUP", "KIND", "MEMBERS")]
    for name, group in sorted(groups.items()):
        rows.append((name, "manual" if group.manual else "calculated", str(counts[name])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _person(key: str) -> Callable[[str], dict[str, str]]:
    """Parses a flag's value into the person it names: `--user-id u1` -> {"userId": "u1"}."""

    def parse(text: str) -> dict[str, str]:
        return {key: text}

    return parse


def add_groups_parser(subparsers: Any) -> None:
    """`segflow groups add|remove|list`."""
    groups = subparsers.add_parser(
        "groups", help="manual group memberships, and the members of groups (SEGFLOW_BROKER)"
    )
    sub = groups.add_subparsers(dest="groups_command", required=True)
    for name, help_text in (
        ("add", "add people to a manual group"),
        ("remove", "take people out of a manual group"),
    ):
        change = sub.add_parser(name, help=help_text)
        change.add_argument("group", help="a manual group of the catalog")
        for key, flag in _FLAGS.items():
            change.add_argument(
                flag,
                dest="people",
                action="append",
                type=_person(key),
                metavar=flag.removeprefix("--").replace("-", "_").upper(),
                help="a person (repeatable; one document each)",
            )
        change.set_defaults(func=cmd_groups_change)
    listing = sub.add_parser("list", help="groups and their member counts, or a group's members")
    listing.add_argument("group", nargs="?", help="print this group's member ids")
    listing.set_defaults(func=cmd_groups_list)
