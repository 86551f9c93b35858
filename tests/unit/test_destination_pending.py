"""A destination lane's pending work and the requests composed from it (pure parts)."""

from __future__ import annotations

from typing import Any

from materializations.destinations.batches import Baseline, compose
from materializations.destinations.exports import View, enriched, view_of
from materializations.destinations.pending import Event, Pending, Slot
from pipeline.catalog.specs import DestinationSpec

RECORDS, EVENTS = "p.records", "p.records.forwarded"
SPEC = DestinationSpec(
    name="crm",
    kind="webhook",
    config={"url": "http://127.0.0.1:1/hooks"},
    groups={"vip": "VIP"},
    properties={"plan": "plan"},
    events=("purchase",),
)


def doc(record: str, plan: str, *, vip: bool = True) -> dict[str, Any]:
    return {"id": record, "properties": {"plan": plan}, "groups": ["vip"] if vip else []}


def lane() -> Pending:
    return Pending(RECORDS, EVENTS, {RECORDS: 0, EVENTS: 0})


def add_event(pending: Pending, record: str, offset: int, after: dict[str, Any], now: float = 0):
    event = {"id": f"e{offset}", "type": "purchase"}
    body = enriched(SPEC, event, after)
    assert body is not None
    pending.event(record, offset, {"id": f"e{offset}", **body}, view_of(SPEC, after), now)


def kinds(elements: list[Any]) -> list[str]:
    return [
        f"{e['record']}:{e['newProperties'].get('plan')}" if "toDelete" in e else f"{e['id']}"
        for e in elements
    ]


def test_a_later_document_replaces_a_pending_one_in_its_place() -> None:
    p = lane()
    p.document("a", 0, doc("a", "free"))
    p.document("b", 1, doc("b", "free"))
    p.document("a", 2, doc("a", "pro"))
    taken = p.take(10)
    assert [(i.record, i.offset) for i in taken] == [("a", 2), ("b", 1)]
    assert isinstance(taken[0], Slot) and taken[0].replaced and not taken[1].replaced
    assert len(p) == 0


def test_a_document_arriving_while_its_slot_is_taken_gets_a_new_one() -> None:
    p = lane()
    p.document("a", 0, doc("a", "free"))
    assert len(p.take(10)) == 1
    p.document("a", 1, doc("a", "pro"))
    assert [(i.record, i.offset) for i in p.take(10)] == [("a", 1)]


def test_the_checkpoint_is_the_smallest_pending_offset() -> None:
    p = lane()
    assert p.checkpoint() == {RECORDS: 0, EVENTS: 0}
    p.document("a", 0, doc("a", "free"))
    p.document("b", 1, doc("b", "free"))
    p.document("a", 2, doc("a", "pro"))  # a's slot now stands for offset 2
    assert p.checkpoint()[RECORDS] == 1
    first = p.take(1)
    assert [i.record for i in first] == ["a"]
    assert p.checkpoint()[RECORDS] == 1, "b is still pending"
    p.take(1)
    assert p.checkpoint()[RECORDS] == 3, "nothing pending: after the last applied"
    p.skip(EVENTS, 7)
    assert p.checkpoint()[EVENTS] == 8


def test_restore_puts_items_back_in_front_and_a_newer_document_wins() -> None:
    p = lane()
    p.document("a", 0, doc("a", "free"))
    p.document("b", 1, doc("b", "free"))
    taken = p.take(10)
    p.document("a", 2, doc("a", "pro"))
    p.restore(taken)
    again = p.take(10)
    assert [(i.record, i.offset) for i in again] == [("b", 1), ("a", 2)]
    assert p.checkpoint()[RECORDS] == 3


def test_the_export_goes_before_its_event_and_the_baseline_is_the_old_side() -> None:
    p = lane()
    p.document("a", 0, doc("a", "pro"))
    add_event(p, "a", 0, doc("a", "pro"))
    base = {"a": Baseline(-1, View({"plan": "free"}, ("VIP",)))}
    batch = compose(SPEC, p.take(10), base, p, now=0.0, hold=5.0)
    assert kinds(batch.elements) == ["a:pro", "e0"]
    assert batch.elements[0]["oldProperties"] == {"plan": "free"}
    assert (batch.exports, batch.events) == (1, 1)
    change = batch.changes["a"]
    assert (change.position, change.touched, change.view) == (
        0,
        True,
        View({"plan": "pro"}, ("VIP",)),
    )


