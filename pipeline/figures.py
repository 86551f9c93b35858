"""What loops and sinks record for health and metrics: plain counters, histograms and per-loop
figures, updated per batch, write or request (never per event) and read when scraped.

No I/O; used by the runtime's loops, the sinks in `materializations/`, and
`pipeline.runtime.metrics`, which serves them.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

SIZES = tuple(float(1 << i) for i in range(17))
"""Bucket bounds for counts of rows or toggles: 1, 2, 4, … 65,536."""
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Bucket bounds for durations, in seconds."""


class Histogram:
    """Observations counted into buckets (upper bounds, inclusive), with their sum."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, observations at or below it) per bucket, `+Inf` last."""
        out, seen = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            seen += n
            out.append(("+Inf" if bound == math.inf else number(bound), seen))
        return out


@dataclass
class LoopFigures:
    """What one consumer loop reports: lag per partition and when it last went round."""

    name: str
    consumer: AIOKafkaConsumer | None = None
    lag: dict[TopicPartition, int] = field(default_factory=dict)
    held: frozenset[TopicPartition] = frozenset()
    """The partitions the loop held at its last round (set by the loop's own thread)."""
    last_round: float = field(default_factory=time.monotonic)

    def fetched(self, batch: Mapping[TopicPartition, list[ConsumerRecord]]) -> None:
        """Note a fetch round (called once per `getmany`, empty or not): a partition's lag is
        its high watermark minus the offset after the last record fetched from it."""
        self.last_round = time.monotonic()
        if self.consumer is None:
            return
        self.held = frozenset(self.consumer.assignment())
        for tp, records in batch.items():
            high = self.consumer.highwater(tp)
            if high is not None and records:
                self.lag[tp] = max(0, high - records[-1].offset - 1)

    def current_lag(self) -> dict[TopicPartition, int]:
        """Lag of the partitions the loop holds (revoked ones are left out)."""
        held = self.held
        return {tp: n for tp, n in list(self.lag.items()) if tp in held}


@dataclass
class Stats:
    """The derive loop's counters."""

    events_in: int = 0
    dead_letters: int = 0
    derived_events: int = 0
    redeliveries: int = 0
    dedup_expired: int = 0
    identity_conflicts: int = 0
    records_merged: int = 0
    group_changes: int = 0
    group_evaluations: int = 0
    timers_fired: int = 0
    import_rows_applied: int = 0
    documents_out: int = 0
    documents_by_collection: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    first_event_at: float | None = None
    batch_seconds: Histogram = field(default_factory=lambda: Histogram(SECONDS))
    """From a batch's fetch to its commit (documents, changelog and local state written)."""


@dataclass(frozen=True)
class Figure:
    """One figure a sink reports: `kind` is counter, gauge or histogram."""

    name: str
    kind: str
    help: str
    value: int | float | Histogram


def number(value: float) -> str:
    """A figure as Prometheus writes it: integers without a fraction."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
