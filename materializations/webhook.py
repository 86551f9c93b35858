"""Webhook materialization: toggles POSTed as JSON arrays, signed the Standard Webhooks way.

Each source partition has a FIFO of pending toggles and one delivery task, so at most one request
per partition is in flight and order per partition (hence per segment and user) holds. Toggles
that arrive while a request is in flight go in the next one: the slower the endpoint, the larger
the batches. Retriable failures (network, timeout, 408, 429, 5xx) are retried without end; other
answers park the batch in a dead-letter topic after `max_attempts` (410 at once). `flush()` only
reports how far each partition is delivered or parked; it never waits for the endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime

import aiohttp
import orjson
from aiokafka import ConsumerRecord, TopicPartition
from yarl import URL

from materializations.base import Sink
from pipeline.catalog import BindingSpec, MaterializationSpec
from pipeline.errors import SegflowError
from pipeline.figures import SECONDS, SIZES, Figure, Histogram

log = logging.getLogger(__name__)

DeadLetter = Callable[[bytes, dict[str, str]], Awaitable[None]]
"""Parks a rejected batch: (request body, headers describing why and what)."""

SECRET_PREFIX = "whsec_"
DEFAULT_MAX_BATCH = 500
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_TIMEOUT = 20.0
TIMEOUT_BOUNDS = (15.0, 30.0)
RESPONSE_LIMIT = 4096
"""Bytes of a rejecting response kept for the dead-letter headers."""
RETRY_AFTER_MAX = 600.0
"""A Retry-After longer than this is shortened: the queue would otherwise stall for hours."""
RETRIABLE_STATUSES = frozenset({408, 429})


class WebhookError(SegflowError):
    """A webhook materialization is misconfigured."""


# --- Standard Webhooks signatures ----------------------------------------------------------------


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as error:
        raise ValueError(
            f"webhook secret must be base64, optionally prefixed '{SECRET_PREFIX}'"
        ) from error


def _signature(key: bytes, msg_id: str, timestamp: int | str, body: bytes) -> str:
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: 'v1,' + base64 HMAC-SHA256 of 'id.timestamp.body'."""
    return _signature(_key(secret), msg_id, timestamp, body)


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """Whether `headers` carry a valid signature of `body`, made within `tolerance_s` of now."""
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        return False
    try:
        timestamp = int(stamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = _signature(_key(secret), msg_id, stamp, body).encode()
    # Several signatures may be sent (key rotation); each comparison is constant-time.
    return any(
        hmac.compare_digest(candidate.encode(), expected) for candidate in signatures.split()
    )


# --- Stats ---------------------------------------------------------------------------------------


@dataclass
class WebhookStats:
    """Counters of one webhook sink."""

    requests: int = 0
    retries: int = 0
    batches: int = 0
    toggles: int = 0
    delivered: int = 0
    parked: int = 0
    parked_toggles: int = 0
    batch_sizes: Histogram = field(default_factory=lambda: Histogram(SIZES))
    """Toggles per batch (a batch is sent until delivered or parked)."""
    request_seconds: Histogram = field(default_factory=lambda: Histogram(SECONDS))
    """Duration of each request that got a response."""

    def batch(self, size: int) -> None:
        self.batches += 1
        self.toggles += size
        self.batch_sizes.observe(size)

    @property
    def mean_batch_size(self) -> float:
        return self.toggles / self.batches if self.batches else 0.0


# --- The sink ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    """One attempt's answer: status None for a network error or timeout (then `text` says which)."""

    status: int | None
    text: str
    retry_after: float | None = None

    @property
    def detail(self) -> str:
        if self.status is None:
            return self.text
        return f"HTTP {self.status} {self.text!r}" if self.text else f"HTTP {self.status}"

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retriable(self) -> bool:
        return self.status is None or self.status in RETRIABLE_STATUSES or self.status >= 500


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
            self._key = _key(secret) if secret else None
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

    async def _attempt(self, body: bytes, msg_id: str) -> _Outcome:
        assert self._session is not None, "the delivery tasks run only while the sink is open"
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
        }
        if self._key is not None:
            headers["webhook-signature"] = _signature(self._key, msg_id, timestamp, body)
        self.stats.requests += 1
        began = time.monotonic()
        try:
            async with self._session.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                self.stats.request_seconds.observe(time.monotonic() - began)
                if 200 <= response.status < 300:
                    return _Outcome(response.status, "")
                text = await _read_prefix(response, RESPONSE_LIMIT)
                retry_after = _retry_after(response.headers.get("Retry-After"))
                return _Outcome(response.status, text, retry_after)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            return _Outcome(None, repr(error))

    async def _park(
        self,
        tp: TopicPartition,
        batch: list[tuple[int, bytes | None]],
        body: bytes,
        msg_id: str,
        outcome: _Outcome,
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
        failures = 0
        while True:
            try:
                await self._dead_letter(body, headers)
                break
            except Exception as error:
                # Whatever the runtime's producer raises, the batch must not be dropped.
                failures += 1
                delay = self._backoff(failures)
                log.warning(
                    "%s: cannot park %s (%r); retrying in %.2fs",
                    self.spec.name,
                    msg_id,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
        self.stats.parked += 1

    def _backoff(self, failures: int) -> float:
        """Capped exponential backoff with full jitter."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** min(failures - 1, 32))
        return random.uniform(0, ceiling)


def _where(tp: TopicPartition, batch: list[tuple[int, bytes | None]]) -> str:
    return f"{tp.topic}/{tp.partition} offsets {batch[0][0]}..{batch[-1][0]}"


async def _read_prefix(response: aiohttp.ClientResponse, limit: int) -> str:
    """The start of a response body, for diagnostics; a body that fails to arrive is ''."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size < limit:
            chunk = await response.content.read(limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (aiohttp.ClientError, TimeoutError):
        pass
    return b"".join(chunks).decode("utf-8", errors="replace")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or HTTP-date); None when unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)
