"""The counters of one webhook sink, which its `figures()` and the tests read.

A plain record apart from the sink: what is counted reads at a glance, and the delivery loop only
increments it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.figures import SECONDS, SIZES, Histogram


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
