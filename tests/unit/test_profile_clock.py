"""Relative rules on the clock: when a rule's and a group's outcome flips with no new event,
checked against a brute-force scan over time."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derivations.profiles.groups import Group
from derivations.profiles.instants import (
    Instant,
    add_seconds,
    format_instant,
    from_epoch_ns,
    next_nanosecond,
    to_epoch_ns,
)
from derivations.profiles.operators import NO_VALUE, RELATIVE_OPS, Rule, compile_rule
from derivations.profiles.values import instant_of as at


def rule(op: str, duration: str, array: bool = False) -> Rule:
    return compile_rule("date", op, duration, array=array)


# --- the spec's examples -------------------------------------------------------------------------


def test_in_the_last_leaves_at_the_boundary() -> None:
    purchase = "2024-05-01T10:00:00Z"
    last_3d = rule("inTheLast", "3d")
    now = at("2024-05-02T08:30:00Z")
    flip = last_3d.next_flip(purchase, now)
    assert flip == at("2024-05-04T10:00:00Z")
    assert last_3d.holds(purchase, now)
    assert not last_3d.holds(purchase, flip)
    assert last_3d.holds(purchase, from_epoch_ns(to_epoch_ns(flip) - 1))
    assert last_3d.next_flip(purchase, flip) is None  # out for good


def test_not_in_the_last_joins_just_after_the_boundary() -> None:
    purchase = "2024-05-01T10:00:00Z"
    not_30d = rule("notInTheLast", "30d")
    flip = not_30d.next_flip(purchase, at("2024-05-04T10:00:00Z"))
    assert flip == next_nanosecond(at("2024-05-31T10:00:00Z"))
    assert not not_30d.holds(purchase, at("2024-05-31T10:00:00Z"))  # "before now - d": not yet
    assert not_30d.holds(purchase, flip)
    assert not_30d.next_flip(purchase, flip) is None


def test_in_the_next_enters_after_value_minus_d_and_leaves_after_value() -> None:
    renewal = "2024-06-01T00:00:00Z"
    next_7d = rule("inTheNext", "7d")
    enter = next_7d.next_flip(renewal, at("2024-05-01T00:00:00Z"))
    assert enter == next_nanosecond(at("2024-05-25T00:00:00Z"))
    assert next_7d.holds(renewal, enter)
    leave = next_7d.next_flip(renewal, enter)
    assert leave == next_nanosecond(at(renewal))
    assert next_7d.holds(renewal, at(renewal))
    assert not next_7d.holds(renewal, leave)


def test_in_the_last_month_from_a_month_end_is_one_window() -> None:
    """Jan 31 + 1mo is Feb 29 (2024): in from the purchase until then, never again."""
    purchase = "2024-01-31T10:00:00Z"
    last_month = rule("inTheLast", "1mo")
    assert last_month.next_flip(purchase, at("2024-01-31T09:00:00Z")) == at(purchase)
    assert last_month.next_flip(purchase, at(purchase)) == at("2024-02-29T10:00:00Z")
    assert last_month.next_flip(purchase, at("2024-02-29T10:00:00Z")) is None


def test_array_flips_when_the_last_overlapping_window_ends() -> None:
    purchases = ["2024-05-01T10:00:00Z", "2024-05-02T10:00:00Z", "2024-05-10T10:00:00Z"]
    last_3d = rule("inTheLast", "3d", array=True)
    now = at("2024-05-03T00:00:00Z")
    assert last_3d.next_flip(purchases, now) == at("2024-05-05T10:00:00Z")  # not 05-04
    assert last_3d.next_flip(purchases, at("2024-05-05T10:00:00Z")) == at("2024-05-10T10:00:00Z")
    assert last_3d.next_flip(purchases, at("2024-05-10T10:00:00Z")) == at("2024-05-13T10:00:00Z")


@pytest.mark.parametrize("op", ["eq", "gt", "exists"])
def test_rules_not_on_the_clock_never_flip(op: str) -> None:
    value = NO_VALUE if op == "exists" else "2024-05-01T10:00:00Z"
    fixed = compile_rule("date", op, value)
    assert not fixed.relative
    assert fixed.next_flip("2024-05-01T10:00:00Z", at("2024-05-01T00:00:00Z")) is None


@pytest.mark.parametrize("op", RELATIVE_OPS)
def test_missing_values_never_flip(op: str) -> None:
    now = at("2024-05-01T00:00:00Z")
    assert rule(op, "1d").next_flip(None, now) is None
    assert rule(op, "1d", array=True).next_flip([], now) is None


# --- brute force ---------------------------------------------------------------------------------

BASE = at("2024-05-01T00:00:00Z")


def half_seconds(count: int, origin: Instant = BASE) -> Instant:
    """`origin` plus `count` half seconds."""
    seconds, half = divmod(count, 2)
    return Instant(origin.seconds + seconds, "5" if half else "")


def grid(start: Instant, stop: Instant, step_halves: int = 1) -> list[Instant]:
    """Every step and the nanosecond after it: where the open ends' new outcomes begin."""
    points = []
    count = (start.seconds - BASE.seconds) * 2 - 2
    while (point := half_seconds(count)) <= stop:
        points += [point, next_nanosecond(point)]
        count += step_halves
    return points


