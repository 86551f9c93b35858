"""WebhookDestination: a destination (SPEC 9) kept in sync by POSTing exports and enriched
events, signed the Standard Webhooks way, with what it acknowledged kept in Postgres.

**Body.** Each request is one JSON array, in lane order, of
- exports `{id, record, mode, newProperties, oldProperties, newGroups, oldGroups, toDelete}`
  (`exports`), and
- enriched events `{id, event, record, properties, groups}` (`exports.enriched`, with an id).
A receiver tells them apart by their keys: an element with `event` is an enriched event, one
with `toDelete` an export; none has both. Ids are stable: an export's is a function of the
destination, the record and both sides, an event's of the destination and the product event's
id, so a redelivery carries the same ids (and the same `webhook-id`, a hash of the body).
Events share the requests of exports rather than follow in requests of their own: an event
must come after its record's export, and in one array that order is the array's, one answer
acknowledges both, and one outbox row and one settling transaction cover both — separate
requests would double the requests and the transactions for nothing a receiver could use.

**Lanes.** One per partition number: partition p of the records topic and of the forwarded
topic (both keyed by record id; the worker's consumer for a destination is co-partitioned).
Pending work is newest-only per record (`pending`); one request is in flight per lane, and it
takes what is pending when the previous one is answered, up to `max_batch` elements (so the
slower the endpoint, the larger the batches); in `enrich` mode one record per request.
The two topics are read in no fixed order relative to each other, so an event goes only once
the destination holds its record as the record was right after the event (`batches.compose`
pulls the record's export forward, or holds the event for the record's next document, at most
`hold` seconds). The records stage forwards an event with the record's document of the same
batch, written just before, so this holds at once but for a document fetched late.

**Order per request** (`store` keeps the tables):
1. take the lane's front items; load the baselines of their records (one query); compose the
   exports and events (`batches.compose`) and the checkpoint after them;
2. write the outbox row — body, `webhook-id`, the offsets it covers, what the answer changes —
   in one transaction (an empty body writes nothing and sends nothing);
3. send it until answered: network errors, timeouts, 408, 429 and 5xx are retried with capped
   exponential backoff and full jitter, without end; other 4xx park the request in the
   dead-letter topic after `max_attempts` (410 at once); in `enrich` mode a 404 means "I do not
   have it": skipped (the record's events in it too), neither retried nor parked, the
   baselines unchanged;
4. settle in one transaction: the baselines of what was acknowledged (`acked_after`, only on
   2xx), the positions, the checkpoint, the outbox row deleted.
On assignment a lane with an outbox row sends that body again first (same ids, same
`webhook-id`), then reads on from the offsets it covers. So after a crash nothing is lost,
`old*` is what the destination acknowledged, and no export is sent twice but as a same-id
redelivery. Enriched events are at least once: one read again after a restart (behind a held
event of its lane) is sent again with its id. `flush()` reports settled offsets for the
consumer group (the checkpoint table is what `positions()` answers from) and never waits.

Sending, signing, retrying and parking one request, and the figures, are in `delivery`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import ConsumerRecord, TopicPartition

from materializations.base import Sink
from materializations.destinations.batches import Baseline, compose, message_id
from materializations.destinations.delivery import Delivery, DestinationError, DestinationStats
from materializations.destinations.exports import enriched, view_of
from materializations.destinations.pending import Pending
from materializations.destinations.store import Outbox, Store
from materializations.webhook.sink import DEFAULT_MAX_BATCH, DeadLetter
from pipeline.catalog import BindingSpec, MaterializationSpec
from pipeline.catalog.specs import DestinationSpec
from pipeline.figures import Figure

log = logging.getLogger("materializations.destinations")

DEFAULT_HOLD = 5.0
"""Seconds an enriched event waits for its record's document before it goes anyway."""
KNOWN_LIMIT = 500_000
"""Baselines a lane keeps in memory (about 300 bytes each) before it starts over."""
_EVENT_IDS = uuid.UUID("0b6c5f1e-8a2d-5c43-9f0e-7d2a4b6c8e10")
"""Namespace of enriched events' ids (uuid5)."""


