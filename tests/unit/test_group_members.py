"""Manual group memberships (SPEC 8.1, 8.4): what profile/group-members lets in, with the exact
messages, and the pieces `segflow groups` and `POST /groups/{name}/members` share."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from pipeline.catalog import Catalog, load_catalog
from pipeline.documents.fastcheck import compile_check
from pipeline.documents.schema import load_schema
from pipeline.documents.validation import Validator
from pipeline.producers import members
from pipeline.producers.members import Item

REPO = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(REPO / "schemas" / "profile-group-member.schema.yaml")
VALIDATOR = Validator(SCHEMA)
FAST = compile_check(SCHEMA)
ID = "0f8fad5b-d9cb-469f-a165-70867728950e"

USER_ID = (
    "must be a string of 1 to 200 characters, not beginning with 'anon:' and without the NUL"
    " character, or an integer"
)
OCCURRED_AT = "must be an RFC 3339 date-time, years 0001 to 9999, with Z or an offset within ±15:59"


def member(**changes: Any) -> dict[str, Any]:
    doc = {"id": ID, "group": "vip", "userId": "u1", **changes}
    return {k: v for k, v in doc.items() if v is not None}


def problems(doc: Any) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in VALIDATOR.problems(doc)]


VALID = [
    pytest.param(member(), id="userId"),
    pytest.param(member(userId=100), id="integer userId"),
    pytest.param(member(userId=None, anonymousId="device-1"), id="anonymousId"),
    pytest.param(member(anonymousId="device-1"), id="both"),
    pytest.param(member(remove=True), id="remove"),
    pytest.param(member(occurredAt="2024-05-01T10:00:00.123+02:00"), id="occurredAt"),
    pytest.param(member(group="g" * 32, userId="u" * 200), id="at the limits"),
]


@pytest.mark.parametrize("doc", VALID)
def test_valid_memberships_pass_both_checks(doc: dict[str, Any]) -> None:
    assert problems(doc) == []
    assert FAST is not None and FAST(doc)


INVALID = [
    pytest.param(
        member(userId=None), [("", "needs a userId, an anonymousId or both")], id="nobody"
    ),
    pytest.param(member(id=None), [("", "'id' is a required property")], id="no id"),
    pytest.param(member(group=None), [("", "'group' is a required property")], id="no group"),
    pytest.param(
        member(id="123456_8-1234-1234-1234-123456789012"),
        [("/id", "must be a UUID (32 hexadecimal digits grouped 8-4-4-4-12)")],
        id="id not a UUID",
    ),
    pytest.param(
        member(group=""), [("/group", "must be 1 to 32 characters (a group name)")], id="group ''"
    ),
    pytest.param(
        member(group="g" * 33),
        [("/group", "must be 1 to 32 characters (a group name)")],
        id="group too long",
    ),
    pytest.param(member(group=7), [("/group", "must be a string")], id="group not a string"),
    pytest.param(
        member(group="v\x00ip"),
        [("/group", "must not contain the NUL character U+0000")],
        id="group with NUL",
    ),
    pytest.param(member(userId="anon:d1"), [("/userId", USER_ID)], id="userId anon:"),
    pytest.param(member(userId=""), [("/userId", USER_ID)], id="userId ''"),
    pytest.param(member(userId="u" * 201), [("/userId", USER_ID)], id="userId too long"),
    pytest.param(member(userId=1.5), [("/userId", USER_ID)], id="userId a float"),
    pytest.param(
        member(anonymousId=""), [("/anonymousId", "must be 1 to 200 characters")], id="anon ''"
    ),
    pytest.param(member(anonymousId=["d1"]), [("/anonymousId", "must be a string")], id="anon []"),
    pytest.param(
        member(remove=False),
        [("/remove", "must be true when present (leave it out to add the person)")],
        id="remove false",
    ),
    pytest.param(
        member(occurredAt="2024-05-01 10:00"), [("/occurredAt", OCCURRED_AT)], id="not RFC 3339"
    ),
    pytest.param(
        member(occurredAt="2024-05-01T10:00:00"), [("/occurredAt", OCCURRED_AT)], id="no offset"
    ),
    pytest.param(
        member(data={"x": 1}),
        [("", "Unevaluated properties are not allowed ('data' was unexpected)")],
        id="another key",
    ),
]


@pytest.mark.parametrize(("doc", "expected"), INVALID)
def test_invalid_memberships_are_refused_with_clear_messages(
    doc: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert problems(doc) == expected
    assert FAST is not None and not FAST(doc)


def test_the_shipped_catalog_declares_the_collection_like_product_events() -> None:
    catalog = load_catalog(REPO / "catalog", env={})
    spec, events = (
        catalog.collections["profile/group-members"],
        catalog.collections["profile/events"],
    )
    assert spec.key == ("/id",)
    assert (spec.partitions, spec.dedup_window) == (events.partitions, events.dedup_window)
    assert "profile/group-members" not in catalog.derivations
    assert catalog.profiles is not None
    assert members.members_collection(catalog) == "profile/group-members"


# --- What the CLI and the API share ------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    path = tmp_path_factory.mktemp("catalog") / "groups.yaml"
    schemas = REPO / "schemas"
    path.write_text(
        textwrap.dedent(
            f"""\
            collections:
              profile/events: {{schema: {schemas}/profile-event.schema.yaml, key: [/id]}}
              profile/group-members:
                schema: {schemas}/profile-group-member.schema.yaml
                key: [/id]
              profile/records: {{schema: {schemas}/profile-record.schema.yaml, key: [/id]}}
            profiles:
              groupVendor: 100
              properties:
                purchases: {{type: integer, from: {{events: [purchase], aggregate: count}}}}
              groups:
                vip: {{manual: true}}
                beta: {{manual: true}}
                buyers: {{rules: [{{property: purchases, op: gt, value: 0}}]}}
            """
        )
    )
    return load_catalog([REPO / "catalog" / "segment.yaml", path], env={})


def test_only_manual_groups_take_memberships(catalog: Catalog) -> None:
    assert members.manual_groups(catalog) == ["beta", "vip"]
    assert members.refusal(catalog, "vip") is None
    assert members.refusal(catalog, "buyers") == (
        "group 'buyers' is calculated from its rules, not manual; the manual groups are"
        " ['beta', 'vip']"
    )
    assert members.refusal(catalog, "vipp") == (
        "unknown group 'vipp' (did you mean 'vip'?); the manual groups are ['beta', 'vip']"
    )


def test_a_membership_document_has_a_new_id_and_the_time_unless_given() -> None:
    now = "2026-12-02T14:00:00.123Z"
    added = members.membership("vip", {"userId": "u1"}, remove=False, now=now)
    assert added == {"id": added["id"], "group": "vip", "userId": "u1", "occurredAt": now}
    assert uuid.UUID(added["id"]).version == 4
    removed = members.membership("vip", {"anonymousId": "d1"}, remove=True, now=now)
    assert removed["remove"] is True and removed["id"] != added["id"]
    given = {"userId": 7, "id": ID, "occurredAt": "2024-05-01T10:00:00Z"}
    assert members.membership("vip", given, remove=False, now=now) == {"group": "vip", **given}
    assert problems(added) == problems(removed) == []


def test_a_members_body_is_two_optional_lists_of_people() -> None:
    body = {"remove": [{"userId": 1}], "add": [{"userId": "u1"}, {"anonymousId": "d1"}]}
    assert members.items_of(body) == [
        Item("add", 0, {"userId": "u1"}),
        Item("add", 1, {"anonymousId": "d1"}),
        Item("remove", 0, {"userId": 1}),
    ]
    assert members.items_of({"add": []}) == []
    assert members.items_of({"remove": [{"userId": 1}]}) == [Item("remove", 0, {"userId": 1})]
    shape = members.BODY
    assert members.items_of([{"userId": "u1"}]) == f"expected a JSON object {shape}"
    assert members.items_of({}) == f"expected 'add', 'remove' or both: {shape}"
    assert members.items_of({"add": [], "members": []}) == (
        f"unexpected 'members' in the body; expected {shape}"
    )
    assert members.items_of({"add": {"userId": "u1"}}) == (
        "'add' must be an array of people ({userId | anonymousId} objects)"
    )


def test_an_item_holds_a_person_and_optionally_its_id_and_time() -> None:
    assert members.item_problems({"userId": "u1", "id": ID, "occurredAt": "x"}) == []
    assert members.item_problems("u1") == [
        ("", "expected an object with userId, anonymousId or both, got str")
    ]
    assert members.item_problems(["u1"]) == [
        ("", "expected an object with userId, anonymousId or both, got array")
    ]
    expected = "not allowed in an item; expected userId, anonymousId, id, occurredAt"
    assert members.item_problems({"userId": "u1", "group": "x", "a/b": 1}) == [
        ("/group", expected),
        ("/a~1b", expected),
    ]
