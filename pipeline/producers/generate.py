"""`segflow generate`: realistic segmentation events, like the demo's generator, at a steady rate.

`EventGenerator` is pure: the same seed gives the same events byte for byte, because seeded
runs take their timestamps from a simulated clock (a fixed start advanced by 1/rate per event)
rather than from the wall. The command paces sends on an absolute schedule (event i is due at
start + i/rate), so a late wake-up is caught up rather than lost.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import math
import os
import random
import signal
import sys
import time
import uuid
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta, timezone, tzinfo
from typing import Any, Protocol

import orjson
from aiokafka.errors import KafkaError

from pipeline.catalog import load_catalog
from pipeline.documents.validation import Validator
from pipeline.errors import SegflowError
from pipeline.producers.clock import Clock
from pipeline.producers.ingest import source_collection
from pipeline.producers.product_events import ProductEventGenerator, ProductMix
from pipeline.producers.progress import Progress
from pipeline.runtime.produce import CollectionWriter, make_producer
from pipeline.runtime.settings import Settings
from pipeline.runtime.topics import Names, collection_topics, ensure_topics

Event = dict[str, Any]

OFFSETS: tuple[tzinfo, ...] = tuple(
    timezone(timedelta(minutes=m)) for m in (-7 * 60, -4 * 60, 5 * 60 + 30, 9 * 60)
)
OFFSET_SHARE = 0.3
"""With --timezones, the share of timestamps written with a non-UTC offset."""
RESERVOIR = 1000
"""Repeats re-send one of this many most recent new events."""


@dataclass(frozen=True)
class Mix:
    """What the generated traffic looks like."""

    segments: int = 100
    users: int = 10_000
    vendors: int = 8
    skew: float = 1.1
    """Zipf exponent of segment popularity: seg-0 is the most popular (0: uniform)."""
    remove_ratio: float = 0.3
    repeat_ratio: float = 0.0
    """Share of events that re-send a recent event unchanged (a redelivery, same event id)."""
    value_ratio: float = 0.5
    """Share of adds that carry a value."""
    timezones: bool = False


def vendor_of(segment: int, vendors: int) -> int:
    """The vendor owning `seg-N`: a stable function of the segment, as in the demo."""
    return zlib.crc32(f"seg-{segment}".encode()) % vendors + 1


class EventGenerator:
    """An endless, reproducible stream of segmentation events.

    With a seed, timestamps come from a simulated clock (`pipeline.producers.clock`) and runs
    repeat exactly; without one, from the wall clock.
    """

    def __init__(
        self,
        mix: Mix | None = None,
        *,
        seed: int | None = None,
        rate: float = 100.0,
        simulated: bool | None = None,
    ) -> None:
        self.mix = mix = mix or Mix()
        if mix.segments < 1 or mix.users < 1 or mix.vendors < 1:
            raise ValueError("segments, users and vendors must be at least 1")
        self.rng = random.Random(seed if seed is not None else os.urandom(16))
        self.clock = Clock(
            simulated=seed is not None if simulated is None else simulated, rate=rate
        )
        weights = [1.0 / (k + 1) ** mix.skew for k in range(mix.segments)]
        self.cumulative = list(itertools.accumulate(weights))
        self.segments = [
            {"vendor": vendor_of(k, mix.vendors), "name": f"seg-{k}"} for k in range(mix.segments)
        ]
        self.recent: deque[Event] = deque(maxlen=RESERVOIR)
        self.emitted = 0

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        rng, mix = self.rng, self.mix
        index = self.emitted
        self.emitted += 1
        if self.recent and mix.repeat_ratio and rng.random() < mix.repeat_ratio:
            again = self.recent[rng.randrange(len(self.recent))]
            return {**again, "segment": dict(again["segment"])}
        event: Event = {
            "event": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "timestamp": self._timestamp(index),
            "user": f"usr-{rng.randrange(mix.users):06d}",
            "segment": dict(self.segments[self._segment()]),
        }
        if rng.random() < mix.remove_ratio:
            event["remove"] = True
        elif rng.random() < mix.value_ratio:
            event["value"] = f"value-{rng.randrange(10)}"
        self.recent.append(event)
        return {**event, "segment": dict(event["segment"])}

    def take(self, n: int) -> list[Event]:
        return list(itertools.islice(self, n))

    def sample(self) -> Event:
        """One event of this mix (to check a collection takes them)."""
        return EventGenerator(self.mix, seed=0).take(1)[0]

    def _segment(self) -> int:
        """A Zipf-distributed segment index: O(log n) over precomputed cumulative weights."""
        point = self.rng.random() * self.cumulative[-1]
        return min(bisect.bisect_right(self.cumulative, point), len(self.cumulative) - 1)

    def _timestamp(self, index: int) -> str:
        when = self.clock.at(index)
        if self.mix.timezones and self.rng.random() < OFFSET_SHARE:
            return when.astimezone(self.rng.choice(OFFSETS)).isoformat(timespec="seconds")
        return when.isoformat(timespec="seconds").replace("+00:00", "Z")


# --- Sending on a schedule ---------------------------------------------------------------------

MAX_BATCH = 1000
"""Most events handed to the sink at once (then the event loop gets a turn)."""
MAX_IN_FLIGHT = 20_000
"""Most sent but unacknowledged events before sending waits for acks."""


class Sink(Protocol):
    async def write(self, events: list[Event]) -> None: ...

    async def flush(self) -> None: ...


class StdoutSink:
    """JSON lines on stdout."""

    def __init__(self) -> None:
        self.out = sys.stdout.buffer

    async def write(self, events: list[Event]) -> None:
        self.out.write(b"".join(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in events))
        self.out.flush()

    async def flush(self) -> None:
        self.out.flush()


class BrokerSink:
    """A collection's topic, with a bounded number of unacknowledged sends."""

    def __init__(self, writer: CollectionWriter) -> None:
        self.writer = writer
        self.pending: deque[asyncio.Future[Any]] = deque()

    async def write(self, events: list[Event]) -> None:
        for event in events:
            self.pending.append(await self.writer.send(event))
        while self.pending and self.pending[0].done():
            self.pending.popleft().result()  # raises what the broker answered
        while len(self.pending) > MAX_IN_FLIGHT:
            await self.pending.popleft()

    async def flush(self) -> None:
        await asyncio.gather(*self.pending)
        self.pending.clear()


