"""The derivations of one source collection, run over a batch of one shuffle partition.

Everything per key is combined in memory: each register and each derived document is read from
RocksDB at most once per batch and written once. Registers are updated event by event (each
event's `publish` sees the register before and after it). A reduced document is not: the batch's
documents of a key are reduced among themselves, in arrival order, and the result merged into the
stored document once at the end. Reduction is associative (tested for every strategy), so that
equals merging event by event, and a large document (a profile with many segments) costs one
merge per key and batch instead of one per event.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiokafka import ConsumerRecord

from pipeline.catalog import Catalog, CollectionSpec, DerivationSpec
from pipeline.documents import pointers
from pipeline.documents.reduce import Reducer, compile_reducer
from pipeline.runtime.state import Changes, PartitionState

DEDUP = b"d:"


def root_strategy(spec: CollectionSpec) -> str:
    annotation = spec.schema.contents.get("reduce")
    if isinstance(annotation, dict):
        return str(annotation.get("strategy", "lastWriteWins"))
    return "lastWriteWins"


def load_transform(path: str) -> Any:
    module, _, attribute = path.partition(":")
    target = getattr(importlib.import_module(module), attribute)
    return target() if isinstance(target, type) else target


class Shuffling(Protocol):
    """What routing needs of a task: the key its source is shuffled by."""

    shuffle_key: Callable[[Any], bytes]


@dataclass
class Output:
    """A derived collection as this task writes it."""

    spec: CollectionSpec
    topic: str
    key: Callable[[Any], bytes]
    reducer: Reducer | None
    """None when documents replace each other whole (lastWriteWins): no state needed."""
    prefix: bytes
    by_key: bool = False
    """Partitioned by the hash of the record key (as shuffles are), not by the owner's partition:
    for an output another stage reads co-partitioned (profile records)."""


@dataclass
class Derivation:
    spec: DerivationSpec
    publish: Callable[[Any, Any, Any], list[Any]]
    output: Output
    update: Callable[[Any], list[Any]] | None = None
    register_key: Callable[[Any], bytes] | None = None
    register_reducer: Reducer | None = None
    register_prefix: bytes = b""


@dataclass
class BatchResult:
    """What a batch produced: documents to publish and state changes to commit."""

    documents: list[tuple[Output, bytes, bytes | None]] = field(default_factory=list)
    """(output, key, value); a value None is a tombstone (the document is deleted)."""
    changes: Changes = field(default_factory=dict)
    events: int = 0
    redeliveries: int = 0
    conflicts: int = 0
    """Profile events whose anonymousId is linked to another person (the merge guard)."""
    merges: int = 0
    """Anonymous profile records merged into a person's."""
    group_changes: int = 0
    """Records joining or leaving calculated groups."""
    evaluations: int = 0
    """Groups evaluated for changed records (only those reading a changed property)."""
    timers_fired: int = 0
    """Records whose relative-rule timer fired."""
    rows: int = 0
    """Import rows applied to records (SPEC 10)."""
    forgotten: list[bytes] = field(default_factory=list)
    """Expiry index entries to delete locally (`PartitionState.expired`)."""
    expired: int = 0
    """Dedup entries forgotten (deleted, tombstones in the changelog)."""


