"""Sending one prepared request of a webhook destination until it is answered for good, and
the destination's counters and figures.

What an answer means is `materializations.webhook.delivery`'s (retriable statuses,
Retry-After), and the signature `materializations.webhook.signing`'s — the same as for the
webhook materialization. On top: in `enrich` mode a 404 is "I do not have it" ('skipped').
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from materializations.destinations.store import Outbox
from materializations.webhook.delivery import Outcome, backoff, park_until_taken, signed_post
from materializations.webhook.signing import key
from materializations.webhook.sink import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_TIMEOUT,
    TIMEOUT_BOUNDS,
    DeadLetter,
)
from pipeline.errors import SegflowError
from pipeline.figures import SECONDS, SIZES, Figure, Histogram

log = logging.getLogger("materializations.destinations")


class DestinationError(SegflowError):
    """A destination is misconfigured."""


@dataclass
class DestinationStats:
    """Counters of one webhook destination, for its figures and the tests."""

    requests: int = 0
    retries: int = 0
    exports: int = 0
    """Exports delivered (acknowledged)."""
    events: int = 0
    """Enriched events delivered."""
    skipped: int = 0
    """Exports and events of requests answered 404 in enrich mode."""
    parked: int = 0
    parked_elements: int = 0
    batch_sizes: Histogram = field(default_factory=lambda: Histogram(SIZES))
    """Exports and events per request (each request once, however often it is sent)."""
    request_seconds: Histogram = field(default_factory=lambda: Histogram(SECONDS))

    def figures(self, backlog: int) -> Sequence[Figure]:
        """Named `destination_*`: the metrics label them by materialization,
        `destination.<name>`."""
        return (
            Figure(
                "destination_requests_total", "counter", "Requests, retries too.", self.requests
            ),
            Figure(
                "destination_retries_total", "counter", "Failed requests retried.", self.retries
            ),
            Figure(
                "destination_exports_delivered_total",
                "counter",
                "Exports acknowledged.",
                self.exports,
            ),
            Figure(
                "destination_events_delivered_total",
                "counter",
                "Enriched events acknowledged.",
                self.events,
            ),
            Figure(
                "destination_skipped_total",
                "counter",
                "Exports and events of requests answered 404 in enrich mode (not retried).",
                self.skipped,
            ),
            Figure("destination_batches_parked_total", "counter", "Requests parked.", self.parked),
            Figure(
                "destination_parked_total",
                "counter",
                "Exports and events in parked requests.",
                self.parked_elements,
            ),
            Figure(
                "destination_batch_elements",
                "histogram",
                "Exports and events per request.",
                self.batch_sizes,
            ),
            Figure(
                "destination_request_seconds",
                "histogram",
                "Time to a response.",
                self.request_seconds,
            ),
            Figure("destination_backlog", "gauge", "Exports and events not yet settled.", backlog),
        )


class Delivery:
    """Sends a destination's requests: signing, retries with backoff, parking."""

    def __init__(
        self,
        name: str,
        destination: str,
        config: Mapping[str, str],
        *,
        enrich: bool,
        dead_letter: DeadLetter,
        backoff_base: float,
        backoff_cap: float,
    ) -> None:
        self.name = name
        """The materialization's name, for logs and dead-letter headers."""
        self.destination = destination
        self.url = config["url"]
        self.shown_url = str(URL(self.url).with_user(None))
        secret = config.get("secret", "")
        try:
            self._key = key(secret) if secret else None
        except ValueError as error:
            raise DestinationError(f"destination '{destination}': {error}") from None
        self.max_attempts = int(config.get("max_attempts", DEFAULT_MAX_ATTEMPTS))
        low, high = TIMEOUT_BOUNDS
        self.timeout = min(max(float(config.get("timeout", DEFAULT_TIMEOUT)), low), high)
        self.enrich = enrich
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.stats = DestinationStats()
        self._dead_letter = dead_letter
        self.session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        if self.session is None:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            self.session = aiohttp.ClientSession(timeout=timeout)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def send(self, outbox: Outbox) -> str:
        """Send until answered for good: 'ok', 'skipped' (404 in enrich mode) or 'parked'."""
        failures = rejections = 0
        while True:
            outcome = await self._attempt(outbox.body, outbox.message_id)
            if outcome.ok:
                return "ok"
            if self.enrich and outcome.status == 404:
                log.debug(
                    "%s: %s skipped: the endpoint does not have the record",
                    self.name,
                    outbox.message_id,
                )
                return "skipped"
            failures += 1
            if not outcome.retriable:
                rejections += 1
                if outcome.status == 410 or rejections >= self.max_attempts:
                    await self._park(outbox, outcome, failures)
                    return "parked"
            delay = outcome.retry_after
            if delay is None:
                delay = self.backoff(failures)
            self.stats.retries += 1
            log.warning(
                "%s: %s of partition %d (%d exports, %d events, attempt %d) failed: %s;"
                " retrying in %.2fs",
                self.name,
                outbox.message_id,
                outbox.partition,
                outbox.exports,
                outbox.events,
                failures,
                outcome.detail,
                delay,
            )
            await asyncio.sleep(delay)

    async def _attempt(self, body: bytes, msg_id: str) -> Outcome:
        assert self.session is not None, "requests are sent only while the sink is open"
        self.stats.requests += 1
        return await signed_post(
            self.session, self.url, body, msg_id, self._key, self.stats.request_seconds
        )

    async def _park(self, outbox: Outbox, outcome: Outcome, attempts: int) -> None:
        headers = {
            "materialization": self.name,
            "destination": self.destination,
            "url": self.shown_url,
            "webhook-id": outbox.message_id,
            "status": str(outcome.status),
            "response": outcome.text,
            "attempts": str(attempts),
            "partition": str(outbox.partition),
            "exports": str(outbox.exports),
            "events": str(outbox.events),
        }
        log.warning(
            "%s: parking %s of partition %d after %d attempt(s): endpoint answered %s",
            self.name,
            outbox.message_id,
            outbox.partition,
            attempts,
            outcome.detail,
        )
        await park_until_taken(
            self._dead_letter, outbox.body, headers, self.name, outbox.message_id, self.backoff
        )
        self.stats.parked += 1
        self.stats.parked_elements += outbox.exports + outbox.events

    def backoff(self, failures: int) -> float:
        """Capped exponential backoff with full jitter."""
        return backoff(failures, self.backoff_base, self.backoff_cap)
