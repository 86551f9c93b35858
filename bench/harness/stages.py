"""The profile stages of a catalog run in this process (`bench.profile_stages`, `bench.groups`).

`Stages(catalog, clock)` holds one task per profile stage (identity, records, unique) and, with
`segments=True`, the segmentation derivations that read segment/events (memberships, profiles,
toggles), fed with the group changes the records stage writes there (validation, which the
worker's router does first, left out). State is in memory per partition and committed after
each batch; queues stand for the topics between the stages. `run(events)` returns each stage's
CPU seconds (process time of `process_documents` and of applying its changes) and the figures
the worker would count.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.catalog import Catalog
from pipeline.catalog.profiles import SEGMENT_EVENTS, internal_collections
from pipeline.runtime.clock import Clock, wall_clock
from pipeline.runtime.derive import make_task
from pipeline.runtime.topics import partition_for


class MemoryState(dict[bytes, bytes]):
    """A partition's state in a dict, committed after each batch."""

    def get(self, key: bytes, default: Any = None) -> bytes | None:  # type: ignore[override]
        return super().get(key, default)

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        return [self.get(key) for key in keys]

    def expired(self, cutoff: int, limit: int) -> tuple[dict[bytes, bytes | None], list[bytes]]:
        """Nothing expires here (no index by time): the stage benchmarks' events all lie
        within one dedup window."""
        return {}, []


@dataclass
class Figures:
    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    documents: Counter[str] = field(default_factory=Counter)
    evaluations: int = 0
    group_changes: int = 0
    batches: int = 0


class Stages:
    def __init__(
        self, catalog: Catalog, clock: Clock = wall_clock, batch: int = 5000, segments: bool = False
    ) -> None:
        assert catalog.profiles is not None
        self.sources = [catalog.profiles.events, *internal_collections(catalog.profiles)]
        if segments and catalog.profiles.groups:
            self.sources.append(SEGMENT_EVENTS)
        self.tasks = {
            s: make_task(catalog, s, lambda name: name, clock, lambda name: name)
            for s in self.sources
        }
        self.partitions = {s: catalog.collections[s].partitions for s in self.sources}
        self.states = {s: [MemoryState() for _ in range(self.partitions[s])] for s in self.sources}
        self.batch = batch

    def run(self, events: list[dict[str, Any]]) -> Figures:
        sources, tasks, partitions = self.sources, self.tasks, self.partitions
        queues: dict[str, dict[int, list[tuple[Any, int]]]] = {
            s: defaultdict(list) for s in sources
        }
        first = sources[0]
        for i, event in enumerate(events):
            partition = partition_for(tasks[first].shuffle_key(event), partitions[first])
            queues[first][partition].append((event, 1_000 + i))
        figures = Figures()
        cpu = figures.cpu
        while any(q for s in sources for q in queues[s].values()):
            for source in sources:
                for partition, queue in list(queues[source].items()):
                    if not queue:
                        continue
                    batch, queues[source][partition] = queue[: self.batch], queue[self.batch :]
                    state = self.states[source][partition]
                    started = time.process_time()
                    result = tasks[source].process_documents(batch, state)  # type: ignore[arg-type]
                    for key, value in result.changes.items():
                        if value is None:
                            state.pop(key, None)
                        else:
                            state[key] = value
                    cpu[source] += time.process_time() - started
                    figures.batches += 1
                    figures.evaluations += result.evaluations
                    figures.group_changes += result.group_changes
                    for output, key, value in result.documents:
                        name = output.spec.name
                        figures.documents[name] += 1
                        if name not in queues or value is None:
                            continue
                        target = partition
                        if output.by_key:
                            target = partition_for(key, partitions[name])
                        queues[name][target].append((orjson.loads(value), 2_000))
        return figures
