"""A worker alone (`SEGFLOW_ALONE=1`): it takes every partition without a consumer group, and
its guard stops it, handing its partitions over, when a second worker joins."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fixtures.events import generate, reference
from tests.fixtures.stack import Namespace, logged
from tests.integration.test_pipeline import assert_equal_state, by_user, derived_state, stop

pytestmark = pytest.mark.integration


async def test_alone_then_a_second_worker_takes_over(namespace: Namespace, tmp_path: Path) -> None:
    events = generate(6000, seed=31)
    alone_log, other_log = tmp_path / "alone.log", tmp_path / "other.log"
    alone = namespace.worker(alone_log, SEGFLOW_ALONE="1")
    other = None
    try:
        await namespace.produce("segment/events", events[:3000], partition_of=by_user)
        await namespace.processed(role="derive.alone")
        await logged(alone_log, "alone: holding every partition")
        # A second worker (its own data directory: it restores the state from the changelog).
        other = namespace.worker(other_log, SEGFLOW_DATA_DIR=str(tmp_path / "other-data"))
        code = await asyncio.to_thread(alone.wait, 60)
        assert code != 0
        assert "another worker joined consumer group" in alone_log.read_text()
        await namespace.produce("segment/events", events[3000:], partition_of=by_user)
        await namespace.processed()
    finally:
        if alone.poll() is None:
            stop(alone)
        if other is not None:
            stop(other)
    assert other.returncode == 0, other_log.read_text()[-3000:]
    assert_equal_state(await derived_state(namespace), reference(events))


async def test_alone_refuses_to_join_a_running_group(namespace: Namespace, tmp_path: Path) -> None:
    grouped_log, alone_log = tmp_path / "grouped.log", tmp_path / "alone.log"
    grouped = namespace.worker(grouped_log)
    try:
        await namespace.produce("segment/events", generate(500, seed=5), partition_of=by_user)
        await namespace.processed()
        alone = namespace.worker(
            alone_log, SEGFLOW_ALONE="1", SEGFLOW_DATA_DIR=str(tmp_path / "alone-data")
        )
        code = await asyncio.to_thread(alone.wait, 60)
        assert code != 0
        assert "another worker is in consumer group" in alone_log.read_text()
    finally:
        stop(grouped)
    assert grouped.returncode == 0, grouped_log.read_text()[-3000:]
