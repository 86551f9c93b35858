"""Webhook materialization: toggles POSTed as JSON arrays, signed the Standard Webhooks way.

Each source partition has a FIFO of pending toggles and one delivery task, so at most one request
per partition is in flight and order per partition (hence per segment and user) holds. Toggles
that arrive while a request is in flight go in the next one: the slower the endpoint, the larger
the batches. Retriable failures (network, timeout, 408, 429, 5xx) are retried without end; other
answers park the batch in a dead-letter topic after `max_attempts` (410 at once). `flush()` only
reports how far each partition is delivered or parked; it never waits for the endpoint.

Modules:
- `signing`: Standard Webhooks signatures — the `whsec_` key, `sign`, `verify`.
- `delivery`: one request and its outcome — retriable statuses, Retry-After, the response prefix.
- `stats`: the sink's counters.
- `sink`: `WebhookSink` — lanes per partition, batching by back-pressure, retries with backoff,
  parking, drain, figures.
"""

from materializations.webhook.delivery import RETRIABLE_STATUSES, Outcome
from materializations.webhook.signing import SECRET_PREFIX, sign, verify
from materializations.webhook.sink import DeadLetter, WebhookError, WebhookSink
from materializations.webhook.stats import WebhookStats

__all__ = [
    "RETRIABLE_STATUSES",
    "SECRET_PREFIX",
    "DeadLetter",
    "Outcome",
    "WebhookError",
    "WebhookSink",
    "WebhookStats",
    "sign",
    "verify",
]
