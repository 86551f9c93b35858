"""`segflow explain` (SPEC 8.4 "Why"): each rule with the value it saw and the events that set it,
relative rules' flips, manual groups, and which events belong to a record."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from derivations.profiles.explain import MAX_EVENTS, Explanation, belongs, explain, render
from derivations.profiles.instants import Instant
from derivations.profiles.model import ProfilesSpec
from derivations.profiles.records import Records
from derivations.profiles.spec import parse_profiles
from derivations.profiles.values import instant_of
from pipeline.errors import SegflowError

SPEC_YAML = """
groupVendor: 100
properties:
  email:
    {type: email, unique: true, from: {events: [identify], path: /data/email, aggregate: latest}}
  firstPlan: {type: string, from: {events: [subscribe], path: /data/plan, aggregate: earliest}}
  ltv: {type: float, from: {events: [purchase], path: /data/total, aggregate: sum}}
  purchases:
    type: integer
    from: {events: [purchase], aggregate: count, where: [{path: /data/test, op: notExists}]}
  averageOrder: {type: float, from: {events: [purchase], path: /data/total, aggregate: avg}}
  largestOrder: {type: float, from: {events: [purchase], path: /data/total, aggregate: max}}
  smallestOrder: {type: float, from: {events: [purchase], path: /data/total, aggregate: min}}
  lastCartAt: {type: date, from: {events: [addToCart], path: /occurredAt, aggregate: max}}
  renewsAt: {type: date, from: {events: [subscribe], path: /data/renews, aggregate: latest}}
  pages:
    {type: string, array: true, from: {events: [pageview], path: /data/path, aggregate: distinct}}
  plan: {type: string, from: {import: warehouse, column: plan}}
groups:
  big-spenders:
    rules: [{property: ltv, op: gt, value: 50}, {property: purchases, op: gte, value: 2}]
  either:
    match: any
    rules:
      - {property: largestOrder, op: gte, value: 100}
      - {property: email, op: endsWith, value: "@shop.com"}
  carts: {rules: [{property: lastCartAt, op: inTheLast, value: 3d}]}
  renewing: {rules: [{property: renewsAt, op: inTheNext, value: 7d}]}
  lapsed: {rules: [{property: lastCartAt, op: notInTheLast, value: 30d}]}
  no-cart: {rules: [{property: lastCartAt, op: notExists}]}
  averages:
    rules:
      - {property: averageOrder, op: gt, value: 10}
      - {property: smallestOrder, op: lt, value: 50}
  plans:
    match: any
    rules: [{property: firstPlan, op: eq, value: pro}, {property: plan, op: eq, value: pro}]
  readers: {rules: [{property: pages, op: like, value: "/docs/%"}]}
  not-home: {rules: [{property: pages, op: ne, value: "/"}]}
  vip: {manual: true}
