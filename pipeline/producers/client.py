"""A Python client for product events (SPEC 8.6), like Grouparoo's JS client's `track()`.

    from pipeline.producers.client import Client

    with Client("http://127.0.0.1:8080", api_key) as client:
        client.track("signin", user_id="u-100", anonymous_id="abc123", data={"method": "email"})

`track()` only queues: a background thread POSTs batches to `/ingest/{collection}` when
`batch_size` events are waiting or the oldest has waited `interval` seconds, one request at a
time, in tracking order. Each event gets its id (uuid4) and, unless given, its `occurredAt` (the
client's clock) when tracked, and is encoded then, so a retry sends the very same document: 503s,
429s, gateway errors and network failures are retried with exponential backoff, and the API drops
the redeliveries by id.

What fails for good raises `ClientError` from the next `track()`, `flush()` or `close()`: a 400
names each rejected event with the API's path and message (the other events of that request are
sent again, since the API wrote nothing of it); 401/403/404/413 carry the API's message (a
request over the API's byte limit is split in halves first). Nothing is validated locally. Events
still queued when the process exits without `close()` are lost.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import HTTPException
from types import TracebackType
from typing import Any

import orjson

from pipeline.errors import SegflowError

log = logging.getLogger(__name__)

RETRIED = frozenset({429, 502, 503, 504})
"""Statuses retried with the same events: the API's 503 (broker down) and what gateways say."""
MAX_BACKOFF = 5.0


@dataclass(frozen=True)
class Rejected:
    """One problem the API found in one event."""

    event_id: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"event {self.event_id}: {self.path or '/'}: {self.message}"


