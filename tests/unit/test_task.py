"""DerivationTask over real RocksDB state: redeliveries, batching, toggle order, timezones."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from pipeline.catalog import Catalog, load_catalog
from pipeline.documents.schema import load_schema
from pipeline.runtime.state import PartitionState
from pipeline.runtime.task import BatchResult, DerivationTask
from pipeline.runtime.topics import Names

ROOT = Path(__file__).resolve().parents[2]
NAMES = Names("x.")
MEMBERSHIPS = NAMES.collection("segment/memberships")
PROFILES = NAMES.collection("segment/profiles")
TOGGLES = NAMES.collection("segment/toggles")
COLLECTION_OF = {
    MEMBERSHIPS: "segment/memberships",
    PROFILES: "segment/profiles",
    TOGGLES: "segment/toggles",
}

DAY_MS = 86_400_000
WINDOW_MS = 7 * DAY_MS
T0 = 1_700_000_000_000  # a record timestamp (ms)

PLANES = {"vendor": 42, "name": "planes"}
TRAINS = {"vendor": 32, "name": "trains"}

Doc = dict[str, Any]


@dataclass(frozen=True)
class Record:
    """The attributes of aiokafka's ConsumerRecord that the task reads."""

    value: bytes
    timestamp: int
    offset: int


@functools.cache
def catalog() -> Catalog:
    return load_catalog(ROOT / "catalog", env={})


@functools.cache
def validator(collection: str) -> Any:
    return catalog().collections[collection].schema.validator()


@pytest.fixture
def task() -> DerivationTask:
    return DerivationTask(catalog(), "segment/events", NAMES.collection)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[PartitionState]:
    s = PartitionState(tmp_path / "p0")
    yield s
    s.close()


def event(n: int, *, user: str = "alice", segment: Doc = PLANES, **extra: Any) -> Doc:
    doc: Doc = {
        "event": f"11111111-2222-3333-4444-{n:012d}",
        "timestamp": "2021-01-16T12:34:56Z",
        "user": user,
        "segment": segment,
        **extra,
    }
    return doc


def add(n: int, **kw: Any) -> Doc:
    return event(n, **kw)


def rm(n: int, **kw: Any) -> Doc:
    return event(n, remove=True, **kw)


class Feed:
    """Offsets and record timestamps for events as they arrive on one partition."""

    def __init__(self) -> None:
        self.offset = 0

    def records(self, docs: Sequence[Doc], timestamp: int = T0) -> list[Record]:
        out = []
        for doc in docs:
            out.append(Record(orjson.dumps(doc), timestamp, self.offset))
            self.offset += 1
        return out


def process(
    task: DerivationTask, state: PartitionState, records: list[Record], *, check: bool = True
) -> BatchResult:
    """Process one batch and commit it locally, as the worker does after producing."""
    result = task.process(cast(Any, records), state)
    input_next = records[-1].offset + 1 if records else state.input_next
    state.apply(
        result.changes,
        state.changelog_next + len(result.changes) + 1,
        input_next,
        forgotten=result.forgotten,
    )
    for output, _key, value in result.documents if check else ():
        assert_valid(output.spec.name, orjson.loads(value))
    return result


def assert_valid(collection: str, doc: Doc) -> None:
    errors = [e.message for e in validator(collection).iter_errors(doc)]
    assert not errors, f"{collection}: {doc}: {errors}"


def final_documents(results: Sequence[BatchResult]) -> dict[tuple[str, bytes], Doc]:
    out: dict[tuple[str, bytes], Doc] = {}
    for result in results:
        for output, key, value in result.documents:
            out[(output.topic, key)] = orjson.loads(value)
    return out


def toggles(results: Sequence[BatchResult]) -> list[Doc]:
    return [
        orjson.loads(value)
        for result in results
        for output, _key, value in result.documents
        if output.topic == TOGGLES
    ]