"""


def load() -> ProfilesSpec:
    spec, problems = parse_profiles(yaml.safe_load(SPEC_YAML))
    assert spec is not None, problems
    return spec


SPEC = load()
RECORDS = Records.of(SPEC)
NOW = instant_of("2024-05-04T00:00:00Z")


def ev(n: int, kind: str, at: str | None, user: Any = "u1", **data: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"id": f"00000000-0000-0000-0000-{n:012d}", "type": kind}
    if user is not None:
        event["userId"] = user
    if at is not None:
        event["occurredAt"] = at
    if data:
        event["data"] = data
    return event


def eid(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


def document(
    events: list[tuple[dict[str, Any], int]], record: str = "u1", groups: list[str] | None = None
) -> dict[str, Any]:
    """The record document the records stage builds from `events` (each applied once)."""
    state = RECORDS.empty()
    for event, ms in events:
        if "occurredAt" not in event:
            raise AssertionError("give documents built here an occurredAt")
        state = RECORDS.apply(state, event, ms, event.get("anonymousId"))
    return RECORDS.document(record, state, groups or [])


def why(
    group: str,
    events: list[tuple[dict[str, Any], int]],
    *,
    doc: dict[str, Any] | None = None,
    now: Instant = NOW,
) -> tuple[Explanation, list[str]]:
    doc = doc if doc is not None else document(events)
    explanation = explain(SPEC, group, doc, events, now)
    return explanation, render(explanation)


PURCHASES = [
    (ev(1, "purchase", "2024-05-01T10:00:00Z", total=40.5), 1000),
    (ev(2, "purchase", "2024-05-02T10:00:00Z", total="80"), 2000),
    (ev(3, "purchase", "2024-05-02T11:00:00Z", total="abc"), 3000),  # not a float: left out
    (ev(4, "purchase", "2024-05-03T10:00:00Z", total=80, test=True), 4000),  # not counted
    (ev(5, "pageview", "2024-05-03T11:00:00Z", path="/docs/a"), 5000),
]


# -- every aggregate's "set by" ------------------------------------------------------------------


def test_sum_and_count_list_every_contributing_event_newest_first() -> None:
    explanation, lines = why("big-spenders", PURCHASES)
    ltv, purchases = explanation.rules
    assert ltv.seen == 200.5 and ltv.held
    assert [ref.id for ref in ltv.source.events] == [eid(4), eid(2), eid(1)]  # 'abc' left out
    assert ltv.source.events[1].values == (80.0,)
    # count takes every purchase without /data/test, whatever its total
    assert purchases.seen == 3
    assert [ref.id for ref in purchases.source.events] == [eid(3), eid(2), eid(1)]
    assert purchases.source.events[0].values == ()
    assert lines == [
        "record u1 in group big-spenders (match: all): member — all 2 rules hold",
        "  ltv gt 50: held — ltv is 200.5 (invalid: 'abc' is not a float)",
        "    set by 3 events (sum), newest first:",
        f"      {eid(4)} purchase 2024-05-03T10:00:00Z: 80.0",
        f"      {eid(2)} purchase 2024-05-02T10:00:00Z: 80.0",
        f"      {eid(1)} purchase 2024-05-01T10:00:00Z: 40.5",
        "  purchases gte 2: held — purchases is 3",
        "    set by 3 events (count), newest first:",
        f"      {eid(3)} purchase 2024-05-02T11:00:00Z",
        f"      {eid(2)} purchase 2024-05-02T10:00:00Z",
        f"      {eid(1)} purchase 2024-05-01T10:00:00Z",
        "  evaluated at 2024-05-04T00:00:00Z; the record's groups say not a member, the rules"
        " now say member (the runtime has not applied this change yet: events not processed yet)",
    ]


def test_avg_lists_every_event_and_min_the_first_that_gave_the_least_value() -> None:
    events = [*PURCHASES, (ev(6, "purchase", "2024-05-03T12:00:00Z", total=40.5), 6000)]
    explanation, lines = why("averages", events)
    average, smallest = explanation.rules
    assert average.seen == pytest.approx(60.25) and average.source.total == 4
    assert smallest.seen == 40.5
    assert [ref.id for ref in smallest.source.events] == [eid(1)]
    assert smallest.source.alike == 1
    assert (
        f"    set by event {eid(1)} purchase 2024-05-01T10:00:00Z: 40.5"
        " (min; 1 more event(s) gave the same value)"
    ) in lines


def test_max_names_the_event_with_the_greatest_value() -> None:
    explanation, lines = why("either", PURCHASES)
    largest, email = explanation.rules
    assert largest.seen == 80.0 and not largest.held
    assert [ref.id for ref in largest.source.events] == [eid(2)]  # reached first, then eid 4
    assert largest.source.alike == 1
    assert email.seen is None and not email.held
    assert (
        lines[0] == "record u1 in group either (match: any): not a member — none of 2 rules holds"
    )
    assert "  email endsWith '@shop.com': not held — email has no value" in lines
    assert "    no event set it" in lines


def test_latest_takes_the_later_arrival_of_equal_instants_and_earliest_too() -> None:
    events = [
        (ev(1, "identify", "2024-05-01T10:00:00Z", email="a@shop.com"), 1000),
        (ev(2, "identify", "2024-05-01T10:00:00Z", email="b@shop.com"), 2000),
        (ev(3, "identify", "2024-05-01T09:00:00Z", email="c@shop.com"), 3000),
        (ev(4, "identify", "2024-05-02T10:00:00Z", email="not an email"), 4000),
        (ev(5, "subscribe", "2024-05-01T10:00:00Z", plan="pro"), 5000),
        (ev(6, "subscribe", "2024-05-01T10:00:00Z", plan="team"), 6000),
        (ev(7, "subscribe", "2024-05-02T10:00:00Z", plan="free"), 7000),
    ]
    explanation, lines = why("either", events)
    email = explanation.rules[1]
    assert email.seen == "b@shop.com" and email.held
    assert email.invalid == "'not an email' is not an email"
    assert [ref.id for ref in email.source.events] == [eid(2)]
    assert (
        f"    set by event {eid(2)} identify 2024-05-01T10:00:00Z: 'b@shop.com' (latest)" in lines
    )

    explanation, lines = why("plans", events)
    first_plan, plan = explanation.rules
    assert plan.seen is None and plan.source.origin is not None
    assert first_plan.seen == "team" and not first_plan.held  # the later of two equal instants
    assert [ref.id for ref in first_plan.source.events] == [eid(6)]
    assert "    comes from import 'warehouse' (column plan)" in lines


def test_distinct_lists_events_whose_values_are_kept_and_an_array_rule() -> None:
    events = [
        (ev(1, "pageview", "2024-05-01T10:00:00Z", path="/"), 1000),
        (ev(2, "pageview", "2024-05-01T11:00:00Z", path=["/docs/b", "/docs/a", None]), 2000),
        (ev(3, "pageview", "2024-05-01T12:00:00Z", path="/docs/a"), 3000),
        (ev(4, "pageview", "2024-05-01T13:00:00Z"), 4000),  # no path: no value
    ]
    explanation, lines = why("readers", events)
    (pages,) = explanation.rules
    assert pages.seen == ["/", "/docs/a", "/docs/b"] and pages.held
    assert [ref.id for ref in pages.source.events] == [eid(3), eid(2), eid(1)]
    assert pages.source.events[1].values == ("/docs/b", "/docs/a")
    assert lines[1] == "  pages like '/docs/%': held — pages is ['/', '/docs/a', '/docs/b']"
    assert f"      {eid(2)} pageview 2024-05-01T11:00:00Z: '/docs/b', '/docs/a'" in lines
    # `ne` on an array: no element may equal it
    explanation, _ = why("not-home", events)
    assert not explanation.member


def test_an_array_property_without_values_matches_the_negative_operators() -> None:
    explanation, lines = why("not-home", PURCHASES[:1])
    assert explanation.member
    assert lines[1] == "  pages ne '/': held — pages has no value"
    assert lines[2] == "    no event set it"


def test_more_than_max_events_are_counted() -> None:
    events = [
        (ev(i, "purchase", f"2024-05-01T10:00:{i:02d}Z", total=1), 1000 + i)
        for i in range(1, MAX_EVENTS + 6)
    ]
    explanation, lines = why("big-spenders", events)
    ltv = explanation.rules[0]
    assert ltv.source.total == MAX_EVENTS + 5 and len(ltv.source.events) == MAX_EVENTS
    assert ltv.source.events[0].id == eid(MAX_EVENTS + 5)  # newest first
    assert "      ... and 5 more" in lines


def test_no_event_and_no_value() -> None:
    explanation, lines = why("big-spenders", [(ev(9, "pageview", "2024-05-01T10:00:00Z"), 1)])
    assert lines[:3] == [
        "record u1 in group big-spenders (match: all): not a member — none of 2 rules holds",
        "  ltv gt 50: not held — ltv is 0.0",
        "    no event set it (sum of no events)",
    ]
    explanation, lines = why("no-cart", [(ev(9, "pageview", "2024-05-01T10:00:00Z"), 1)])
    assert (
        explanation.member and lines[1] == "  lastCartAt notExists: held — lastCartAt has no value"
    )


# -- relative rules ------------------------------------------------------------------------------

CART = [(ev(1, "addToCart", "2024-05-03T09:00:00Z", sku="a"), 1000)]


def test_in_the_last_says_when_it_flips_and_when_the_group_leaves() -> None:
    explanation, lines = why("carts", CART)
    assert explanation.member and explanation.flip == instant_of("2024-05-06T09:00:00Z")
    assert lines == [
        "record u1 in group carts (match: all): member — its rule holds",
        "  lastCartAt inTheLast 3d: held — lastCartAt is 2024-05-03T09:00:00Z;"
        " flips to not held at 2024-05-06T09:00:00Z",
        f"    set by event {eid(1)} addToCart 2024-05-03T09:00:00Z (max)",
        "  the group's next change with no new event: 2024-05-06T09:00:00Z (leaves)",
        "  evaluated at 2024-05-04T00:00:00Z; the record's groups say not a member, the rules"
        " now say member (the runtime has not applied this change yet: a timer that has not"
        " fired, or events not processed yet)",
    ]
    # after the flip, a document that still lists it disagrees: the timer has not fired
    doc = document(CART, groups=["carts"])
    later = instant_of("2024-05-06T09:00:01Z")
    explanation, lines = why("carts", CART, doc=doc, now=later)
    assert not explanation.member and explanation.listed and explanation.flip is None
    assert "  the group's next change with no new event: none" in lines
    assert lines[-1].startswith(
        "  evaluated at 2024-05-06T09:00:01Z; the record's groups say member, the rules now"
        " say not a member"
    )


def test_not_in_the_last_and_in_the_next_flip_just_after_their_open_ends() -> None:
    explanation, lines = why("lapsed", CART)
    assert not explanation.member
    assert explanation.flip == instant_of("2024-06-02T09:00:00.000000001Z")
    assert lines[-2].endswith("2024-06-02T09:00:00.000000001Z (joins)")
    renewal = [(ev(2, "subscribe", "2024-05-01T00:00:00Z", renews="2024-05-20T00:00:00Z"), 1)]
    explanation, lines = why("renewing", renewal)
    (rule,) = explanation.rules
    assert not rule.held and rule.flip == instant_of("2024-05-13T00:00:00.000000001Z")
    assert "flips to held at 2024-05-13T00:00:00.000000001Z" in lines[1]


def test_a_group_whose_record_document_agrees() -> None:
    doc = document(CART, groups=["carts"])
    _, lines = why("carts", CART, doc=doc)
    assert lines[-1] == "  evaluated at 2024-05-04T00:00:00Z; the record's groups agree (member)"


# -- manual groups, uniqueness, events that do not rebuild the document --------------------------


def test_a_manual_group_says_so_and_what_the_record_document_says() -> None:
    doc = document(CART, groups=["vip"])
    explanation, lines = why("vip", CART, doc=doc)
    assert explanation.manual and explanation.member and explanation.rules == ()
    assert lines == [
        "record u1 in group vip: manual (members added by hand): member — its groups list it",
        "  read at 2024-05-04T00:00:00Z",
    ]
    _, lines = why("vip", CART)
    assert lines[0].endswith(": not a member — its groups do not list it")


def test_a_unique_value_held_by_an_older_record() -> None:
    events = [(ev(1, "identify", "2024-05-01T10:00:00Z", email="a@shop.com"), 1000)]
    doc = document(events)
    del doc["properties"]["email"]
    doc["invalid"] = {"email": "duplicate of record u0"}
    explanation, lines = why("either", events, doc=doc)
    email = explanation.rules[1]
    assert email.seen is None and not email.held and email.source.held_by == "u0"
    assert lines[3:6] == [
        "  email endsWith '@shop.com': not held — email has no value"
        " (invalid: duplicate of record u0)",
        "    its events give 'a@shop.com', which record u0 holds"
        " (unique: the older record keeps the value)",
        f"    set by event {eid(1)} identify 2024-05-01T10:00:00Z: 'a@shop.com' (latest)",
    ]


def test_events_that_do_not_rebuild_the_value_name_no_event() -> None:
    doc = document(PURCHASES)
    explanation, lines = why("big-spenders", PURCHASES[1:], doc=doc)  # the first one is gone
    ltv = explanation.rules[0]
    assert ltv.seen == 200.5 and ltv.held and not ltv.source.agrees
    assert ltv.source.events == () and ltv.source.rebuilt == 160.0
    assert lines[2] == (
        "    not rebuilt: the 2 event(s) read that it takes give 160.0 (sum), but the record"
        " shows 200.5: record u1 was built from other events (redelivered after the dedup window,"
        " not read here, or not applied yet), so no event is named"
    )


def test_a_redelivery_counts_once_and_a_missing_occurred_at_is_the_record_timestamp() -> None:
    first, ms = ev(1, "addToCart", None), 1_714_730_400_000  # 2024-05-03T10:00:00Z
    again = dict(first, occurredAt="2024-05-03T12:00:00Z")  # the same id again: a redelivery
    events = [(again, ms + 5), (first, ms)]  # given out of order: arrival decides
    doc = document([({**first, "occurredAt": "2024-05-03T10:00:00Z"}, ms)])
    explanation, lines = why("carts", events, doc=doc)
    (rule,) = explanation.rules
    assert rule.source.agrees and rule.source.total == 1
    assert rule.source.events[0].occurred_at == "2024-05-03T10:00:00Z"
    assert "flips to not held at 2024-05-06T10:00:00Z" in lines[1]


def test_an_unknown_group_lists_the_groups() -> None:
    with pytest.raises(SegflowError) as caught:
        explain(SPEC, "cart", document(CART), CART, NOW)
    message = str(caught.value)
    assert message.startswith("unknown group 'cart' (did you mean 'carts'?); the catalog's groups:")
    assert "'big-spenders'" in message and "'vip'" in message
    with pytest.raises(SegflowError, match="the catalog declares no groups"):
        explain(ProfilesSpec(), "carts", document(CART), CART, NOW)


# -- which events belong to a record ------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "record", "expected"),
    [
        ({"userId": 42}, {"id": "42", "anonymousIds": []}, True),  # an integer is its text
        ({"userId": "42"}, {"id": "42", "anonymousIds": []}, True),
        ({"userId": 42}, {"id": "420", "anonymousIds": []}, False),
        ({"anonymousId": "d1"}, {"id": "42", "anonymousIds": ["d0", "d1"]}, True),  # linked
        ({"anonymousId": "d2"}, {"id": "42", "anonymousIds": ["d0", "d1"]}, False),
        ({"anonymousId": "d1"}, {"id": "anon:d1", "anonymousIds": ["d1"]}, True),
        ({"anonymousId": "d1"}, {"id": "anon:d1", "anonymousIds": []}, True),
        ({"anonymousId": "d1"}, {"id": "anon:d2", "anonymousIds": ["d2"]}, False),
        # the merge guard: d1 is 7's device, but an event of 42 goes to 42
        ({"userId": 42, "anonymousId": "d1"}, {"id": "42", "anonymousIds": []}, True),
        ({"userId": 42, "anonymousId": "d1"}, {"id": "7", "anonymousIds": ["d1"]}, False),
        ({"userId": "42", "anonymousId": "d1"}, {"id": "anon:d1", "anonymousIds": ["d1"]}, False),
    ],
)
def test_which_events_belong_to_a_record(
    event: dict[str, Any], record: dict[str, Any], expected: bool
) -> None:
    assert belongs(event, record) is expected