class DerivationTask:
    """All derivations reading `source`, compiled once from the catalog."""

    def __init__(self, catalog: Catalog, source: str, topic_of: Callable[[str], str]) -> None:
        self.source = catalog.collections[source]
        self.derivations: list[Derivation] = []
        specs = catalog.derivations_from(source)
        self.shuffle_key = specs[0].shuffle_encoder()
        self.dedup_key = pointers.key_encoder(self.source.key)
        self.dedup_window_ms = (
            int(self.source.dedup_window * 1000) if self.source.dedup_window is not None else None
        )
        outputs: dict[str, Output] = {}
        for i, spec in enumerate(specs):
            target = catalog.collections[spec.collection]
            output = outputs.get(spec.collection)
            if output is None:
                stateful = root_strategy(target) != "lastWriteWins"
                output = Output(
                    spec=target,
                    topic=topic_of(target.name),
                    key=pointers.key_encoder(target.key),
                    reducer=compile_reducer(target.schema) if stateful else None,
                    prefix=b"c%d:" % len(outputs),
                )
                outputs[spec.collection] = output
            transform = load_transform(spec.transform)
            derivation = Derivation(spec=spec, publish=transform.publish, output=output)
            if spec.register is not None:
                derivation.update = transform.update
                derivation.register_key = pointers.key_encoder(spec.register.key)
                derivation.register_reducer = compile_reducer(spec.register.schema)
                derivation.register_prefix = b"r%d:" % i
            self.derivations.append(derivation)
        self.outputs = list(outputs.values())

    def process(self, records: Sequence[ConsumerRecord], state: PartitionState) -> BatchResult:
        """Run every derivation over `records` (one partition, offset order)."""
        return self.process_documents(
            [(orjson.loads(r.value), r.timestamp) for r in records], state
        )

    def process_documents(
        self, items: Sequence[tuple[Any, int]], state: PartitionState
    ) -> BatchResult:
        """Run every derivation over (document, record timestamp in ms) pairs, in arrival order."""
        result = BatchResult(events=len(items))
        if self.dedup_window_ms is not None:
            items = deduplicate(items, state, result, self.dedup_key, self.dedup_window_ms)
        registers: dict[bytes, Any] = {}
        # Reduced outputs: the batch's documents of each key, reduced among themselves. Whole
        # documents (no reducer): every one, in arrival order, even for a key seen twice (an
        # event toggling again after the window).
        combined: dict[bytes, tuple[Output, bytes, Any]] = {}
        published = result.documents
        for source, _ in items:
            for derivation in self.derivations:
                register = previous = None
                if derivation.update is not None:
                    assert derivation.register_key and derivation.register_reducer
                    reg_key = derivation.register_prefix + derivation.register_key(source)
                    if reg_key in registers:
                        previous = registers[reg_key]
                    else:
                        stored = state.get(reg_key)
                        previous = orjson.loads(stored) if stored is not None else None
                    register = previous
                    for update in derivation.update(source):
                        register = (
                            update
                            if register is None
                            else derivation.register_reducer(register, update)
                        )
                    registers[reg_key] = register
                output = derivation.output
                for doc in derivation.publish(source, register, previous):
                    key = output.key(doc)
                    if output.reducer is None:
                        published.append((output, key, orjson.dumps(doc)))
                        continue
                    state_key = output.prefix + key
                    earlier = combined.get(state_key)
                    if earlier is not None:
                        doc = output.reducer(earlier[2], doc)
                    combined[state_key] = (output, key, doc)
        changes = result.changes
        for reg_key, register in registers.items():
            changes[reg_key] = orjson.dumps(register)
        state_keys = list(combined)
        for state_key, stored in zip(state_keys, state.get_many(state_keys), strict=True):
            output, key, doc = combined[state_key]
            if stored is not None:
                assert output.reducer is not None
                doc = output.reducer(orjson.loads(stored), doc)
            value = orjson.dumps(doc)
            changes[state_key] = value
            published.append((output, key, value))
        return result


def grace_ms(window: int) -> int:
    """How long past its window an id is still remembered: a redelivery's record timestamp may
    be older than the newest of its partition (a producer retrying a batch keeps its
    timestamps; producers' clocks differ)."""
    return max(10_000, window // 10)


def expire(
    items: Sequence[tuple[Any, int]], state: PartitionState, result: BatchResult, window: int
) -> None:
    """Forget the ids accepted more than the window (and its grace) before the batch's newest
    record timestamp, deleting them from the changelog too (tombstones), so dedup state stays
    bounded. Called before the batch notes its own, which replace a deletion of the same key.
    Up to twice the batch's size per batch: it keeps pace with what batches add."""
    if not items:
        return
    newest = max(timestamp for _, timestamp in items)
    deletions, forgotten = state.expired(newest - window - grace_ms(window), 2 * len(items) + 1000)
    result.changes.update(deletions)
    result.forgotten += forgotten
    result.expired += len(deletions)


def deduplicate(
    items: Sequence[tuple[Any, int]],
    state: PartitionState,
    result: BatchResult,
    dedup_key: Callable[[Any], bytes],
    window: int,
) -> list[tuple[Any, int]]:
    """Drop redeliveries: events whose key was accepted within `window` ms before them."""
    expire(items, state, result, window)
    accepted: dict[bytes, int] = {}
    kept = []
    for item in items:
        key = DEDUP + dedup_key(item[0])
        first = accepted.get(key)
        if first is None:
            stored = state.get(key)
            first = int.from_bytes(stored, "big") if stored is not None else None
        if first is not None and item[1] - first <= window:
            result.redeliveries += 1
            continue
        accepted[key] = item[1]
        kept.append(item)
    for key, timestamp in accepted.items():
        result.changes[key] = timestamp.to_bytes(8, "big")
    return kept
