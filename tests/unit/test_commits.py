"""Consumer offsets committed at most once per interval while busy, and at once when settled."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError

from pipeline.runtime import topics
from pipeline.runtime.topics import Commits

A = TopicPartition("t", 0)
B = TopicPartition("t", 1)


class Consumer:
    """Only what Commits uses of AIOKafkaConsumer: `commit`."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(topics.time, "monotonic", lambda: now[0])
    return now


async def test_the_first_offsets_commit_and_later_ones_wait_for_the_interval(
    clock: list[float],
) -> None:
    consumer: Any = Consumer()
    commits = Commits(consumer, interval=1.0)
    await commits.add({A: 10})
    clock[0] += 0.4
    await commits.add({A: 20, B: 5})
    clock[0] += 0.4
    await commits.add({A: 30})
    assert consumer.commits == [{A: 10}]
    clock[0] += 0.2
    await commits.add({B: 7})
    assert consumer.commits == [{A: 10}, {A: 30, B: 7}]
    assert commits.pending == {}


async def test_settle_commits_what_is_pending_at_once_and_only_the_partitions_asked(
    clock: list[float],
) -> None:
    consumer: Any = Consumer()
    commits = Commits(consumer, interval=1.0)
    await commits.add({A: 1})
    await commits.add({A: 2, B: 3})
    await commits.settle([B])
    assert consumer.commits == [{A: 1}, {B: 3}]
    assert commits.pending == {A: 2}
    await commits.settle()
    await commits.settle()  # nothing pending: no request
    assert consumer.commits == [{A: 1}, {B: 3}, {A: 2}]


async def test_an_offset_that_moved_on_during_the_commit_stays_pending(clock: list[float]) -> None:
    commits: Commits

    class Slow(Consumer):
        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            await super().commit(offsets)
            commits.pending[A] = 99  # a batch finished while the request was in flight

    consumer: Any = Slow()
    commits = Commits(consumer, interval=1.0)
    await commits.add({A: 5})
    assert consumer.commits == [{A: 5}]
    assert commits.pending == {A: 99}


async def test_release_commits_revoked_partitions_and_logs_a_failure_instead_of_raising(
    clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    consumer: Any = Consumer()
    commits = Commits(consumer, interval=1.0)
    await commits.add({A: 1})
    await commits.add({A: 2, B: 3})
    await commits.release([B], "derive")
    assert consumer.commits == [{A: 1}, {B: 3}]

    class Failing(Consumer):
        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            raise KafkaConnectionError("broker gone")

    commits.consumer = Failing()  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger="pipeline.runtime.topics"):
        await commits.release([A], "derive")
    assert "derive: offsets of revoked partitions not committed" in caplog.text
    assert commits.pending == {A: 2}


async def test_a_commit_refused_after_a_rebalance_is_logged_and_stays_pending(
    clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    class Rebalanced(Consumer):
        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            raise CommitFailedError("the group has already rebalanced")

    consumer: Any = Rebalanced()
    commits = Commits(consumer, interval=1.0)
    with caplog.at_level(logging.WARNING, logger="pipeline.runtime.topics"):
        await commits.add({A: 4})
        await commits.settle()
    assert commits.pending == {A: 4}
    assert "offsets not committed, the group rebalanced" in caplog.text