def scan(holds: Any, now: Instant, points: list[Instant]) -> Instant | None:
    before = holds(now)
    return next((p for p in points if p > now and holds(p) != before), None)


dates = st.integers(-240, 240).map(lambda h: format_instant(half_seconds(h)))
nows = st.tuples(st.integers(-300, 300), st.booleans()).map(
    lambda n: next_nanosecond(half_seconds(n[0])) if n[1] else half_seconds(n[0])
)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(RELATIVE_OPS),
    st.sampled_from(["10s", "30s", "1m"]),
    st.one_of(dates, st.lists(dates, max_size=4)),
    nows,
)
def test_next_flip_matches_a_scan(op: str, duration: str, value: Any, now: Instant) -> None:
    relative = rule(op, duration, array=isinstance(value, list))
    points = grid(now, add_seconds(BASE, 240))
    expected = scan(lambda t: relative.holds(value, t), now, points)
    assert relative.next_flip(value, now) == expected


HALF_DAY = 12 * 3600
MONTH_END = at("2024-01-28T00:00:00Z")
month_end_dates = st.integers(0, 12).map(
    lambda k: format_instant(add_seconds(MONTH_END, HALF_DAY * k))
)


def every_flip(holds: Any, now: Instant, points: list[Instant]) -> list[Instant]:
    """Each point where the outcome differs from the point before (scanning from `now`)."""
    flips = []
    before = holds(now)
    for point in (p for p in points if p > now):
        if holds(point) != before:
            flips.append(point)
            before = not before
    return flips


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(RELATIVE_OPS),
    st.sampled_from(["1mo", "1q"]),
    st.one_of(month_end_dates, st.lists(month_end_dates, max_size=3)),
    st.integers(-20, 80),
    st.booleans(),
)
def test_next_flip_over_month_ends_matches_a_scan(
    op: str, duration: str, value: Any, halves: int, nudge: bool
) -> None:
    """Month ends clamp (Jan 28..Feb 3 + 1mo land on Feb 28/29 and early March): every flip in
    turn, against a scan of half days (each and the nanosecond after) over -110..+150 days."""
    relative = rule(op, duration, array=isinstance(value, list))
    now = add_seconds(MONTH_END, HALF_DAY * halves)
    now = next_nanosecond(now) if nudge else now
    flips: list[Instant] = []
    at_time = now
    while (flip := relative.next_flip(value, at_time)) is not None:
        flips.append(flip)
        at_time = flip
    steps = [add_seconds(MONTH_END, HALF_DAY * k) for k in range(-220, 300)]
    points = [p for step in steps for p in (step, next_nanosecond(step))]
    assert flips == every_flip(lambda t: relative.holds(value, t), now, points)


