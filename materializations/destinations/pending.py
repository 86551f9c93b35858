"""One lane's pending work: the newest document of each record, enriched events, and how far
the lane's checkpoint may go. Pure: no I/O, no clock of its own.

- A record's document waits in a **slot**; a later document of the record replaces it in
  place (newest-only, and the record keeps its turn, so per record the order holds). A slot
  taken into a request is detached: a document arriving meanwhile gets a new slot behind.
- An enriched **event** waits in the queue behind what was pending when it came. One whose
  record is not yet up to date at the destination is **held** for that record (the request
  composer decides, `batches.compose`) until the record's next document arrives (the held
  events then queue behind its slot) or it has waited long enough (`release`).
- The **checkpoint** of each topic is the smallest offset still pending (queued or held) of
  it, else the offset after the last one applied. Reading again from there after a restart
  loses nothing; what it reads twice is recognised by the acknowledged positions
  (`store`), or, for events, redelivered with the same id.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from materializations.destinations.exports import View


@dataclass(eq=False)
class Slot:
    """The newest pending document of one record (None: merged away)."""

    record: str
    offset: int
    document: Mapping[str, Any] | None
    replaced: bool = False
    """Whether it replaced an earlier document (whose position then needs recording)."""
    live: bool = True


@dataclass(eq=False)
class Event:
    """An enriched event, as sent, and the view of its record right after it."""

    record: str
    offset: int
    body: Mapping[str, Any]
    view: View | None
    since: float
    """When it was applied (monotonic seconds): how long it may be held is counted from it."""
    force: bool = False
    """Released after waiting long enough: sent whatever its record's state."""
    live: bool = True


Item = Slot | Event


class Pending:
    """What one lane has applied but not yet settled."""

    def __init__(self, records_topic: str, events_topic: str | None, resume: Mapping[str, int]):
        self.records_topic = records_topic
        self.events_topic = events_topic
        self.queue: deque[Item] = deque()
        self.slots: dict[str, Slot] = {}
        self.held: dict[str, deque[Event]] = {}
        self.applied = dict(resume)
        """Topic -> the offset after the last one applied (at first: where reading resumed)."""
        self.size = 0
        """Slots and events queued or held."""
        self._heaps: dict[str, list[tuple[int, int, Item]]] = {records_topic: []}
        if events_topic is not None:
            self._heaps[events_topic] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return self.size

    def document(self, record: str, offset: int, document: Mapping[str, Any] | None) -> None:
        """A record's document from the records topic (None: a tombstone)."""
        slot = self.slots.get(record)
        if slot is None:
            slot = self.slots[record] = Slot(record, offset, document)
            self.queue.append(slot)
            self.size += 1
        else:
            slot.offset, slot.document, slot.replaced = offset, document, True
        self._track(self.records_topic, slot)
        waiting = self.held.pop(record, None)
        if waiting:
            self.queue.extend(waiting)  # behind its slot
        self.applied[self.records_topic] = offset + 1

    def event(
        self, record: str, offset: int, body: Mapping[str, Any], view: View | None, now: float
    ) -> None:
        """An enriched event from the forwarded topic."""
        assert self.events_topic is not None
        event = Event(record, offset, body, view, now)
        self._track(self.events_topic, event)
        waiting = self.held.get(record)
        if waiting is not None:  # behind its record's held events: per record, events in order
            waiting.append(event)
        else:
            self.queue.append(event)
        self.size += 1
        self.applied[self.events_topic] = offset + 1

    def skip(self, topic: str, offset: int) -> None:
        """A record that carries nothing for this destination."""
        self.applied[topic] = offset + 1

    def take(self, limit: int, *, one_record: bool = False) -> list[Item]:
        """Up to `limit` items from the front (with `one_record`, only the first one's record
        and only while the front is that record's)."""
        taken: list[Item] = []
        while self.queue and len(taken) < limit:
            item = self.queue[0]
            if not item.live:
                self.queue.popleft()
                continue
            if one_record and taken and item.record != taken[0].record:
                break
            self.queue.popleft()
            self._detach(item)
            taken.append(item)
        return taken

    def pull(self, record: str) -> Slot | None:
        """Take `record`'s waiting slot out of its turn (an event of it needs it first)."""
        slot = self.slots.get(record)
        if slot is not None:
            self._detach(slot)
        return slot

    def is_held(self, record: str) -> bool:
        return record in self.held

    def hold(self, event: Event) -> None:
        """Keep a taken event until its record's next document, or until released."""
        event.live = True
        self.held.setdefault(event.record, deque()).append(event)
        self.size += 1
        assert self.events_topic is not None
        self._track(self.events_topic, event)

    def restore(self, items: Iterable[Item]) -> None:
        """Put taken items back in front, as if never taken (the request was not prepared). A
        slot whose record got a newer document meanwhile is dropped: the newer one stands."""
        for item in reversed(list(items)):
            if isinstance(item, Slot):
                if item.record in self.slots:
                    continue
                again = Slot(item.record, item.offset, item.document, item.replaced)
                self.slots[item.record] = again
                self.queue.appendleft(again)
                self._track(self.records_topic, again)
                self.size += 1
            else:
                event = Event(item.record, item.offset, item.body, item.view, item.since)
                event.force = item.force
                if item.record in self.held:
                    self.held[item.record].appendleft(event)
                else:
                    self.queue.appendleft(event)
                assert self.events_topic is not None
                self._track(self.events_topic, event)
                self.size += 1

    def release(self, now: float, after: float, *, everything: bool = False) -> int:
        """Queue the held events that waited `after` seconds (or all), to be sent whatever
        their record's state; returns how many."""
        released = 0
        for record, waiting in list(self.held.items()):
            while waiting and (everything or now - waiting[0].since >= after):
                event = waiting.popleft()
                event.force = True
                self.queue.append(event)
                released += 1
            if not waiting:
                del self.held[record]
        return released

    def checkpoint(self) -> dict[str, int]:
        """Per topic, where reading may resume without losing anything pending."""
        out: dict[str, int] = {}
        for topic, heap in self._heaps.items():
            while heap and not _valid(heap[0]):
                heapq.heappop(heap)
            if heap:
                out[topic] = heap[0][0]
            elif topic in self.applied:
                out[topic] = self.applied[topic]
        return out

    def _track(self, topic: str, item: Item) -> None:
        heapq.heappush(self._heaps[topic], (item.offset, next(self._order), item))

    def _detach(self, item: Item) -> None:
        item.live = False
        self.size -= 1
        if isinstance(item, Slot) and self.slots.get(item.record) is item:
            del self.slots[item.record]


def _valid(entry: tuple[int, int, Item]) -> bool:
    """Whether a heap entry still stands for something pending (items taken, and offsets a
    slot moved past, leave stale entries behind, dropped lazily)."""
    offset, _, item = entry
    return item.live and item.offset == offset
