"""The `profiles:` section: a valid one parses into the dataclasses, a broken one reports every
problem with its location (golden file), and the checks' options (event paths, collections)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from derivations.profiles.extract import compile_properties
from derivations.profiles.groups import compile_groups
from derivations.profiles.instants import parse_instant
from derivations.profiles.model import EventSource, ImportSource, ProfilesSpec, WhereSpec
from derivations.profiles.operators import NO_VALUE
from derivations.profiles.spec import parse_profiles

HERE = Path(__file__).parent / "profiles"
COLLECTIONS = {"profile/events", "profile/group-members", "profile/records"}
EVENT_PATHS = {
    "/data/total",
    "/data/email",
    "/data/path",
    "/data/plan",
    "/data/tag",
    "/data/score",
    "/data/vip",
    "/data/country",
    "/data/a~2b",
}


def section(name: str) -> Any:
    return yaml.safe_load((HERE / name).read_text())["profiles"]


def parsed(raw: Any, **options: Any) -> ProfilesSpec:
    spec, problems = parse_profiles(raw, **options)
    assert problems == []
    assert spec is not None
    return spec


def problems_of(raw: Any, **options: Any) -> list[str]:
    spec, problems = parse_profiles(raw, **options)
    assert spec is None
    return [f"{pointer}: {message}" for pointer, message in problems]


def test_broken_section_reports_every_problem() -> None:
    """Golden: tests/unit/profiles/broken.expected has one line per problem, in report order."""
    expected = (HERE / "broken.expected").read_text().splitlines()
    found = problems_of(section("broken.yaml"), event_paths=EVENT_PATHS, collections=COLLECTIONS)
    assert found == expected


def test_the_spec_examples_parse() -> None:
    spec = parsed(section("valid.yaml"), event_paths={"/data"}, collections=COLLECTIONS)
    assert (spec.events, spec.group_members, spec.records) == (
        "profile/events",
        "profile/group-members",
        "profile/records",
    )
    assert spec.group_vendor == 100
    email = spec.properties["email"]
    assert (email.type, email.unique, email.array) == ("email", True, False)
    assert email.source == EventSource(("identify",), "latest", "/data/email")
    assert spec.properties["pages"].array
    assert spec.properties["visits"].source == EventSource(
        None, "count", None, (WhereSpec("/data/path", "ne", "/"),)
    )
    assert spec.properties["plan"].source == ImportSource("warehouse-users", "plan")
    hva = spec.groups["high-value-abandoners"]
    assert [(r.property, r.op, r.value) for r in hva.rules] == [
        ("ltv", "gt", 50),
        ("abandonedCartAt", "inTheLast", "3d"),
    ]
    assert spec.groups["lapsed"].match == "all"
    assert spec.groups["vip"].manual and spec.groups["vip"].rules == ()


def test_a_checked_spec_compiles() -> None:
    spec = parsed(section("valid.yaml"))
    groups = compile_groups(spec)
    assert set(groups) == {"high-value-abandoners", "lapsed", "docs-readers"}  # vip is manual
    properties = compile_properties(spec)
    assert "plan" not in properties  # from an import
    now = parse_instant("2024-05-04T10:00:00Z")
    assert now is not None
    record = {"ltv": 75.0, "abandonedCartAt": "2024-05-02T10:00:00Z"}
    assert groups["high-value-abandoners"].holds(record, now)
    assert groups["high-value-abandoners"].next_flip(record, now) == parse_instant(
        "2024-05-05T10:00:00Z"
    )
    assert groups["docs-readers"].holds({"pages": ["/", "/docs/setup"]}, now)
    assert groups["docs-readers"].reads == {"pages", "plan"}


def test_defaults() -> None:
    assert parse_profiles(None) == (ProfilesSpec(), [])
    assert parse_profiles({}) == (ProfilesSpec(), [])
    spec = parsed({"groups": {"vip": {"manual": True}}, "groupVendor": 7})
    assert (spec.events, spec.group_vendor) == ("profile/events", 7)


def test_groups_need_a_vendor() -> None:
    assert problems_of({"groups": {"vip": {"manual": True}}}) == [
        "/profiles: profiles: groups need groupVendor, the segment vendor they appear as "
        "(an integer from 1 to 2147483647)"
    ]


@pytest.mark.parametrize("vendor", [0, 2147483648, True, 1.5, "100"])
def test_vendor_range(vendor: Any) -> None:
    [problem] = problems_of({"groupVendor": vendor})
    assert problem.startswith("/profiles/groupVendor: profiles: groupVendor must be an integer")


@pytest.mark.parametrize("vendor", [1, 2147483647])
def test_vendor_bounds_are_fine(vendor: int) -> None:
    assert parsed({"groupVendor": vendor}).group_vendor == vendor


def test_section_must_be_a_mapping() -> None:
    assert problems_of([1]) == [
        "/profiles: profiles: must be a mapping like {properties: {...}, groups: {...}}, not a list"
    ]


def test_pointers_escape_names_and_follow_the_given_root() -> None:
    raw = {"properties": {"a/b~c": {"type": "strng"}}}
    assert problems_of(raw, pointer="/x") == [
        "/x/properties/a~1b~0c: property 'a/b~c': invalid name: "
        "expected a letter, then up to 63 letters, digits, _ or -",
        "/x/properties/a~1b~0c/type: property 'a/b~c': unknown type 'strng' "
        "(did you mean 'string'?)",
        "/x/properties/a~1b~0c: property 'a/b~c': needs 'from', like "
        "{events: [purchase], path: /data/total, aggregate: sum}",
    ]


def latest(path: str, where: list[Any] | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"events": ["e"], "path": path, "aggregate": "latest"}
    if where is not None:
        source["where"] = where
    return {"properties": {"p": {"type": "string", "from": source}}}


def test_without_event_paths_any_data_path_is_accepted() -> None:
    parsed(latest("/data/anything/at/all"))


def test_event_paths_as_prefixes() -> None:
    options = {"event_paths": {"/data/user"}}
    parsed(latest("/data/user"), **options)
    parsed(latest("/data/user/name"), **options)
    parsed(latest("/type"), **options)  # the envelope is always known
    assert problems_of(latest("/data/usr"), **options) == [
        "/profiles/properties/p/from/path: property 'p': path '/data/usr' does not exist in the "
        "schema of profile/events (did you mean '/data/user'?)"
    ]
    assert problems_of(latest("/data/user2"), **options)  # a prefix of a token is not enough


def test_event_paths_as_a_predicate_also_checks_where() -> None:
    def known(path: str) -> bool:
        return path.startswith("/data/known")

    condition = {"path": "/data/other", "op": "exists"}
    assert problems_of(latest("/data/known", [condition]), event_paths=known) == [
        "/profiles/properties/p/from/where/0/path: property 'p': path '/data/other' does not "
        "exist in the schema of profile/events"
    ]


def test_collections_are_checked_only_when_given() -> None:
    parsed({"records": "elsewhere/records"})
    assert problems_of({"records": "elsewhere/records"}, collections=COLLECTIONS) == [
        "/profiles/records: profiles: records: 'elsewhere/records' is not a declared collection "
        "(did you mean 'profile/records'?)"
    ]


def test_where_conditions_keep_their_values() -> None:
    where = [
        {"path": "/data/n", "op": "between", "value": [1, 5]},
        {"path": "/data/s", "op": "notExists"},
        {"path": "/data/d", "op": "gt", "value": "2024-01-01T00:00:00Z"},
        {"path": "/data/e", "op": "eq", "value": "A@X.COM", "type": "email"},
    ]
    source = parsed(latest("/data/x", where)).properties["p"].source
    assert isinstance(source, EventSource)
    assert source.where == (
        WhereSpec("/data/n", "between", [1, 5]),
        WhereSpec("/data/s", "notExists", NO_VALUE),
        WhereSpec("/data/d", "gt", "2024-01-01T00:00:00Z"),
        WhereSpec("/data/e", "eq", "A@X.COM", "email"),
    )


def test_a_misspelt_required_key_is_reported_once() -> None:
    raw = {"properties": {"p": {"tpye": "string", "from": {"events": ["e"], "aggregate": "count"}}}}
    assert problems_of(raw) == [
        "/profiles/properties/p/tpye: property 'p': unknown key 'tpye' (did you mean 'type'?)"
    ]