async def pace(
    events: Iterator[Event],
    sink: Sink,
    *,
    rate: float,
    count: int | None,
    duration: float | None,
    stopping: asyncio.Event,
    progress: Progress,
) -> int:
    """Write events to `sink` at `rate` per second (0: as fast as possible) until `count`
    events, `duration` seconds or `stopping`; return how many were written."""
    loop = asyncio.get_running_loop()
    limit = math.inf if count is None else count
    if duration is not None and rate > 0:  # what the schedule holds, even if we run late
        limit = min(limit, math.ceil(duration * rate))
    start = loop.time()
    progress.restart()
    end = math.inf if duration is None else start + duration
    sent = 0
    while sent < limit and not stopping.is_set():
        now = loop.time()
        if rate > 0:
            due = min(math.floor((now - start) * rate) + 1, limit) - sent
            if due <= 0:
                await asyncio.sleep(start + sent / rate - now)
                continue
        elif now >= end:
            break
        else:
            due = limit - sent
        batch = int(min(due, MAX_BATCH))
        await sink.write([next(events) for _ in range(batch)])
        sent += batch
        progress.update(sent)
        await asyncio.sleep(0)  # the producer sends from this loop too
    await sink.flush()
    return sent


# --- The command -------------------------------------------------------------------------------


async def _generate(
    args: argparse.Namespace,
    settings: Settings,
    events: EventGenerator | ProductEventGenerator,
    progress: Progress,
) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    progress.total = args.count
    if args.count is None and args.duration is not None and args.rate > 0:
        progress.total = math.ceil(args.duration * args.rate)

    async def run(sink: Sink) -> int:
        return await pace(
            events,
            sink,
            rate=args.rate,
            count=args.count,
            duration=args.duration,
            stopping=stopping,
            progress=progress,
        )

    try:
        if args.stdout:
            return await run(StdoutSink())
        catalog = load_catalog(settings.catalog)
        spec = source_collection(catalog, args.collection)
        if problems := Validator(spec.schema).errors(events.sample()):
            kind = "product" if isinstance(events, ProductEventGenerator) else "segmentation"
            raise SegflowError(
                f"collection {spec.name!r} does not take {kind} events: {problems[0]}"
            )
        if not settings.broker:
            raise SegflowError(
                "SEGFLOW_BROKER is not set: which broker should I write to? (or use --stdout)"
            )
        names = Names(settings.topic_prefix)
        await ensure_topics(settings.broker, collection_topics(catalog, names, spec.name))
        producer = make_producer(settings.broker, settings.linger_ms)
        await producer.start()
        try:
            writer = CollectionWriter(catalog, spec.name, names, producer, "segflow-generate")
            return await run(BrokerSink(writer))
        finally:
            await producer.stop()
    finally:
        progress.clear()


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    if args.collection is None:
        args.collection = "profile/events" if args.profiles else "segment/events"
    if args.profiles:
        products = ProductMix(
            users=args.users,
            devices_ratio=args.devices_ratio,
            anonymous_ratio=args.anonymous_ratio,
            repeat_ratio=args.repeat_ratio,
        )
        return _send(
            args, settings, ProductEventGenerator(products, seed=args.seed, rate=args.rate)
        )
    mix = Mix(
        segments=args.segments,
        users=args.users,
        vendors=args.vendors,
        skew=args.skew,
        remove_ratio=args.remove_ratio,
        repeat_ratio=args.repeat_ratio,
        value_ratio=args.value_ratio,
        timezones=args.timezones,
    )
    return _send(args, settings, EventGenerator(mix, seed=args.seed, rate=args.rate))


