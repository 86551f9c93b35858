"""Writing documents into a collection's topic, as the ingestion API, `segflow ingest` and
`segflow generate` do: keyed by the shuffle key, so a user's documents keep their order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from pipeline.catalog import Catalog
from pipeline.documents import pointers
from pipeline.runtime.batches import BatchWriter
from pipeline.runtime.topics import Names, partition_for

RECEIVED_AT = "segflow.received-at"
"""Header: when Segflow received the document (milliseconds since the epoch, as text)."""
PRODUCER = "segflow.producer"
"""Header: the id of the API key (or tool) that wrote the document."""


def make_producer(bootstrap: str, linger_ms: int = 5) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=linger_ms,
        acks="all",
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )


class CollectionWriter:
    """Sends documents of one collection to its topic."""

    def __init__(
        self,
        catalog: Catalog,
        collection: str,
        names: Names,
        producer: AIOKafkaProducer,
        producer_id: str,
    ) -> None:
        spec = catalog.collections[collection]
        derivations = catalog.derivations_from(collection)
        # Partition by what the derivations shuffle on (the user), else by the collection key.
        self.topic = names.collection(collection)
        self.partitions = spec.partitions
        self.key = (
            derivations[0].shuffle_encoder() if derivations else pointers.key_encoder(spec.key)
        )
        self.producer = producer
        self.producer_id = producer_id.encode()

    def _headers(self) -> list[tuple[str, bytes]]:
        return [(RECEIVED_AT, str(int(time.time() * 1000)).encode()), (PRODUCER, self.producer_id)]

    def _place(self, doc: Any) -> tuple[bytes, int]:
        """The record key and partition of a document: those of its shuffle key."""
        key = self.key(doc)
        return key, partition_for(key, self.partitions)

    async def send(self, doc: Any, raw: bytes | None = None) -> asyncio.Future[Any]:
        """Queue one (valid) document; await the returned future for the broker's ack."""
        key, partition = self._place(doc)
        future: asyncio.Future[Any] = await self.producer.send(
            self.topic,
            raw if raw is not None else orjson.dumps(doc),
            key=key,
            partition=partition,
            headers=self._headers(),
        )
        return future

    async def send_all(self, docs: Sequence[Any]) -> int:
        """Send documents (in order per partition) and wait until the broker acknowledged all."""
        writer = BatchWriter(self.producer)
        headers = self._headers()
        for doc in docs:
            key, partition = self._place(doc)
            writer.add(self.topic, partition, key, orjson.dumps(doc), None, headers)
        await writer.flush()
        return len(docs)