fine_dates = st.tuples(st.integers(-100, 100), st.text("0123456789", min_size=1, max_size=14)).map(
    lambda p: format_instant(Instant(BASE.seconds + p[0], p[1].rstrip("0")))
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(RELATIVE_OPS),
    st.sampled_from(["1s", "7s", "1m"]),
    st.lists(fine_dates, min_size=1, max_size=4),
    st.integers(-200 * 10**9, 200 * 10**9),
)
def test_a_timer_at_the_flip_sees_the_change(
    op: str, duration: str, value: list[str], nanoseconds: int
) -> None:
    """Values finer than a nanosecond: the flip still shows the new outcome, and the last whole
    nanosecond before it still shows the old one."""
    relative = rule(op, duration, array=True)
    now = from_epoch_ns(to_epoch_ns(BASE) + nanoseconds)
    flip = relative.next_flip(value, now)
    if flip is None:
        far = add_seconds(now, 10**6)
        assert relative.holds(value, far) == relative.holds(value, now)
        return
    assert flip > now
    assert relative.holds(value, flip) != relative.holds(value, now)
    last_before = from_epoch_ns(to_epoch_ns(flip) - 1)
    if last_before > now:
        assert relative.holds(value, last_before) == relative.holds(value, now)


# --- groups --------------------------------------------------------------------------------------


def make_group(match: str, rules: list[tuple[str, str, Any, bool]]) -> Group:
    compiled = tuple(
        (prop, compile_rule("date", op, value, array=array)) for prop, op, value, array in rules
    )
    return Group("g", match, compiled)


def test_group_steps_over_a_rule_flip_that_does_not_change_it() -> None:
    group = make_group(
        "any",
        [("a", "inTheLast", "10s", False), ("b", "inTheLast", "20s", False)],
    )
    properties = {"a": format_instant(BASE), "b": format_instant(BASE)}
    assert group.relative
    assert group.reads == {"a", "b"}
    # a leaves at +10 s while b holds the group: the group's flip is b's, at +20 s
    assert group.next_flip(properties, BASE) == add_seconds(BASE, 20)


def test_group_with_no_relative_rule_has_no_flip() -> None:
    group = Group("g", "all", (("a", compile_rule("integer", "gt", 3)),))
    assert not group.relative
    assert group.next_flip({"a": 4}, BASE) is None
    assert group.holds({"a": 4}, BASE)
    assert not group.holds({}, BASE)


group_rules = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from([*RELATIVE_OPS, "exists", "gt"]),
        st.sampled_from(["10s", "30s"]),
        st.booleans(),
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["all", "any"]),
    group_rules,
    st.lists(dates, max_size=3),
    st.lists(dates, max_size=3),
    nows,
)
def test_group_next_flip_matches_a_scan(
    match: str, rules: list[tuple[str, str, str, bool]], a: list[str], b: list[str], now: Instant
) -> None:
    specs: list[tuple[str, str, Any, bool]] = []
    for prop, op, duration, array in rules:
        value = NO_VALUE if op == "exists" else format_instant(BASE) if op == "gt" else duration
        specs.append((prop, op, value, array))
    arrays = {prop: array for prop, _, _, array in specs}  # one array flag per property
    properties: dict[str, Any] = {}
    for prop, values in (("a", a), ("b", b)):
        if arrays.get(prop, False):
            properties[prop] = values
        elif values:
            properties[prop] = values[0]
    group = make_group(match, [(p, op, v, arrays[p]) for p, op, v, _ in specs])
    points = grid(now, add_seconds(BASE, 240))
    expected = scan(lambda t: group.holds(properties, t), now, points)
    assert group.next_flip(properties, now) == expected
