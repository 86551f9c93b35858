"""A catalog whose `profiles:` and `destinations:` sections each hold several independent mistakes
(issue 20, item 5): `load_catalog` and `segflow catalog check` list every one with its file and
place, not only those the first problem leaves visible. A reference to a declared but broken
property or group is not a mistake of its own: the declaration's problem is reported once."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.catalog import load_catalog
from pipeline.errors import CatalogError
from pipeline.tools.cli import main

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

PROFILES = f"""\
collections:
  segment/events: {{schema: {SCHEMAS}/event.schema.yaml, key: [/event]}}
  profile/events: {{schema: {SCHEMAS}/profile-event.schema.yaml, key: [/id]}}
  profile/records: {{schema: {SCHEMAS}/profile-record.schema.yaml, key: [/id]}}
profiles:
  groupVendor: 100
  properties:
    email: {{type: emial, from: {{events: [identify], path: /data/email, aggregate: latest}}}}
    ltv: {{type: float, from: {{events: [purchase], path: /data/total, aggregate: summ}}}}
    plan: {{type: string, from: {{import: warehouse-user, column: plan}}}}
    country: {{type: string, from: {{events: [identify], path: /data/country, aggregate: latest}}}}
  groups:
    vip: {{manual: true}}
    buyers: {{rules: [{{property: ltvv, op: gt, value: 0}}]}}
    big: {{rules: [{{property: ltv, op: gt, value: 500}}]}}
    germans: {{rules: [{{property: country, op: eq, value: DE}}]}}
"""
DESTINATIONS = """\
imports:
  warehouse-users:
    postgres: {dsn: "postgresql://w/h", table: users}
    watermark: updated_at
    identity: {userId: id}
destinations:
  crm:
    webhook: {url: "ftp://crm.example.com/"}
    groups: {vipp: VIP, big: BIG, germans: ""}
    properties: {mail: emale, e: email, l: ltv, c: country}
    mode: synk
  warehouse:
    postgres: {dsn: "postgresql://x/y", table: 2crm}
    groups: {nope: X, germans: DE}
    events: purchase
