"""Dedup state stays bounded: ids accepted more than the window (and its grace) before a
partition's newest record are deleted, from RocksDB and (as tombstones) from the changelog, and
redeliveries inside the window are still dropped."""

from __future__ import annotations

from pathlib import Path

from pipeline.runtime.state import EXPIRY, PartitionState
from pipeline.runtime.task import DEDUP, DerivationTask, grace_ms
from tests.unit.test_task import NAMES, T0, WINDOW_MS, Feed, add, catalog, process

LATER = WINDOW_MS + grace_ms(WINDOW_MS) + 1


def task() -> DerivationTask:
    return DerivationTask(catalog(), "segment/events", NAMES.collection)


def stored(state: PartitionState, prefix: bytes) -> list[bytes]:
    return [k for k in state.keys_from(prefix) if k.startswith(prefix)]


def test_ids_past_the_window_are_deleted_and_the_changelog_gets_tombstones(tmp_path: Path) -> None:
    t, state, feed = task(), PartitionState(tmp_path / "p"), Feed()
    process(t, state, feed.records([add(n, user=f"u{n}") for n in range(100)], T0))
    assert len(stored(state, DEDUP)) == len(stored(state, EXPIRY)) == 100
    # Inside the window (and its grace) nothing goes, and a redelivery is dropped.
    inside = process(t, state, feed.records([add(0, user="u0"), add(200)], T0 + WINDOW_MS))
    assert inside.redeliveries == 1
    assert not [k for k, v in inside.changes.items() if v is None]
    # Past it, the first hundred go: deleted here and tombstoned in the changelog; event 200,
    # accepted a window later, stays.
    past = process(t, state, feed.records([add(300)], T0 + LATER))
    tombstones = [k for k, v in past.changes.items() if v is None]
    assert len(tombstones) == 100 and all(k.startswith(DEDUP) for k in tombstones)
    assert len(stored(state, DEDUP)) == len(stored(state, EXPIRY)) == 2
    # A redelivery of a forgotten id is a new event, as it was before (past the window).
    again = process(t, state, feed.records([add(5, user="u5")], T0 + LATER))
    assert again.redeliveries == 0 and again.documents
    state.close()


def test_an_id_accepted_again_keeps_its_newer_acceptance(tmp_path: Path) -> None:
    t, state, feed = task(), PartitionState(tmp_path / "p"), Feed()
    process(t, state, feed.records([add(1)], T0))
    process(t, state, feed.records([add(1)], T0 + WINDOW_MS + 1))  # past the window: new
    result = process(t, state, feed.records([add(2)], T0 + LATER))
    assert not [k for k, v in result.changes.items() if v is None], "the newer one stays"
    assert len(stored(state, DEDUP)) == 2 and len(stored(state, EXPIRY)) == 2
    state.close()


def test_expiry_keeps_pace_but_is_bounded_per_batch(tmp_path: Path) -> None:
    t, state, feed = task(), PartitionState(tmp_path / "p"), Feed()
    process(t, state, feed.records([add(n, user=f"u{n % 50}") for n in range(5000)], T0))
    first = process(t, state, feed.records([add(9000)], T0 + LATER))
    assert len([v for v in first.changes.values() if v is None]) == 2 * 1 + 1000
    for _ in range(4):
        process(t, state, feed.records([add(9001 + _)], T0 + LATER))
    assert len(stored(state, DEDUP)) == 5
    state.close()


def test_a_state_from_before_the_index_is_indexed_when_opened(tmp_path: Path) -> None:
    state = PartitionState(tmp_path / "p")
    for n in range(10):  # as an older Segflow wrote them: no index entry
        state.db.put(DEDUP + b"%d" % n, T0.to_bytes(8, "big"))
    state.db.put(b"\x00meta", b'{"changelog": 5, "input": 7, "source": 0}')
    state.close()
    reopened = PartitionState(tmp_path / "p")
    assert len(stored(reopened, EXPIRY)) == 10 and reopened.input_next == 7
    deletions, forgotten = reopened.expired(T0 + 1, 100)
    assert len(deletions) == len(forgotten) == 10
    reopened.close()
