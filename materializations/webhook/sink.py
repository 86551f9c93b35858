"""WebhookSink: a lane per source partition, batches as large as back-pressure makes them,
retries with backoff, parking what the endpoint rejects, draining on shutdown, and its figures.

What one request means (retry, park, done) is in `delivery`; the signature in `signing`.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
import orjson
from aiokafka import ConsumerRecord, TopicPartition
from yarl import URL

from materializations.base import Sink
from materializations.webhook.delivery import Outcome, backoff, park_until_taken, signed_post
from materializations.webhook.signing import key
from materializations.webhook.stats import WebhookStats
from pipeline.catalog import BindingSpec, MaterializationSpec
from pipeline.errors import SegflowError
from pipeline.figures import Figure

# The package's name, as before the split: log lines read the same.
log = logging.getLogger("materializations.webhook")

DeadLetter = Callable[[bytes, dict[str, str]], Awaitable[None]]
"""Parks a rejected batch: (request body, headers describing why and what)."""

DEFAULT_MAX_BATCH = 500
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_TIMEOUT = 20.0
TIMEOUT_BOUNDS = (15.0, 30.0)


class WebhookError(SegflowError):
    """A webhook materialization is misconfigured."""


@dataclass
class _Lane:
    """One source partition: pending (offset, toggle) in offset order and its delivery task."""

    tp: TopicPartition
    pending: deque[tuple[int, bytes | None]] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    done: int | None = None
    """Next offset after everything delivered or parked."""
    task: asyncio.Task[None] | None = None


class WebhookSink(Sink):
    """POSTs toggles to `spec.config['url']`, one request in flight per source partition."""

    def __init__(
        self,
        spec: MaterializationSpec,
        topics: Mapping[str, BindingSpec],
        *,
        dead_letter: DeadLetter,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        super().__init__(spec, topics)
        config = spec.config
        self.url = config["url"]
        self.shown_url = str(URL(self.url).with_user(None))
        secret = config.get("secret", "")
        try:
            self._key = key(secret) if secret else None
        except ValueError as error:
            raise WebhookError(f"materialization '{spec.name}': {error}") from None
        self.max_batch = int(config.get("max_batch", DEFAULT_MAX_BATCH))
        self.max_attempts = int(config.get("max_attempts", DEFAULT_MAX_ATTEMPTS))
        low, high = TIMEOUT_BOUNDS
        self.timeout = min(max(float(config.get("timeout", DEFAULT_TIMEOUT)), low), high)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.stats = WebhookStats()
        self._dead_letter = dead_letter
        self._lanes: dict[TopicPartition, _Lane] = {}
        self._reported: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()
        self._session: aiohttp.ClientSession | None = None

    @property
    def backlog(self) -> int:
        """Toggles applied but not yet delivered or parked."""
        return sum(len(lane.pending) for lane in self._lanes.values())

    def figures(self) -> Sequence[Figure]:
        s = self.stats
        return (
            Figure("webhook_requests_total", "counter", "Requests sent, retries too.", s.requests),
            Figure("webhook_retries_total", "counter", "Failed requests retried.", s.retries),
            Figure("webhook_toggles_delivered_total", "counter", "Toggles delivered.", s.delivered),
            Figure("webhook_batches_parked_total", "counter", "Batches parked.", s.parked),
            Figure("webhook_toggles_parked_total", "counter", "Toggles parked.", s.parked_toggles),
            Figure("webhook_batch_toggles", "histogram", "Toggles per batch.", s.batch_sizes),
            Figure(
                "webhook_request_seconds", "histogram", "Time to a response.", s.request_seconds
            ),
        )

    async def open(self) -> None:
        if self._session is not None:
            return
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        for lane in self._lanes.values():
            self._start(lane)

    async def apply(self, binding: BindingSpec, records: Sequence[ConsumerRecord]) -> None:
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            lane = self._lanes.get(tp)
            if lane is None:
                lane = self._lanes[tp] = _Lane(tp)
                self._start(lane)
            lane.pending.append((record.offset, record.value))
            lane.wakeup.set()

    async def flush(self) -> dict[TopicPartition, int]:
        """Offsets delivered or parked since the last flush; never waits for the endpoint."""
        advanced = {
            tp: lane.done
            for tp, lane in self._lanes.items()
            if lane.done is not None and self._reported.get(tp) != lane.done
        }
        self._reported.update(advanced)
        return advanced

    async def drain(self, timeout: float) -> bool:
        """Wait until every applied toggle is delivered or parked; False on timeout."""
        try:
            async with asyncio.timeout(timeout), self._progress:
                await self._progress.wait_for(lambda: self.backlog == 0)
        except TimeoutError:
            return False
        return True

    async def revoke(self, partitions: Sequence[TopicPartition]) -> None:
        """Stop delivering for partitions that moved to another worker: it resends from the
        committed offset, so what is dropped here is delivered there (same event ids)."""
        lanes = [self._lanes.pop(tp) for tp in partitions if tp in self._lanes]
        tasks = [lane.task for lane in lanes if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for tp in partitions:
            self._reported.pop(tp, None)
        async with self._progress:
            self._progress.notify_all()

    async def close(self) -> None:
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in self._lanes.values():
            lane.task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- delivery --

    def _start(self, lane: _Lane) -> None:
        if self._session is not None and lane.task is None:
            lane.task = asyncio.create_task(
                self._run(lane),
                name=f"webhook {self.spec.name} {lane.tp.topic}/{lane.tp.partition}",
            )

    async def _run(self, lane: _Lane) -> None:
        failures = 0
        while True:
            if not lane.pending:
                lane.wakeup.clear()
                await lane.wakeup.wait()
                continue
            batch = list(itertools.islice(lane.pending, self.max_batch))
            try:
                await self._deliver(lane.tp, batch)
            except Exception:
                # A bug must not stop the partition for good, nor skip the batch: log and retry.
                failures += 1
                log.exception("%s: delivering %s failed", self.spec.name, _where(lane.tp, batch))
                await asyncio.sleep(self._backoff(failures))
                continue
            failures = 0
            for _ in batch:
                lane.pending.popleft()
            lane.done = batch[-1][0] + 1
            async with self._progress:
                self._progress.notify_all()

    async def _deliver(self, tp: TopicPartition, batch: list[tuple[int, bytes | None]]) -> None:
        """Deliver or park one batch; returns only then."""
        docs = [orjson.Fragment(value) for _, value in batch if value is not None]
        if not docs:
            return
        self.stats.batch(len(docs))
        body = orjson.dumps(docs)
        first, last = batch[0][0], batch[-1][0]
        ident = f"{self.spec.name}\0{tp.topic}\0{tp.partition}\0{first}\0{last}"
        msg_id = "msg_" + hashlib.sha256(ident.encode()).hexdigest()[:32]
        failures = rejections = 0
        while True:
            outcome = await self._attempt(body, msg_id)
            if outcome.ok:
                self.stats.delivered += len(docs)
                return
            failures += 1
            if not outcome.retriable:
                rejections += 1
                if outcome.status == 410 or rejections >= self.max_attempts:
                    await self._park(tp, batch, body, msg_id, outcome, failures)
                    self.stats.parked_toggles += len(docs)
                    return
            delay = outcome.retry_after
            if delay is None:
                delay = self._backoff(failures)
            self.stats.retries += 1
            log.warning(
                "%s: %s of %s (%d toggles, attempt %d) failed: %s; retrying in %.2fs",
                self.spec.name,
                msg_id,
                _where(tp, batch),
                len(docs),
                failures,
                outcome.detail,
                delay,
            )
            await asyncio.sleep(delay)

    async def _attempt(self, body: bytes, msg_id: str) -> Outcome:
        assert self._session is not None, "the delivery tasks run only while the sink is open"
        self.stats.requests += 1
        return await signed_post(
            self._session, self.url, body, msg_id, self._key, self.stats.request_seconds
        )

    async def _park(
        self,
        tp: TopicPartition,
        batch: list[tuple[int, bytes | None]],
        body: bytes,
        msg_id: str,
        outcome: Outcome,
        attempts: int,
    ) -> None:
        headers = {
            "materialization": self.spec.name,
            "url": self.shown_url,
            "webhook-id": msg_id,
            "status": str(outcome.status),
            "response": outcome.text,
            "attempts": str(attempts),
            "topic": tp.topic,
            "partition": str(tp.partition),
            "first-offset": str(batch[0][0]),
            "last-offset": str(batch[-1][0]),
        }
        log.warning(
            "%s: parking %s of %s after %d attempt(s): endpoint answered %s",
            self.spec.name,
            msg_id,
            _where(tp, batch),
            attempts,
            outcome.detail,
        )
        await park_until_taken(
            self._dead_letter, body, headers, self.spec.name, msg_id, self._backoff
        )
        self.stats.parked += 1

    def _backoff(self, failures: int) -> float:
        """Capped exponential backoff with full jitter."""
        return backoff(failures, self.backoff_base, self.backoff_cap)


def _where(tp: TopicPartition, batch: list[tuple[int, bytes | None]]) -> str:
    return f"{tp.topic}/{tp.partition} offsets {batch[0][0]}..{batch[-1][0]}"