"""
EXPECTED = [
    # profiles: mistakes in properties and groups, the missing members collection, the import
    (
        "a.yaml",
        "/profiles/properties/email/type",
        "property 'email': unknown type 'emial' (did you mean 'email'?)",
    ),
    (
        "a.yaml",
        "/profiles/properties/ltv/from/aggregate",
        "property 'ltv': unknown aggregate 'summ' (did you mean 'sum'?)",
    ),
    (
        "a.yaml",
        "/profiles/groups/buyers/rules/0/property",
        "group 'buyers': unknown property 'ltvv' (did you mean 'ltv'?)",
    ),
    (
        "a.yaml",
        "/profiles/groups/vip",
        "manual groups take their members from 'profile/group-members' (SPEC 8.4): declare it as"
        " a captured collection (catalog/profiles.yaml has it), or name yours with 'groupMembers:'",
    ),
    (
        "a.yaml",
        "/profiles/properties/plan/from/import",
        "property 'plan': import 'warehouse-user' is not a declared import (did you mean"
        " 'warehouse-users'?)",
    ),
    # destinations: their own mistakes, and names the profiles section does not declare
    (
        "b.yaml",
        "/destinations/crm/webhook/url",
        "destination 'crm': webhook url 'ftp://crm.example.com/' must start with http:// or"
        " https://",
    ),
    (
        "b.yaml",
        "/destinations/crm/groups/vipp",
        "destination 'crm': groups: 'vipp' is not a declared group (did you mean 'vip'?)",
    ),
    (
        "b.yaml",
        "/destinations/crm/groups/germans",
        "destination 'crm': group 'germans': tag must be a non-empty string of at most 100"
        " characters, not ''",
    ),
    (
        "b.yaml",
        "/destinations/crm/properties/mail",
        "destination 'crm': properties: 'mail' takes 'emale', which is not a declared property"
        " nor id or userId (did you mean 'email'?)",
    ),
    (
        "b.yaml",
        "/destinations/crm/mode",
        "destination 'crm': unknown mode 'synk' (did you mean 'sync'?)",
    ),
    (
        "b.yaml",
        "/destinations/warehouse/postgres/table",
        "destination 'warehouse': postgres table '2crm' is not a valid SQL identifier (expected"
        " [A-Za-z_][A-Za-z0-9_]*)",
    ),
    (
        "b.yaml",
        "/destinations/warehouse/groups/nope",
        "destination 'warehouse': groups: 'nope' is not a declared group",
    ),
    (
        "b.yaml",
        "/destinations/warehouse/events",
        "destination 'warehouse': events must be a non-empty list of product event types, like"
        " [purchase], not 'purchase'",
    ),
]


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    (tmp_path / "a.yaml").write_text(PROFILES)
    (tmp_path / "b.yaml").write_text(DESTINATIONS)
    return tmp_path


def expected_lines(directory: Path) -> list[str]:
    return [f"{directory / name}: {pointer}: {message}" for name, pointer, message in EXPECTED]


def test_load_catalog_lists_every_problem_of_both_sections(catalog: Path) -> None:
    with pytest.raises(CatalogError) as caught:
        load_catalog(catalog, env={})
    assert [str(p) for p in caught.value.problems] == expected_lines(catalog)


def test_catalog_check_prints_every_problem(
    catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--catalog", str(catalog), "catalog", "check"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"segflow: catalog has {len(EXPECTED)} problem(s):",
        *(f"  {line}" for line in expected_lines(catalog)),
    ]


def test_fixing_the_profiles_section_leaves_the_destinations_problems_as_they_were(
    catalog: Path,
) -> None:
    """What the destinations are told does not depend on whether the section they name is
    valid: with every profiles mistake fixed, their list is the same."""
    fixed = (
        PROFILES.replace("emial", "email")
        .replace("summ", "sum")
        .replace("warehouse-user,", "warehouse-users,")
        .replace("ltvv", "ltv")
        .replace("    vip: {manual: true}\n", "")
    )
    (catalog / "a.yaml").write_text(fixed)
    with pytest.raises(CatalogError) as caught:
        load_catalog(catalog, env={})
    destinations = [line for line in expected_lines(catalog) if "/b.yaml: " in line]
    assert [str(p) for p in caught.value.problems] == [
        line.replace(" (did you mean 'vip'?)", "") for line in destinations
    ]


@pytest.mark.parametrize(
    ("section", "problems"),
    [
        (
            "profiles:",  # empty: every default applies, and was once a TypeError
            [
                "/profiles: events: 'profile/events' (the default) is not a declared collection;"
                " declare it, or name yours with 'events:'",
                "/profiles: records: 'profile/records' (the default) is not a declared"
                " collection; declare it, or name yours with 'records:'",
            ],
        ),
        (
            "profiles: 5",
            [
                "/profiles: profiles: must be a mapping like {properties: {...}, groups: {...}},"
                " not the number 5"
            ],
        ),
    ],
    ids=["empty", "scalar"],
)
def test_a_section_that_is_empty_or_no_mapping_is_reported_beside_the_destinations(
    tmp_path: Path, section: str, problems: list[str]
) -> None:
    """Nothing to check the destinations' names against in a scalar; an empty section declares
    none."""
    (tmp_path / "a.yaml").write_text(section + "\n")
    (tmp_path / "b.yaml").write_text(
        'destinations:\n  crm: {webhook: {url: "https://crm.example.com/"}, groups: {vip: V}}\n'
    )
    unknown = (
        "/destinations/crm/groups/vip: destination 'crm': groups: 'vip' is not a declared group"
    )
    expected = [f"{tmp_path / 'a.yaml'}: {p}" for p in problems]
    if section == "profiles:":
        expected.append(f"{tmp_path / 'b.yaml'}: {unknown}")
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path, env={})
    assert [str(p) for p in caught.value.problems] == expected
