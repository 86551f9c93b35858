"""A record's group memberships as state (derivations.profiles.membership): which groups a change
evaluates, change numbers, flips on the clock at their own instants, leaving, manual entries."""

from __future__ import annotations

from typing import Any

from derivations.profiles.groups import compile_group
from derivations.profiles.instants import parse_instant
from derivations.profiles.membership import Memberships, due, merge_manual, set_manual
from derivations.profiles.model import EventSource, GroupSpec, PropertySpec, RuleSpec

PROPERTIES = {
    name: PropertySpec(name, kind, EventSource(None, "latest", "/data/x"))
    for name, kind in [("ltv", "float"), ("country", "string"), ("lastBuy", "date")]
} | {f"p{i}": PropertySpec(f"p{i}", "integer", EventSource(None, "count")) for i in range(10)}


def at(text: str) -> Any:
    instant = parse_instant(text)
    assert instant is not None
    return instant


def memberships(
    groups: dict[str, list[tuple[str, str, Any]]], manual: tuple[str, ...] = ()
) -> Memberships:
    compiled = {
        name: compile_group(
            GroupSpec(name, "all", tuple(RuleSpec(p, op, v) for p, op, v in rules)), PROPERTIES
        )
        for name, rules in groups.items()
    }
    return Memberships(compiled, manual)


def test_a_change_to_one_property_evaluates_only_the_groups_that_read_it() -> None:
    """50 groups, 5 of which read `p3`: a change to p3 evaluates those 5, not 50."""
    groups = {f"g{i}": [(f"p{i % 10}", "gte", i)] for i in range(50)}
    m = memberships(groups)
    now = at("2024-05-01T00:00:00Z")
    state, _ = m.on_change(None, {"p3": 1}, None, now)  # a new record: every group
    assert m.evaluated == 50
    before = m.evaluated
    state, changes = m.on_change(state, {"p3": 40}, {"p3"}, now)
    assert m.evaluated - before == 5
    assert sorted(c.group for c in changes) == sorted(["g3", "g13", "g23", "g33"])  # not g43
    assert m.members(state) == sorted(["g3", "g13", "g23", "g33"])


def test_change_numbers_alternate_join_and_leave() -> None:
    m = memberships({"big": [("ltv", "gt", 50)]})
    now = at("2024-05-01T00:00:00Z")
    state, made = m.on_change(None, {"ltv": 60.0}, None, now)
    assert [(c.joined, c.number) for c in made] == [(True, 1)]
    state, made = m.on_change(state, {"ltv": 70.0}, {"ltv"}, now)
    assert made == []  # still a member: no change
    state, made = m.on_change(state, {"ltv": 10.0}, {"ltv"}, now)
    assert [(c.joined, c.number) for c in made] == [(False, 2)]
    state, made = m.on_change(state, {"ltv": 99.0}, {"ltv"}, now)
    assert [(c.joined, c.number) for c in made] == [(True, 3)]
    assert [(c.joined, c.number) for c in m.leave_all(state, now)] == [(False, 4)]


def test_flips_fire_at_their_own_instants_even_when_late() -> None:
    """A worker down for 40 days reports the leave at +3d and the join at +30d, in order."""
    m = memberships(
        {"recent": [("lastBuy", "inTheLast", "3d")], "lapsed": [("lastBuy", "notInTheLast", "30d")]}
    )
    bought = {"lastBuy": "2024-05-01T10:00:00Z"}
    state, made = m.on_change(None, bought, None, at("2024-05-01T10:00:00Z"))
    assert [c.group for c in made] == ["recent"]
    assert due(state) == at("2024-05-04T10:00:00Z")
    state, made = m.fire(state, bought, at("2024-06-10T00:00:00Z"))
    assert [(c.group, c.joined, c.at) for c in made] == [
        ("recent", False, at("2024-05-04T10:00:00Z")),
        ("lapsed", True, at("2024-05-31T10:00:00.000000001Z")),
    ]
    assert due(state) is None and m.members(state) == ["lapsed"]
    # Firing again changes nothing: the same state has nothing due.
    assert m.fire(state, bought, at("2024-07-01T00:00:00Z")) == (state, [])


def test_a_due_flip_is_folded_into_a_change_of_another_property() -> None:
    m = memberships({"recent": [("lastBuy", "inTheLast", "3d")], "big": [("ltv", "gt", 50)]})
    props = {"lastBuy": "2024-05-01T10:00:00Z"}
    state, _ = m.on_change(None, props, None, at("2024-05-01T10:00:00Z"))
    # Five days later ltv changes before the timer fired: `recent` is evaluated too.
    later = {**props, "ltv": 60.0}
    state, made = m.on_change(state, later, {"ltv"}, at("2024-05-06T00:00:00Z"))
    assert sorted((c.group, c.joined) for c in made) == [("big", True), ("recent", False)]
    assert due(state) is None


def test_manual_memberships_take_the_greatest_order_and_merge_alike() -> None:
    m = memberships({}, manual=("vip",))
    a = set_manual(None, "vip", True, [1, "", [5, "e1"]])
    a = set_manual(a, "vip", False, [0, "", [9, "e0"]])  # older: loses
    b = set_manual(None, "vip", False, [2, "", [1, "e2"]])
    assert a["vip"][0] is True
    assert merge_manual(a, b) == merge_manual(b, a) == b
    state, made = m.on_change({"M": a}, {}, set(), at("2024-05-01T00:00:00Z"), manual=None)
    assert [(c.group, c.joined) for c in made] == [("vip", True)]
    state, made = m.on_change({**state, "M": b}, {}, set(), at("2024-05-01T00:00:00Z"), manual=a)
    assert [(c.group, c.joined) for c in made] == [("vip", False)]


def test_change_ids_are_uuid5_of_record_group_and_number() -> None:
    import uuid

    from pipeline.runtime.groups import _CHANGE_IDS, change_id

    for name in ["u1\nvip\n1", "anon:dev-1\nrecent-buyers\n12", "ü" * 300 + "\n\n0"]:
        assert change_id(name) == str(uuid.uuid5(_CHANGE_IDS, name))