@dataclass(eq=False)
class _Lane:
    partition: int
    pending: Pending
    outbox: Outbox | None = None
    """The request prepared and not yet settled."""
    stored: dict[str, int] = field(default_factory=dict)
    """The checkpoint as last settled (or read at assignment)."""
    done: dict[str, int] | None = None
    """The checkpoint as last settled by this lane, for `flush()`."""
    loaded: bool = True
    """Whether the outbox table was read for it (a lane made by `apply` reads it first)."""
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    known: dict[str, Baseline | None] = field(default_factory=dict)
    """Its records' rows in `segflow_destination_acks` as last read or settled (None: no row):
    the lane is the only writer of its partition's rows while it holds the partition, so a
    record read once is not read again. Cleared past `KNOWN_LIMIT` entries."""
    viewless: set[str] = field(default_factory=set)
    """The records of `known` whose row has no view (deleted once behind the checkpoint)."""


class WebhookDestination(Sink):
    """Keeps `destination.config['url']` in sync with the records in the destination."""

    def __init__(
        self,
        destination: DestinationSpec,
        spec: MaterializationSpec,
        topics: Mapping[str, BindingSpec],
        *,
        dead_letter: DeadLetter,
        settings_postgres: str | None,
        settings_schema: str,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        hold: float = DEFAULT_HOLD,
    ) -> None:
        super().__init__(spec, topics)
        self.destination = destination
        self.delivery = Delivery(
            spec.name,
            destination.name,
            destination.config,
            enrich=destination.mode == "enrich",
            dead_letter=dead_letter,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
        )
        self.stats: DestinationStats = self.delivery.stats
        self.max_batch = int(destination.config.get("max_batch", DEFAULT_MAX_BATCH))
        self.enrich = destination.mode == "enrich"
        self.hold = hold
        self.records_topic = next(t for t, b in topics.items() if b.records)
        self.events_topic = next((t for t, b in topics.items() if not b.records), None)
        self._postgres = settings_postgres
        self.store = Store(settings_postgres or "", settings_schema, destination.name)
        self._lanes: dict[int, _Lane] = {}
        self._reported: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()
        self._open = False
        self._draining = False

    @property
    def backlog(self) -> int:
        """Exports and events applied and not yet settled."""
        lanes = list(self._lanes.values())  # one step: metrics read it from another thread
        return sum(len(lane.pending) + (lane.outbox is not None) for lane in lanes)

    @property
    def settled(self) -> bool:
        """Whether everything applied is settled, checkpoints stored included."""
        return self.backlog == 0 and all(
            lane.pending.checkpoint() == lane.stored for lane in self._lanes.values()
        )

    def figures(self) -> Sequence[Figure]:
        return self.stats.figures(self.backlog)

    async def open(self) -> None:
        if self._postgres is None:
            raise DestinationError(
                f"destination '{self.destination.name}': a webhook destination keeps what its"
                " endpoint acknowledged in Segflow's own Postgres; set SEGFLOW_POSTGRES"
            )
        if self._open:
            return
        await self.store.open()
        self.delivery.open()
        self._open = True
        for lane in self._lanes.values():
            self._start(lane)

    async def positions(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        """From the checkpoint table, or a lane's outbox row (its request goes first)."""
        numbers = sorted({tp.partition for tp in partitions})
        stored = await self.store.checkpoints(numbers)
        outboxes = await self.store.outboxes(numbers)
        for p in numbers:
            if p in self._lanes:
                continue
            checkpoint = {t: stored.get((t, p), 0) for t in self.topics}
            outbox = outboxes.get(p)
            resume = {**checkpoint, **(outbox.through if outbox else {})}
            lane = self._lanes[p] = _Lane(p, self._pending(resume), outbox, checkpoint)
            self._start(lane)
        return {tp: self._lanes[tp.partition].pending.applied[tp.topic] for tp in partitions}

    async def apply(self, binding: BindingSpec, records: Sequence[ConsumerRecord]) -> None:
        now = time.monotonic()
        for record in records:
            lane = self._lanes.get(record.partition)
            if lane is None:  # not through `positions` (it always is, in the worker)
                resume = dict.fromkeys(self.topics, record.offset)
                lane = self._lanes[record.partition] = _Lane(
                    record.partition, self._pending(resume), loaded=False
                )
                self._start(lane)
            if binding.records:
                doc = None if record.value is None else orjson.loads(record.value)
                lane.pending.document(_record_id(record.key, doc), record.offset, doc)
            else:
                self._forwarded(lane, record, now)
            lane.wakeup.set()

    def _forwarded(self, lane: _Lane, record: ConsumerRecord, now: float) -> None:
        doc = orjson.loads(record.value)
        event, document = doc["event"], doc["document"]
        body = enriched(self.destination, event, document)
        if body is None:
            lane.pending.skip(record.topic, record.offset)
            return
        ident = uuid.uuid5(_EVENT_IDS, f"{self.destination.name}\0{event.get('id')}")
        view = view_of(self.destination, document)
        lane.pending.event(doc["r"], record.offset, {"id": str(ident), **body}, view, now)

    async def flush(self) -> dict[TopicPartition, int]:
        """Offsets settled since the last flush; never waits for the endpoint. Releases the
        held events that waited long enough."""
        now = time.monotonic()
        advanced: dict[TopicPartition, int] = {}
        for lane in self._lanes.values():
            if lane.pending.release(now, self.hold):
                lane.wakeup.set()
            for topic, offset in (lane.done or {}).items():
                tp = TopicPartition(topic, lane.partition)
                if self._reported.get(tp) != offset:
                    advanced[tp] = offset
        self._reported.update(advanced)
        return advanced

    async def drain(self, timeout: float) -> bool:
        """Wait until everything applied is settled, checkpoints stored (held events go at
        once); False on timeout."""
        self._draining = True  # and so are those composed meanwhile
        for lane in self._lanes.values():
            lane.pending.release(0.0, 0.0, everything=True)
            lane.wakeup.set()
        try:
            async with asyncio.timeout(timeout), self._progress:
                await self._progress.wait_for(lambda: self.settled)
        except TimeoutError:
            return False
        finally:
            self._draining = False
        return True

    async def revoke(self, partitions: Sequence[TopicPartition]) -> None:
        """Stop the lanes of partitions another worker now owns: it resends their outbox row
        and reads on from the checkpoint."""
        numbers = {tp.partition for tp in partitions}
        lanes = [self._lanes.pop(p) for p in numbers if p in self._lanes]
        await _stop(lanes)
        await self.store.settled()  # so the next owner reads their rows as they are now
        for tp in partitions:
            self._reported.pop(tp, None)
        async with self._progress:
            self._progress.notify_all()

    async def close(self) -> None:
        await _stop(list(self._lanes.values()))
        self._open = False
        await self.delivery.close()
        await self.store.close()

    # -- a lane --

    def _pending(self, resume: Mapping[str, int]) -> Pending:
        return Pending(self.records_topic, self.events_topic, resume)

    def _start(self, lane: _Lane) -> None:
        if self._open and lane.task is None:
            lane.task = asyncio.create_task(
                self._run(lane), name=f"destination {self.destination.name} {lane.partition}"
            )

    async def _run(self, lane: _Lane) -> None:
        failures = 0
        while True:
            try:
                await self._step(lane)
            except Exception:
                # Postgres away, or a bug: the lane must neither stop for good nor skip work.
                failures += 1
                delay = self.delivery.backoff(failures)
                log.exception(
                    "%s: partition %d failed; retrying in %.2fs",
                    self.spec.name,
                    lane.partition,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            failures = 0

    async def _step(self, lane: _Lane) -> None:
        """One unit of a lane's work: settle the request under way, or prepare the next one,
        or move the checkpoint past what needed no request, or wait for work."""
        if not lane.loaded:
            lane.outbox = (await self.store.outboxes([lane.partition])).get(lane.partition)
            lane.loaded = True
        if lane.outbox is not None:
            await self._complete(lane, lane.outbox)
            return
        items = lane.pending.take(self.max_batch, one_record=self.enrich)
        if not items:
            through = lane.pending.checkpoint()
            if through != lane.stored:
                lane.outbox = Outbox(lane.partition, "", b"", through, [], 0, 0, outcome="none")
                return
            lane.wakeup.clear()
            await lane.wakeup.wait()
            return
        try:
            baselines = await self._baselines(lane, {item.record for item in items})
            hold = 0.0 if self._draining else self.hold
            batch = compose(
                self.destination, items, baselines, lane.pending, time.monotonic(), hold
            )
        except BaseException:
            lane.pending.restore(items)
            raise
        body = orjson.dumps(batch.elements) if batch.elements else b""
        lane.outbox = Outbox(
            lane.partition,
            message_id(self.destination.name, body) if body else "",
            body,
            lane.pending.checkpoint(),
            list(batch.changes.values()),
            batch.exports,
            batch.events,
            outcome=None if body else "none",
        )
        if body:
            self.stats.batch_sizes.observe(len(batch.elements))

    async def _baselines(self, lane: _Lane, records: set[str]) -> dict[str, Baseline]:
        """The acknowledged baselines of `records`, reading only those the lane does not
        know yet."""
        known = lane.known
        missing = [record for record in records if record not in known]
        if missing:
            if len(known) + len(missing) > KNOWN_LIMIT:
                known.clear()
                lane.viewless.clear()
                missing = list(records)
            found = await self.store.baselines(missing, lane.partition)
            for record in missing:
                baseline = known[record] = found.get(record)
                if baseline is not None and baseline.view is None:
                    lane.viewless.add(record)
        return {r: b for r in records if (b := known[r]) is not None}

    def _settled(self, lane: _Lane, outbox: Outbox) -> None:
        """What `Store.settle` wrote for `outbox`, in the lane's `known` rows (the same rules:
        positions only grow, views change when acknowledged, rows without a view behind the
        records-topic checkpoint are deleted)."""
        known, viewless, acknowledged = lane.known, lane.viewless, outbox.outcome == "ok"
        for change in outbox.changes:
            if change.record not in known:
                continue  # not read by this lane (a request read back at start): read later
            before = known[change.record]
            position = change.position if before is None else max(before.position, change.position)
            if acknowledged and change.touched:
                view = change.view
            else:
                view = None if before is None else before.view
            known[change.record] = Baseline(position, view)
            if view is None:
                viewless.add(change.record)
            else:
                viewless.discard(change.record)
        through = outbox.through.get(self.records_topic)
        if through is not None:
            for record in list(viewless):
                baseline = known.get(record)
                if baseline is None or baseline.position < through:
                    known[record] = None
                    viewless.discard(record)

    async def _complete(self, lane: _Lane, outbox: Outbox) -> None:
        """Write the outbox row, send it until answered, settle: each step once, in order (a
        failure resumes at the step that failed)."""
        if outbox.body and not outbox.written:
            await self.store.write(outbox)
            outbox.written = True
        if outbox.outcome is None:
            outbox.outcome = await self.delivery.send(outbox)
        await self.store.settle(outbox, self.records_topic)
        self._settled(lane, outbox)
        if outbox.outcome == "ok":
            self.stats.exports += outbox.exports
            self.stats.events += outbox.events
        elif outbox.outcome == "skipped":
            self.stats.skipped += outbox.exports + outbox.events
        lane.stored = lane.done = outbox.through
        lane.outbox = None
        async with self._progress:
            self._progress.notify_all()


def _record_id(key: bytes | None, document: Mapping[str, Any] | None) -> str:
    """A records-topic record's record id: the document's, or for a tombstone its key's
    (`["<id>"]`, the collection's key encoding)."""
    if document is not None:
        return str(document["id"])
    assert key is not None, "a tombstone has a key"
    decoded = orjson.loads(key)
    return str(decoded[0] if isinstance(decoded, list) else decoded)


async def _stop(lanes: Sequence[_Lane]) -> None:
    tasks = [lane.task for lane in lanes if lane.task is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for lane in lanes:
        lane.task = None