def membership_key(user: str, segment: Doc = PLANES) -> tuple[str, bytes]:
    return MEMBERSHIPS, orjson.dumps([segment["vendor"], segment["name"], user])


# --- Set-up ------------------------------------------------------------------------------------


def test_task_compiles_the_catalog(task: DerivationTask) -> None:
    assert [o.topic for o in task.outputs] == [MEMBERSHIPS, PROFILES, TOGGLES]
    assert task.dedup_window_ms == WINDOW_MS
    reducers = {o.topic: o.reducer is not None for o in task.outputs}
    assert reducers == {MEMBERSHIPS: True, PROFILES: True, TOGGLES: False}


def test_one_add_publishes_membership_and_profile(
    task: DerivationTask, state: PartitionState
) -> None:
    result = process(task, state, Feed().records([add(1, value="v")]))
    assert (result.events, result.redeliveries) == (1, 0)
    ts = "2021-01-16T12:34:56Z"
    assert final_documents([result]) == {
        membership_key("alice"): {
            "segment": PLANES,
            "user": "alice",
            "first": ts,
            "last": ts,
            "member": True,
            "value": "v",
        },
        (PROFILES, b'["alice"]'): {
            "user": "alice",
            "segments": [
                {"segment": PLANES, "first": ts, "last": ts, "member": True, "value": "v"}
            ],
        },
    }


# --- Redeliveries ------------------------------------------------------------------------------

REDELIVERY_CASES = [
    # (name, list of batches of (event, record timestamp), expected redeliveries)
    pytest.param([[(add(1), T0), (add(1), T0)]], 1, id="same-batch"),
    pytest.param([[(add(1), T0)], [(add(1), T0 + 1000)]], 1, id="next-batch"),
    pytest.param(
        [[(add(1), T0)], [(add(1), T0 + WINDOW_MS - 1)]], 1, id="next-batch-just-inside-window"
    ),
    pytest.param([[(add(1), T0), (add(1), T0 + WINDOW_MS + 1)]], 0, id="same-batch-after-window"),
    pytest.param([[(add(1), T0)], [(add(1), T0 + WINDOW_MS + 1)]], 0, id="next-batch-after-window"),
    pytest.param(
        [[(add(1), T0)], [(add(1), T0 + WINDOW_MS + 1)], [(add(1), T0 + WINDOW_MS + 2)]],
        1,
        id="window-restarts-at-the-new-delivery",
    ),
    pytest.param(
        [[(add(1), T0), (add(1), T0 + 1), (rm(1), T0 + 2)], [(add(1), T0 + 3)]],
        3,
        id="many-redeliveries-same-id-any-content",
    ),
]


@pytest.mark.parametrize(("batches", "redeliveries"), REDELIVERY_CASES)
def test_redeliveries(
    task: DerivationTask,
    state: PartitionState,
    batches: list[list[tuple[Doc, int]]],
    redeliveries: int,
) -> None:
    feed = Feed()
    results = []
    for batch in batches:
        records = [r for doc, ts in batch for r in feed.records([doc], ts)]
        results.append(process(task, state, records))
    assert sum(r.events for r in results) == sum(len(b) for b in batches)
    assert sum(r.redeliveries for r in results) == redeliveries


def test_redelivery_changes_nothing_and_emits_nothing(
    task: DerivationTask, state: PartitionState
) -> None:
    feed = Feed()
    first = process(task, state, feed.records([add(1), rm(2)]))
    again = process(task, state, feed.records([add(1), rm(2)], T0 + DAY_MS))
    assert again.redeliveries == 2
    assert again.documents == []
    assert again.changes == {}
    assert final_documents([first])[membership_key("alice")]["member"] is False


def test_redelivered_add_inside_window_does_not_toggle(
    task: DerivationTask, state: PartitionState
) -> None:
    feed = Feed()
    results = [
        process(task, state, feed.records([add(1), rm(2)])),
        process(task, state, feed.records([add(1)], T0 + DAY_MS)),
    ]
    assert [t["event"] for t in toggles(results)] == [rm(2)["event"]]
    assert final_documents(results)[membership_key("alice")]["member"] is False