def _send(
    args: argparse.Namespace, settings: Settings, events: EventGenerator | ProductEventGenerator
) -> int:
    progress = Progress(sys.stderr, unit="events")
    try:
        sent = asyncio.run(_generate(args, settings, events, progress))
    except KafkaError as exc:
        raise SegflowError(f"broker {settings.broker}: {exc}") from exc
    except BrokenPipeError:  # `segflow generate --stdout | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    elapsed = time.monotonic() - progress.started
    where = "stdout" if args.stdout else args.collection
    print(
        f"sent {sent} event(s) to {where} in {elapsed:.1f}s ({progress.rate(sent):,.0f}/s)",
        file=sys.stderr,
    )
    return 0


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, not {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, not {text!r}")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a ratio between 0 and 1, not {text!r}")
    return value


def add_generate_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `generate` to the `segflow` command."""
    p = subparsers.add_parser(
        "generate", help="produce realistic segmentation (or product) events (Ctrl-C stops)"
    )
    p.add_argument(
        "--profiles",
        action="store_true",
        help="product events (page views, sign-ins linking devices, purchases) for profiles",
    )
    p.add_argument("--rate", type=_non_negative, default=100.0, help="events/s (0: at once)")
    until = p.add_mutually_exclusive_group()
    until.add_argument("--count", type=_count, help="stop after this many events")
    until.add_argument("--duration", type=_non_negative, help="stop after this many seconds")
    p.add_argument("--seed", type=int, help="reproducible events, timestamps included")
    p.add_argument("--segments", type=_count, default=100, help="segment cardinality")
    p.add_argument("--skew", type=_non_negative, default=1.1, help="Zipf exponent of segments")
    p.add_argument("--users", type=_count, default=10_000, help="user cardinality")
    p.add_argument("--vendors", type=_count, default=8, help="vendors owning the segments")
    p.add_argument("--remove-ratio", type=_ratio, default=0.3, help="share of removes")
    p.add_argument("--repeat-ratio", type=_ratio, default=0.0, help="share of redeliveries")
    p.add_argument("--value-ratio", type=_ratio, default=0.5, help="share of adds with a value")
    p.add_argument("--timezones", action="store_true", help="some timestamps with offsets")
    p.add_argument("--stdout", action="store_true", help="JSON lines to stdout, not the broker")
    p.add_argument(
        "--devices-ratio", type=_ratio, default=0.2, help="--profiles: people on 2-3 devices"
    )
    p.add_argument(
        "--anonymous-ratio", type=_ratio, default=0.1, help="--profiles: visitors never signing in"
    )
    p.add_argument("--collection", help="where to send the events (segment/events; profile/events)")
    p.set_defaults(func=cmd_generate)
