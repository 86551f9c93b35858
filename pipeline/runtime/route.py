"""Routing a source topic's records on the partition owner that reads them.

Each source record is validated against its collection's schema: an invalid one goes to
`<topic>.dead-letter` with the reason as headers; a valid one whose shuffle partition (from the
shuffle key, with our producers' partitioner) is the partition it was read from is processed at
once; the others are re-keyed into the shuffle topic for their owner. Everything our own
producers write is already in the right partition, so well-keyed input skips the extra hop.

The internal collections between the profile stages are the exception: only those stages write
them, each record keyed into its owner's partition by the same partitioner, from documents they
built themselves, so their records are decoded and processed as they come (no validation, no
re-keying, and not counted as events in).

A `Router` per source holds what routing needs (validator, shuffle key, topics, partition
count) so that `pipeline.runtime.derive` only hands it records and a `BatchWriter`.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiokafka import ConsumerRecord

from pipeline.catalog import Catalog
from pipeline.catalog.profiles import internal_collections
from pipeline.documents.validation import Validator
from pipeline.figures import Stats
from pipeline.runtime.batches import BatchWriter
from pipeline.runtime.task import Shuffling
from pipeline.runtime.topics import Names, partition_for

log = logging.getLogger(__name__)


class Router:
    """Validates one source's records and sends each where it is processed."""

    def __init__(
        self, catalog: Catalog, source: str, task: Shuffling, names: Names, stats: Stats
    ) -> None:
        self.shuffle_key = task.shuffle_key
        profiles = catalog.profiles
        self.internal = profiles is not None and source in internal_collections(profiles)
        self.validator = Validator(catalog.collections[source].schema)
        self.shuffle_topic = names.shuffle(source)
        self.dead_letter_topic = names.dead_letter(source)
        self.partitions = catalog.collections[source].partitions
        self.stats = stats

    def route(
        self,
        partition_read: int,
        records: list[ConsumerRecord],
        writer: BatchWriter,
        here: list[tuple[Any, int]],
    ) -> None:
        """Validate source records: invalid ones to the dead-letter topic, those whose shuffle
        partition is `partition_read` into `here`, the others to the shuffle topic for their
        owner."""
        if self.internal:
            loads = orjson.loads
            here.extend([(loads(r.value), r.timestamp) for r in records])
            return
        shuffle_key = self.shuffle_key
        validator = self.validator
        shuffle_topic = self.shuffle_topic
        partitions = self.partitions
        # Redeliveries are often byte for byte the same record: decode, validate and key each
        # distinct value once per batch. (Derivations never modify their source documents.)
        known: dict[bytes, tuple[Any, bytes, int]] = {}
        for record in records:
            value = record.value
            hit = known.get(value) if value is not None else None
            if hit is not None:
                doc, key, partition = hit
            else:
                problems: list[str]
                try:
                    doc = orjson.loads(value) if value is not None else None
                    problems = validator.errors(doc)
                except orjson.JSONDecodeError as exc:
                    problems = [f"not JSON: {exc}"]
                if problems:
                    self._dead_letter(writer, record, problems)
                    continue
                key = shuffle_key(doc)
                partition = partition_for(key, partitions)
                if value is not None:
                    known[value] = (doc, key, partition)
            if partition == partition_read:
                here.append((doc, record.timestamp))
            else:
                writer.add(shuffle_topic, partition, key, value, record.timestamp, record.headers)
        self.stats.events_in += len(records)

    def _dead_letter(
        self, writer: BatchWriter, record: ConsumerRecord, problems: list[str]
    ) -> None:
        self.stats.dead_letters += 1
        error = "; ".join(problems)
        log.warning(
            "dead letter: %s[%d]@%d: %s", record.topic, record.partition, record.offset, error[:500]
        )
        headers = [
            *(record.headers or ()),
            ("segflow.error", error.encode()),
            ("segflow.source.topic", record.topic.encode()),
            ("segflow.source.partition", str(record.partition).encode()),
            ("segflow.source.offset", str(record.offset).encode()),
        ]
        writer.add(self.dead_letter_topic, 0, record.key, record.value, record.timestamp, headers)