def test_redelivered_add_after_window_is_a_new_event(
    task: DerivationTask, state: PartitionState
) -> None:
    feed = Feed()
    results = [
        process(task, state, feed.records([add(1), rm(2)])),
        process(task, state, feed.records([add(1)], T0 + WINDOW_MS + 1)),
    ]
    assert results[1].redeliveries == 0
    assert [(t["event"], t["previous"]["event"]) for t in toggles(results)] == [
        (rm(2)["event"], add(1)["event"]),
        (add(1)["event"], rm(2)["event"]),
    ]
    assert final_documents(results)[membership_key("alice")]["member"] is True


# --- Batching does not change the outcome ------------------------------------------------------


def workload(seed: int, size: int = 60) -> list[Doc]:
    """Adds and removes of a few users in a few segments, with some redeliveries mixed in."""
    rng = random.Random(seed)
    docs: list[Doc] = []
    for n in range(size):
        if docs and rng.random() < 0.15:
            docs.append(rng.choice(docs))  # a redelivery
            continue
        user = rng.choice(["alice", "bob", "carly"])
        segment = rng.choice([PLANES, TRAINS, {"vendor": 7, "name": "planes"}])
        stamp = f"2021-01-{rng.randint(10, 20)}T{rng.randint(0, 23):02d}:00:00" + rng.choice(
            ["Z", "-04:00", "+05:30"]
        )
        if rng.random() < 0.4:
            docs.append(rm(n, user=user, segment=segment, timestamp=stamp))
        elif rng.random() < 0.5:
            docs.append(add(n, user=user, segment=segment, timestamp=stamp, value=f"v{n}"))
        else:
            docs.append(add(n, user=user, segment=segment, timestamp=stamp))
    return docs


def split(docs: list[Doc], sizes: list[int]) -> list[list[Doc]]:
    out: list[list[Doc]] = []
    i = 0
    while i < len(docs):
        size = sizes[len(out) % len(sizes)]
        out.append(docs[i : i + size])
        i += size
    return out


def run_batches(tmp_path: Path, batches: list[list[Doc]]) -> list[BatchResult]:
    task = DerivationTask(catalog(), "segment/events", NAMES.collection)
    state = PartitionState(tmp_path)
    feed = Feed()
    try:
        return [process(task, state, feed.records(batch), check=False) for batch in batches]
    finally:
        state.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("sizes", [[1], [2, 5], [7], [13, 1, 3]], ids=str)
def test_batching_does_not_change_the_outcome(tmp_path: Path, seed: int, sizes: list[int]) -> None:
    docs = workload(seed)
    whole = run_batches(tmp_path / "whole", [docs])
    parts = run_batches(tmp_path / "parts", split(docs, sizes))
    final = final_documents(whole)
    assert final_documents(parts) == final
    assert toggles(parts) == toggles(whole) != []
    assert sum(r.redeliveries for r in parts) == whole[0].redeliveries > 0
    assert sum(r.events for r in parts) == whole[0].events == len(docs)
    if sizes == [1]:
        for (topic, _key), doc in final.items():
            assert_valid(COLLECTION_OF[topic], doc)


# --- Toggles in arrival order ------------------------------------------------------------------