def test_an_event_ahead_of_its_records_document_pulls_the_export_forward() -> None:
    p = lane()
    add_event(p, "a", 0, doc("a", "pro"))  # the forwarded topic was read first
    p.document("b", 0, doc("b", "free"))
    p.document("a", 1, doc("a", "pro"))
    batch = compose(SPEC, p.take(1), {}, p, now=0.0, hold=5.0)
    assert kinds(batch.elements) == ["a:pro", "e0"]
    assert [i.record for i in p.take(10)] == ["b"], "b keeps its turn; a's slot went"


def test_an_event_ahead_of_its_records_document_in_the_same_request_goes_after_it() -> None:
    for hold in (5.0, 0.0):  # also when it could go anyway (the sink is draining)
        p = lane()
        add_event(p, "a", 0, doc("a", "pro"))
        p.document("b", 0, doc("b", "free"))
        p.document("a", 1, doc("a", "pro"))
        batch = compose(SPEC, p.take(10), {}, p, now=0.0, hold=hold)
        assert kinds(batch.elements) == ["a:pro", "e0", "b:free"]


def test_an_event_whose_record_is_not_up_to_date_waits_for_its_next_document() -> None:
    p = lane()
    add_event(p, "a", 3, doc("a", "pro"), now=0.0)
    add_event(p, "a", 4, doc("a", "pro"), now=0.0)
    batch = compose(SPEC, p.take(10), {}, p, now=1.0, hold=5.0)
    assert batch.elements == [] and len(p) == 2, "both held, in order"
    assert p.checkpoint()[EVENTS] == 3, "held events keep the checkpoint"
    p.document("a", 9, doc("a", "pro"))
    batch = compose(SPEC, p.take(10), {}, p, now=1.0, hold=5.0)
    assert kinds(batch.elements) == ["a:pro", "e3", "e4"]


def test_a_held_event_goes_anyway_after_waiting_long_enough() -> None:
    p = lane()
    add_event(p, "a", 0, doc("a", "pro"), now=0.0)
    compose(SPEC, p.take(10), {}, p, now=0.0, hold=5.0)
    assert p.release(now=4.0, after=5.0) == 0
    assert p.release(now=5.0, after=5.0) == 1
    taken = p.take(10)
    assert isinstance(taken[0], Event) and taken[0].force
    assert kinds(compose(SPEC, taken, {}, p, now=5.0, hold=5.0).elements) == ["e0"]


def test_a_document_read_again_after_a_restart_sends_nothing() -> None:
    p = lane()
    p.document("a", 4, doc("a", "free"))  # older than what was acknowledged
    base = {"a": Baseline(7, View({"plan": "pro"}, ("VIP",)))}
    batch = compose(SPEC, p.take(10), base, p, now=0.0, hold=5.0)
    assert batch.elements == [] and batch.changes == {}


def test_a_replaced_slot_records_its_position_even_without_an_export() -> None:
    p = lane()
    p.document("a", 1, doc("a", "pro"))
    p.document("a", 2, doc("a", "free"))
    base = {"a": Baseline(0, View({"plan": "free"}, ("VIP",)))}
    batch = compose(SPEC, p.take(10), base, p, now=0.0, hold=5.0)
    assert batch.elements == []
    assert (batch.changes["a"].position, batch.changes["a"].touched) == (2, False)


def test_enrich_takes_one_record_per_request() -> None:
    p = lane()
    p.document("a", 0, doc("a", "pro"))
    add_event(p, "a", 0, doc("a", "pro"))
    p.document("b", 1, doc("b", "pro"))
    assert [i.record for i in p.take(10, one_record=True)] == ["a", "a"]
    assert [i.record for i in p.take(10, one_record=True)] == ["b"]
