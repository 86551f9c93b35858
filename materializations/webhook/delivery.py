"""One webhook request and its outcome: which answers are retried, Retry-After, the kept prefix
of a rejecting response.

Apart from the sink so what an answer *means* (retry, park, done) reads in one place, without
the lanes and the backoff around it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

import aiohttp

from materializations.webhook.signing import signature
from pipeline.figures import Histogram

log = logging.getLogger("materializations.webhook")

RESPONSE_LIMIT = 4096
"""Bytes of a rejecting response kept for the dead-letter headers."""
RETRY_AFTER_MAX = 600.0
"""A Retry-After longer than this is shortened: the queue would otherwise stall for hours."""
RETRIABLE_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class Outcome:
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


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    seconds: Histogram,
) -> Outcome:
    """POST `body` once; the time to a response goes into `seconds`. Never raises for the
    network: a failure to get an answer is an outcome too (status None)."""
    began = time.monotonic()
    try:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
            seconds.observe(time.monotonic() - began)
            if 200 <= response.status < 300:
                return Outcome(response.status, "")
            text = await read_prefix(response, RESPONSE_LIMIT)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return Outcome(response.status, text, retry_after)
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        return Outcome(None, repr(error))


async def signed_post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    msg_id: str,
    key: bytes | None,
    seconds: Histogram,
) -> Outcome:
    """`post` with the Standard Webhooks headers: `webhook-id` (the same across retries),
    `webhook-timestamp` (this attempt's) and, with a `key`, `webhook-signature`."""
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
    }
    if key is not None:
        headers["webhook-signature"] = signature(key, msg_id, timestamp, body)
    return await post(session, url, body, headers, seconds)


def backoff(failures: int, base: float, cap: float) -> float:
    """Capped exponential backoff with full jitter: a delay in [0, min(cap, base·2^(n-1))]."""
    return random.uniform(0, min(cap, base * 2 ** min(failures - 1, 32)))


async def park_until_taken(
    dead_letter: Callable[[bytes, dict[str, str]], Awaitable[None]],
    body: bytes,
    headers: dict[str, str],
    who: str,
    msg_id: str,
    delay: Callable[[int], float],
) -> None:
    """Hand a rejected request to the dead-letter topic, retrying after `delay(failures)`
    seconds whatever the producer raises: a batch must not be dropped."""
    failures = 0
    while True:
        try:
            await dead_letter(body, headers)
            return
        except Exception as error:
            failures += 1
            wait = delay(failures)
            log.warning("%s: cannot park %s (%r); retrying in %.2fs", who, msg_id, error, wait)
            await asyncio.sleep(wait)


async def read_prefix(response: aiohttp.ClientResponse, limit: int) -> str:
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


def parse_retry_after(value: str | None) -> float | None:
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
