"""The segmentation derivations (memberships, profiles, toggles) against SPEC section 2."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from derivations.segment import Memberships, Profiles, Toggles
from pipeline.documents.reduce import Reducer, compile_reducer
from pipeline.documents.schema import load_schema

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"

Doc = dict[str, Any]

PLANES = {"vendor": 42, "name": "planes"}
TRAINS = {"vendor": 32, "name": "trains"}
T1 = "2021-01-16T12:34:56Z"
T2 = "2021-01-17T12:34:56Z"
T3 = "2021-01-18T12:34:56Z"


@functools.cache
def validator(name: str) -> Draft202012Validator:
    return load_schema(SCHEMAS / f"{name}.schema.yaml").validator()


@functools.cache
def reducer(name: str) -> Reducer:
    return compile_reducer(load_schema(SCHEMAS / f"{name}.schema.yaml"))


def assert_valid(name: str, doc: Any) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator(name).iter_errors(doc)]
    assert not errors, f"{name} document {doc} is invalid: {errors}"


def event(
    n: int,
    *,
    remove: bool = False,
    value: str | None = None,
    user: str = "alice",
    segment: Doc | None = None,
    timestamp: str = T1,
    check: bool = True,
) -> Doc:
    doc: Doc = {
        "event": f"11111111-2222-3333-4444-{n:012d}",
        "timestamp": timestamp,
        "user": user,
        "segment": dict(segment or PLANES),
    }
    if remove:
        doc["remove"] = True
    if value is not None:
        doc["value"] = value
    if check:
        assert_valid("event", doc)
    return doc


def add(n: int, **kw: Any) -> Doc:
    return event(n, **kw)


def rm(n: int, **kw: Any) -> Doc:
    return event(n, remove=True, **kw)


# --- Independent rule implementations ----------------------------------------------------------


def rule_toggles(events: list[Doc]) -> list[Doc]:
    """SPEC 2, said plainly: per (segment, user), emit e with previous p iff the user was added
    before e, p is the last event before e, and their remove-status differs."""
    out: list[Doc] = []
    state: dict[tuple[Any, ...], tuple[bool, Doc | None]] = {}
    for e in events:
        key = (e["segment"]["vendor"], e["segment"]["name"], e["user"])
        added, last = state.get(key, (False, None))
        removing = bool(e.get("remove"))
        if added and last is not None and bool(last.get("remove")) != removing:
            out.append({**e, "previous": last})
        state[key] = (added or not removing, e)
    return out


def run_toggles(events: list[Doc], *, roundtrip: bool = False, check: bool = True) -> list[Doc]:
    """Drive Toggles like pipeline/runtime/task.py does, with the real register reducer."""
    toggles = Toggles()
    reduce = reducer("toggle-register")
    registers: dict[tuple[Any, ...], Any] = {}
    out: list[Doc] = []
    for e in events:
        key = (e["segment"]["vendor"], e["segment"]["name"], e["user"])
        previous = registers.get(key)
        register = previous
        for update in toggles.update(e):
            register = update if register is None else reduce(register, update)
        assert register is not None
        if check:
            assert_valid("toggle-register", register)
        # The task stores registers as JSON between batches.
        registers[key] = orjson.loads(orjson.dumps(register)) if roundtrip else register
        published = toggles.publish(e, register, previous)
        for doc in published if check else ():
            assert_valid("toggle", doc)
        out += published
    return out


def instant_key(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rule_membership(events: list[Doc]) -> Doc:
    """SPEC 2 memberships for one (segment, user), computed directly from the event list."""
    adds = [e for e in events if not e.get("remove")]
    doc: Doc = {
        "segment": events[0]["segment"],
        "user": events[0]["user"],
        "last": max(events, key=lambda e: instant_key(e["timestamp"]))["timestamp"],
        "member": not events[-1].get("remove", False),
    }
    if adds:
        doc["first"] = min(adds, key=lambda e: instant_key(e["timestamp"]))["timestamp"]
    valued = [e for e in adds if "value" in e]
    if valued:
        doc["value"] = valued[-1]["value"]
    return doc


def fold(name: str, docs: list[Doc]) -> Doc:
    reduce = reducer(name)
    out = docs[0]
    for doc in docs[1:]:
        out = reduce(out, doc)
    return out


# --- Memberships and profiles: what one event publishes ----------------------------------------

DETAIL_CASES = [
    pytest.param(
        add(1),
        {"segment": PLANES, "first": T1, "last": T1, "member": True},
        id="add",
    ),
    pytest.param(
        add(1, value="v", timestamp=T2),
        {"segment": PLANES, "first": T2, "last": T2, "member": True, "value": "v"},
        id="add-with-value",
    ),
    pytest.param(
        rm(1, timestamp=T3),
        {"segment": PLANES, "last": T3, "member": False},
        id="remove-has-no-first-or-value",
    ),
    pytest.param(
        add(1, timestamp="2021-01-16T17:09:34-04:00"),
        {
            "segment": PLANES,
            "first": "2021-01-16T17:09:34-04:00",
            "last": "2021-01-16T17:09:34-04:00",
            "member": True,
        },
        id="keeps-original-timestamp-text",
    ),
]


@pytest.mark.parametrize(("source", "detail"), DETAIL_CASES)
def test_memberships_publish_one_document(source: Doc, detail: Doc) -> None:
    docs = Memberships().publish(source, None, None)
    assert docs == [{**detail, "user": "alice"}]
    assert_valid("membership", docs[0])


@pytest.mark.parametrize(("source", "detail"), DETAIL_CASES)
def test_profiles_publish_one_document(source: Doc, detail: Doc) -> None:
    docs = Profiles().publish(source, None, None)
    assert docs == [{"user": "alice", "segments": [detail]}]
    assert_valid("profile", docs[0])


def test_reducing_published_documents_leaves_the_source_unchanged() -> None:
    source = add(1)
    doc = Memberships().publish(source, None, None)[0]
    merged = reducer("membership")(doc, Memberships().publish(rm(2, timestamp=T2), None, None)[0])
    assert merged["member"] is False
    assert source == add(1)


MEMBERSHIP_SEQUENCES = [
    pytest.param([add(1)], id="one-add"),
    pytest.param([rm(1)], id="remove-only"),
    pytest.param([add(1, value="a"), add(2, timestamp=T2), rm(3, timestamp=T3)], id="add-add-rm"),
    pytest.param([add(1, value="a"), rm(2, timestamp=T2)], id="remove-keeps-value"),
    pytest.param(
        [add(1, value="a", timestamp=T2), add(2, value="b", timestamp=T1)],
        id="last-value-by-arrival-first-by-instant",
    ),
    pytest.param([rm(1, timestamp=T3), add(2, timestamp=T1)], id="late-add-arrives-last"),
    pytest.param(
        [add(1, timestamp="2021-01-16T20:00:00Z"), add(2, timestamp="2021-01-16T17:09:34-04:00")],
        id="offset-is-later",
    ),
    pytest.param(
        [add(1, timestamp="2021-01-16T17:09:34-04:00"), add(2, timestamp="2021-01-16T20:00:00Z")],
        id="offset-is-later-reversed",
    ),
]


@pytest.mark.parametrize("events", MEMBERSHIP_SEQUENCES)
def test_memberships_reduce_to_the_rule(events: list[Doc]) -> None:
    docs = [d for e in events for d in Memberships().publish(e, None, None)]
    combined = fold("membership", docs)
    assert combined == rule_membership(events)
    assert_valid("membership", combined)


def test_membership_timezones_compare_as_instants() -> None:
    z, offset = "2021-01-16T20:00:00Z", "2021-01-16T17:09:34-04:00"  # 20:00Z < 21:09:34Z
    for order in ([z, offset], [offset, z]):
        docs = [
            Memberships().publish(add(i, timestamp=ts), None, None)[0] for i, ts in enumerate(order)
        ]
        combined = fold("membership", docs)
        assert combined["first"] == z
        assert combined["last"] == offset


def test_profiles_reduce_to_one_sorted_entry_per_segment() -> None:
    autos = {"vendor": 52, "name": "autos"}
    planes_other_vendor = {"vendor": 7, "name": "planes"}
    events = [
        add(1, segment=TRAINS),
        add(2, segment=PLANES, value="v"),
        rm(3, segment=PLANES, timestamp=T2),
        add(4, segment=autos, timestamp=T2),
        add(5, segment=planes_other_vendor, timestamp=T3),
        add(6, segment=TRAINS, timestamp=T3),
    ]
    docs = [d for e in events for d in Profiles().publish(e, None, None)]
    combined = fold("profile", docs)
    assert_valid("profile", combined)
    assert combined["user"] == "alice"
    segments = combined["segments"]
    assert [s["segment"] for s in segments] == [autos, planes_other_vendor, PLANES, TRAINS]
    for detail in segments:
        mine = [e for e in events if e["segment"] == detail["segment"]]
        expected = rule_membership(mine)
        del expected["user"]
        assert detail == expected


# --- Toggles: publish with a hand-built register -----------------------------------------------

TOGGLE_CASES = [
    pytest.param(None, add(1), [], id="first-add-without-register"),
    pytest.param(None, rm(1), [], id="remove-without-register"),
    pytest.param({"added": False, "last": rm(0)}, rm(1), [], id="remove-after-remove-never-added"),
    pytest.param({"added": False, "last": rm(0)}, add(1), [], id="add-after-remove-never-added"),
    pytest.param({"added": True, "last": add(0)}, add(1), [], id="add-after-add"),
    pytest.param(
        {"added": True, "last": add(0)}, rm(1), [{**rm(1), "previous": add(0)}], id="add-then-rm"
    ),
    pytest.param({"added": True, "last": rm(0)}, rm(1), [], id="rm-after-rm"),
    pytest.param(
        {"added": True, "last": rm(0)}, add(1), [{**add(1), "previous": rm(0)}], id="rm-then-add"
    ),
]


@pytest.mark.parametrize(("previous", "source", "expected"), TOGGLE_CASES)
def test_toggles_publish(previous: Doc | None, source: Doc, expected: list[Doc]) -> None:
    toggles = Toggles()
    register = previous
    for update in toggles.update(source):
        register = update if register is None else reducer("toggle-register")(register, update)
    assert register is not None
    assert toggles.publish(source, register, previous) == expected
    for doc in expected:
        assert_valid("toggle", doc)


@pytest.mark.parametrize(
    ("source", "update"),
    [
        (add(1), {"added": True, "last": add(1)}),
        (add(1, value="v"), {"added": True, "last": add(1, value="v")}),
        (rm(1), {"added": False, "last": rm(1)}),
    ],
)
def test_toggles_update(source: Doc, update: Doc) -> None:
    assert Toggles().update(source) == [update]
    assert_valid("toggle-register", update)


# --- Toggles through the real register reducer --------------------------------------------------

SEQUENCES = [
    pytest.param([add(1)], [], id="first-add-never"),
    pytest.param([add(1), add(2), add(3)], [], id="repeated-add-never"),
    pytest.param([rm(1), rm(2)], [], id="repeated-remove-never"),
    pytest.param([rm(1), add(2)], [], id="remove-before-any-add-never"),
    pytest.param([rm(1), add(2), rm(3)], [(3, 2)], id="remove-add-remove"),
    pytest.param([add(1), add(2), rm(3)], [(3, 2)], id="spec-example"),
    pytest.param([add(1), rm(2), rm(3), add(4)], [(2, 1), (4, 3)], id="peer-alice"),
    pytest.param([add(1, value="v"), rm(2)], [(2, 1)], id="previous-keeps-value-of-add"),
    pytest.param(
        [add(1, value="v"), rm(2), add(3)], [(2, 1), (3, 2)], id="previous-remove-has-no-value"
    ),
    pytest.param(
        [add(1), add(2, user="bob"), rm(3, user="bob"), rm(4, segment=TRAINS), rm(5)],
        [(3, 2), (5, 1)],
        id="keys-are-independent",
    ),
]


def by_number(events: list[Doc], n: int) -> Doc:
    return next(e for e in events if e["event"].endswith(f"{n:012d}"))


@pytest.mark.parametrize(("events", "pairs"), SEQUENCES)
@pytest.mark.parametrize("roundtrip", [False, True], ids=["in-memory", "json-roundtrip"])
def test_toggles_through_register(
    events: list[Doc], pairs: list[tuple[int, int]], roundtrip: bool
) -> None:
    expected = [{**by_number(events, e), "previous": by_number(events, p)} for e, p in pairs]
    assert rule_toggles(events) == expected
    assert run_toggles(events, roundtrip=roundtrip) == expected


STEPS = st.lists(
    st.tuples(
        st.booleans(),  # remove?
        st.one_of(st.none(), st.sampled_from(["a", "b"])),  # value on adds
        st.sampled_from(["alice", "bob"]),
        st.sampled_from([PLANES, TRAINS]),
        st.sampled_from([T1, T2, T3, "2021-01-16T17:09:34-04:00"]),
    ),
    max_size=14,
)


def build(steps: list[tuple[bool, str | None, str, Doc, str]]) -> list[Doc]:
    return [
        event(
            i,
            remove=remove,
            value=None if remove else value,
            user=user,
            segment=segment,
            timestamp=ts,
            check=False,
        )
        for i, (remove, value, user, segment, ts) in enumerate(steps)
    ]


@settings(max_examples=100, deadline=None)
@given(STEPS)
def test_toggles_match_the_rule(steps: list[tuple[bool, str | None, str, Doc, str]]) -> None:
    events = build(steps)
    published = run_toggles(events, roundtrip=True, check=False)
    assert published == rule_toggles(events)
    for doc in published:
        assert_valid("toggle", doc)


@settings(max_examples=100, deadline=None)
@given(STEPS)
def test_memberships_match_the_rule(steps: list[tuple[bool, str | None, str, Doc, str]]) -> None:
    events = build(steps)
    groups: dict[tuple[Any, ...], list[Doc]] = {}
    for e in events:
        groups.setdefault((e["segment"]["vendor"], e["segment"]["name"], e["user"]), []).append(e)
    for group in groups.values():
        docs = [d for e in group for d in Memberships().publish(e, None, None)]
        combined = fold("membership", docs)
        assert combined == rule_membership(group)
        assert_valid("membership", combined)