class ClientError(SegflowError):
    """Events the API refused or that could not be delivered.

    `status` is the API's answer (None after network failures), `rejected` the per-event problems
    of a 400, `event_ids` every event lost with this error, `retriable` whether sending the same
    events again later may succeed (503s and network failures that outlasted the retries).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        rejected: tuple[Rejected, ...] = (),
        event_ids: tuple[str, ...] = (),
        retriable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.rejected = rejected
        self.event_ids = event_ids
        self.retriable = retriable


@dataclass(frozen=True)
class _Event:
    id: str
    body: bytes


def _occurred_at(value: datetime | str | None) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        value = datetime.now(UTC)
    if value.tzinfo is None:
        raise ValueError(
            "occurred_at has no time zone: RFC 3339 needs one (use a timezone-aware datetime)"
        )
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Client:
    """Tracks product events into the ingestion API in background batches."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        collection: str = "profile/events",
        batch_size: int = 100,
        interval: float = 1.0,
        retries: int = 10,
        timeout: float = 10.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.endpoint = f"{url.rstrip('/')}/ingest/{collection}"
        self.batch_size = batch_size
        self.interval = interval
        self.retries = retries
        self.timeout = timeout
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "User-Agent": "segflow-client",
        }
        self._cond = threading.Condition()
        self._queue: deque[tuple[float, _Event]] = deque()
        self._tracked = 0  # events queued so far
        self._done = 0  # of those, delivered or failed for good (in order)
        self._flush_to = 0  # send at once until `_done` reaches this
        self._errors: list[ClientError] = []
        self._closing = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="segflow-client", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"Client({self.endpoint!r}, api_key='***')"

    # --- the caller's side ---------------------------------------------------------------------

    def track(
        self,
        type: str,
        *,
        user_id: str | int | None = None,
        anonymous_id: str | None = None,
        data: Mapping[str, Any] | None = None,
        occurred_at: datetime | str | None = None,
    ) -> str:
        """Queue one event and return its id. Raises a `ClientError` of earlier events first (the
        event of that call is then not queued)."""
        doc: dict[str, Any] = {"id": str(uuid.uuid4()), "type": type}
        if user_id is not None:
            doc["userId"] = user_id
        if anonymous_id is not None:
            doc["anonymousId"] = anonymous_id
        doc["occurredAt"] = _occurred_at(occurred_at)
        if data is not None:
            doc["data"] = data
        body = orjson.dumps(doc)  # now: later changes to `data` do not change the event
        with self._cond:
            if self._closing:
                raise ClientError("the client is closed")
            self._raise_errors()
            self._queue.append((time.monotonic(), _Event(doc["id"], body)))
            self._tracked += 1
            self._cond.notify_all()
        return str(doc["id"])

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event tracked so far is acknowledged by the API; raise the
        `ClientError` of any that failed. `timeout` (seconds) raises TimeoutError."""
        with self._cond:
            target = self._tracked
            self._flush_to = max(self._flush_to, target)
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._done >= target, timeout):
                raise TimeoutError(f"{target - self._done} event(s) not acknowledged in time")
            self._raise_errors()

    def close(self) -> None:
        """Flush, then stop the background thread. Idempotent."""
        with self._cond:
            if self._closed:
                return
        try:
            self.flush()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join()
            self._closed = True

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:  # do not hide the exception leaving the block
            self.close()
        except ClientError as error:
            log.warning("closing the client after %r: %s", exc, error)

    def _raise_errors(self) -> None:
        if not self._errors:
            return
        errors, self._errors = self._errors, []
        if len(errors) == 1:
            raise errors[0]
        raise ClientError(
            "\n".join(str(e) for e in errors),
            status=errors[0].status,
            rejected=tuple(r for e in errors for r in e.rejected),
            event_ids=tuple(i for e in errors for i in e.event_ids),
            retriable=all(e.retriable for e in errors),
        )

    # --- the background thread -----------------------------------------------------------------

    def _next_batch(self) -> list[_Event] | None:
        """Wait for a full batch, an old enough event, a flush or close; None once closed."""
        with self._cond:
            while True:
                if self._queue:
                    oldest = self._queue[0][0]
                    due = oldest + self.interval - time.monotonic()
                    if (
                        len(self._queue) >= self.batch_size
                        or self._done < self._flush_to
                        or self._closing
                        or due <= 0
                    ):
                        count = min(self.batch_size, len(self._queue))
                        return [self._queue.popleft()[1] for _ in range(count)]
                    self._cond.wait(due)
                elif self._closing:
                    return None
                else:
                    self._cond.wait()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                errors = self._deliver(batch)
            except Exception as exc:  # never let the thread die with events waiting on it
                log.exception("sending %d event(s) failed", len(batch))
                errors = [
                    ClientError(
                        f"sending {len(batch)} event(s) failed: {exc!r}",
                        event_ids=tuple(e.id for e in batch),
                    )
                ]
            with self._cond:
                self._errors.extend(errors)
                self._done += len(batch)
                self._cond.notify_all()

    def _deliver(self, batch: list[_Event]) -> list[ClientError]:
        """Send a batch until it is accepted or fails for good; the errors of what failed."""
        status, answer = self._post(batch)
        if status == 200:
            return []
        ids = tuple(e.id for e in batch)
        if status is None:
            return [
                ClientError(
                    f"{len(batch)} event(s) not delivered after {self.retries} retries: {answer}",
                    event_ids=ids,
                    retriable=True,
                )
            ]
        if status == 400 and isinstance(answer, dict) and isinstance(answer.get("errors"), list):
            return self._rejected(batch, answer["errors"])
        if status == 413 and len(batch) > 1:
            half = len(batch) // 2
            return self._deliver(batch[:half]) + self._deliver(batch[half:])
        message = answer.get("error") if isinstance(answer, dict) else None
        return [
            ClientError(
                f"the API answered {status}: {message or answer}",
                status=status,
                event_ids=ids,
                retriable=status in RETRIED,
            )
        ]

    def _rejected(self, batch: list[_Event], problems: list[Any]) -> list[ClientError]:
        rejected: list[Rejected] = []
        for problem in problems:
            index = problem.get("index") if isinstance(problem, dict) else None
            if isinstance(index, int) and 0 <= index < len(batch):
                path, message = problem.get("path", ""), problem.get("message", "")
                rejected.append(Rejected(batch[index].id, str(path), str(message)))
        bad = {r.event_id for r in rejected}
        if not bad:  # an answer we cannot attribute: the whole batch failed
            bad = {e.id for e in batch}
        errors = [
            ClientError(
                "the API rejected "
                + (f"{len(bad)} event(s):\n  " if len(rejected) > 1 else "")
                + "\n  ".join(str(r) for r in rejected),
                status=400,
                rejected=tuple(rejected),
                event_ids=tuple(e.id for e in batch if e.id in bad),
            )
        ]
        # The API wrote nothing of the request: the valid events go again on their own.
        rest = [e for e in batch if e.id not in bad]
        return (self._deliver(rest) if rest else []) + errors

    def _post(self, batch: list[_Event]) -> tuple[int | None, Any]:
        """POST one batch, retrying what may pass later: (status, parsed answer), or
        (None, the last failure) once the retries are spent."""
        body = b"[" + b",".join(e.body for e in batch) + b"]"
        attempt = 0
        while True:
            request = urllib.request.Request(
                self.endpoint, data=body, headers=self._headers, method="POST"
            )
            status: int | None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    status, raw = response.status, response.read()
            except urllib.error.HTTPError as exc:
                status, raw = exc.code, exc.read()
                exc.close()
            except (OSError, HTTPException) as exc:  # refused, reset, timed out, cut short
                status, raw = None, repr(exc).encode()
            if status is None:
                failure: Any = raw.decode(errors="replace")
            elif status in RETRIED:
                failure = _parse(raw)
            else:
                return status, _parse(raw)
            if attempt >= self.retries:
                return status, failure
            # A close() waits for this too: the events are still owed a delivery.
            delay = min(MAX_BACKOFF, 0.1 * 2**attempt)
            log.info("retrying %d event(s) in %.1f s: %s", len(batch), delay, status or failure)
            attempt += 1
            time.sleep(delay)


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")