def test_toggles_are_emitted_in_arrival_order(task: DerivationTask, state: PartitionState) -> None:
    # Interleaved users and segments; event timestamps run backwards to show they do not matter.
    docs = [
        add(1, user="bob", timestamp="2021-01-20T00:00:00Z"),
        add(2, user="alice", timestamp="2021-01-19T00:00:00Z"),
        rm(3, user="alice", timestamp="2021-01-18T00:00:00Z"),
        add(4, user="bob", segment=TRAINS, timestamp="2021-01-17T00:00:00Z"),
        rm(5, user="bob", timestamp="2021-01-16T00:00:00Z"),
        add(6, user="alice", timestamp="2021-01-15T00:00:00Z"),
        rm(7, user="bob", segment=TRAINS, timestamp="2021-01-14T00:00:00Z"),
        rm(8, user="bob", timestamp="2021-01-13T00:00:00Z"),
        add(9, user="bob", timestamp="2021-01-12T00:00:00Z"),
    ]
    result = process(task, state, Feed().records(docs))
    pairs = [(t["event"][-1], t["previous"]["event"][-1]) for t in toggles([result])]
    assert pairs == [("3", "2"), ("5", "1"), ("6", "3"), ("7", "4"), ("9", "8")]
    emitted = toggles([result])
    assert emitted[0] == {**docs[2], "previous": docs[1]}


def test_toggle_previous_survives_batches(task: DerivationTask, state: PartitionState) -> None:
    feed = Feed()
    results = [process(task, state, feed.records([d])) for d in [add(1), add(2), rm(3)]]
    assert toggles(results) == [{**rm(3), "previous": add(2)}]


# --- Memberships: instants, original strings ---------------------------------------------------

Z = "2021-01-16T20:00:00Z"
OFFSET = "2021-01-16T17:09:34-04:00"  # 21:09:34Z: later than Z


@pytest.mark.parametrize("order", [[Z, OFFSET], [OFFSET, Z]], ids=["z-first", "offset-first"])
@pytest.mark.parametrize("batched", [False, True], ids=["one-batch", "two-batches"])
def test_memberships_compare_instants_and_keep_strings(
    task: DerivationTask, state: PartitionState, order: list[str], batched: bool
) -> None:
    docs = [add(i, timestamp=ts) for i, ts in enumerate(order)]
    feed = Feed()
    batches = [[d] for d in docs] if batched else [docs]
    results = [process(task, state, feed.records(b)) for b in batches]
    final = final_documents(results)
    membership = final[membership_key("alice")]
    assert (membership["first"], membership["last"]) == (Z, OFFSET)
    detail = final[(PROFILES, b'["alice"]')]["segments"][0]
    assert (detail["first"], detail["last"]) == (Z, OFFSET)


def test_membership_follows_the_spec_across_batches(
    task: DerivationTask, state: PartitionState
) -> None:
    feed = Feed()
    results = [
        process(task, state, feed.records([add(1, value="a", timestamp="2021-01-17T00:00:00Z")])),
        process(task, state, feed.records([rm(2, timestamp="2021-01-18T00:00:00Z")])),
        process(task, state, feed.records([add(3, timestamp="2021-01-16T00:00:00Z")])),
    ]
    assert final_documents(results)[membership_key("alice")] == {
        "segment": PLANES,
        "user": "alice",
        "first": "2021-01-16T00:00:00Z",
        "last": "2021-01-18T00:00:00Z",
        "member": True,  # the last to arrive wins, whatever its timestamp
        "value": "a",  # a remove does not erase it; an add without one neither
    }


def test_documents_validate_against_their_schemas() -> None:
    """The helper `process` validates; make sure the schemas it uses are the catalog's."""
    for name in ("segment/memberships", "segment/profiles", "segment/toggles"):
        path = catalog().collections[name].schema.path.resolve()
        assert path.parent == ROOT / "schemas"
        assert load_schema(path).contents == catalog().collections[name].schema.contents


def test_toggle_emitted_twice_in_a_batch_keeps_arrival_order(
    task: DerivationTask, state: PartitionState
) -> None:
    feed = Feed()
    records = feed.records([add(1), rm(2), add(3)]) + feed.records([rm(2)], T0 + WINDOW_MS + 1)
    emitted = toggles([process(task, state, records)])
    # rm(2) toggled after add(1), add(3) after rm(2), and the late rm(2) after add(3) again.
    pairs = [(t["event"][-1], t["previous"]["event"][-1]) for t in emitted]
    assert pairs[-2:] == [("3", "2"), ("2", "3")]
