"""A record's view in a destination and the export that brings it up to date (SPEC 9), per mode."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest

from materializations.destinations.exports import (
    View,
    acked_after,
    enriched,
    export_of,
    mapped_properties,
    view_of,
)
from pipeline.catalog.specs import DestinationSpec

SPEC = DestinationSpec(
    name="crm",
    kind="webhook",
    config={"url": "http://127.0.0.1:1/hooks"},
    groups={"high-value": "HV", "vip": "VIP"},
    properties={"customer_email": "email", "uid": "userId", "rid": "id", "ltv": "ltv"},
    events=("purchase",),
)
MODES = ["sync", "additive", "enrich"]


def record(groups: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "id": "u1",
        "userId": "u1",
        "anonymousIds": ["dev-1"],
        "properties": properties,
        "groups": groups,
        "createdAt": "2024-05-01T10:00:00Z",
        "updatedAt": "2024-05-01T10:00:00Z",
    }


IN = record(["high-value", "frequent-visitors"], email="a@example.com", ltv=600.0, visits=3)
IN_VIEW = View({"customer_email": "a@example.com", "uid": "u1", "rid": "u1", "ltv": 600.0}, ("HV",))


def export(mode: str, document: dict[str, Any] | None, acked: View | None) -> dict[str, Any] | None:
    spec = replace(SPEC, mode=mode)
    current = None if document is None else mapped_properties(spec, document)
    return export_of(spec, "u1", view_of(spec, document), acked, current)


def sides(made: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if made is None else {k: v for k, v in made.items() if k != "id"}


def test_a_view_maps_properties_and_sorts_the_tags_of_tracked_groups() -> None:
    doc = record(["vip", "frequent-visitors", "high-value"], email="a@example.com")
    assert view_of(SPEC, doc) == View(
        {"customer_email": "a@example.com", "uid": "u1", "rid": "u1"}, ("HV", "VIP")
    )
    assert view_of(SPEC, record(["frequent-visitors"], ltv=1.0)) is None, "no tracked group"
    assert view_of(SPEC, None) is None, "merged away"
    anonymous = {**record(["vip"]), "id": "anon:dev-1"}
    del anonymous["userId"]
    assert view_of(SPEC, anonymous) == View({"rid": "anon:dev-1"}, ("VIP",))
    assert View.from_json(IN_VIEW.as_json()) == IN_VIEW


@pytest.mark.parametrize("mode", MODES)
def test_create(mode: str) -> None:
    assert sides(export(mode, IN, None)) == {
        "record": "u1",
        "mode": mode,
        "newProperties": dict(IN_VIEW.properties),
        "oldProperties": {},
        "newGroups": ["HV"],
        "oldGroups": [],
        "toDelete": False,
    }


@pytest.mark.parametrize("mode", MODES)
def test_update_of_a_mapped_property(mode: str) -> None:
    richer = record(["high-value"], email="a@example.com", ltv=750.5)
    made = export(mode, richer, IN_VIEW)
    assert made is not None
    assert made["oldProperties"] == dict(IN_VIEW.properties)
    assert made["newProperties"] == {**IN_VIEW.properties, "ltv": 750.5}
    assert (made["oldGroups"], made["newGroups"], made["toDelete"]) == (["HV"], ["HV"], False)


@pytest.mark.parametrize("mode", MODES)
def test_tag_change(mode: str) -> None:
    made = export(mode, {**IN, "groups": ["high-value", "vip"]}, IN_VIEW)
    assert made is not None
    assert (made["oldGroups"], made["newGroups"], made["toDelete"]) == (
        ["HV"],
        ["HV", "VIP"],
        False,
    )
    assert made["newProperties"] == made["oldProperties"]


@pytest.mark.parametrize("mode", MODES)
def test_no_change_sends_nothing(mode: str) -> None:
    assert export(mode, IN, IN_VIEW) is None
    unmapped = {**IN, "properties": {**IN["properties"], "visits": 99}, "groups": ["high-value"]}
    assert export(mode, unmapped, IN_VIEW) is None, "an unmapped property or untracked group"


@pytest.mark.parametrize(
    ("mode", "deleted"), [("sync", True), ("additive", False), ("enrich", False)]
)
def test_leaving_the_last_tracked_group(mode: str, deleted: bool) -> None:
    left = record(["frequent-visitors"], email="b@example.com", ltv=600.0)
    made = export(mode, left, IN_VIEW)
    assert sides(made) == {
        "record": "u1",
        "mode": mode,
        "newProperties": {**IN_VIEW.properties, "customer_email": "b@example.com"},
        "oldProperties": dict(IN_VIEW.properties),
        "newGroups": [],
        "oldGroups": ["HV"],
        "toDelete": deleted,
    }
    assert made is not None
    after = acked_after(made)
    assert after == (None if deleted else View(made["newProperties"], ()))
    assert export(mode, left, after) is None, "a leaver gets its export once"


@pytest.mark.parametrize(
    ("mode", "deleted"), [("sync", True), ("additive", False), ("enrich", False)]
)
def test_merged_away_sends_what_was_acknowledged(mode: str, deleted: bool) -> None:
    made = export(mode, None, IN_VIEW)
    assert sides(made) == {
        "record": "u1",
        "mode": mode,
        "newProperties": dict(IN_VIEW.properties),
        "oldProperties": dict(IN_VIEW.properties),
        "newGroups": [],
        "oldGroups": ["HV"],
        "toDelete": deleted,
    }
    assert export(mode, None, None) is None, "never acknowledged: nothing to delete"


@pytest.mark.parametrize("mode", ["additive", "enrich"])
def test_a_kept_record_entering_again_is_updated_from_no_tags(mode: str) -> None:
    kept = View(IN_VIEW.properties, ())
    made = export(mode, IN, kept)
    assert made is not None
    assert (made["oldGroups"], made["newGroups"], made["toDelete"]) == ([], ["HV"], False)


def test_after_a_sync_delete_a_return_is_a_create() -> None:
    gone = export("sync", None, IN_VIEW)
    assert gone is not None and acked_after(gone) is None
    assert sides(export("sync", IN, acked_after(gone))) == sides(export("sync", IN, None))


def test_ids_are_stable_and_tell_exports_apart() -> None:
    first, again = export("sync", IN, None), export("sync", IN, None)
    assert first is not None and again is not None
    assert first["id"] == again["id"], "the same export computed again (after a restart)"
    update = export("sync", {**IN, "groups": ["vip"]}, IN_VIEW)
    assert update is not None and update["id"] != first["id"]
    other = export_of(replace(SPEC, name="other"), "u1", IN_VIEW, None)
    assert other is not None and other["id"] != first["id"], "per destination"
    assert uuid.UUID(first["id"]).version == 5


def test_enriched_events_only_of_listed_types_and_records_in() -> None:
    purchase = {"id": "e1", "type": "purchase", "userId": "u1", "data": {"total": 12}}
    assert enriched(SPEC, purchase, IN) == {
        "event": purchase,
        "record": "u1",
        "properties": dict(IN_VIEW.properties),
        "groups": ["HV"],
    }
    assert enriched(SPEC, {**purchase, "type": "pageview"}, IN) is None
    assert enriched(SPEC, purchase, record(["frequent-visitors"])) is None
