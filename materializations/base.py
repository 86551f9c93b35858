"""What every materialization shares.

A sink's lifecycle is `open`, then repeatedly `apply` (buffer documents of a batch) and `flush`
(make them durable), then `close`; sinks are async context managers. The runtime
(`pipeline.runtime.materialize`) owns consumers and commit order:

1. `positions(partitions)` on assignment: where each source partition resumes. A sink that keeps
   its checkpoint with its data (Postgres) answers from there; others answer None (the consumer
   group's committed offset is used).
2. `apply(binding, records)` for each binding's records of a fetched batch, in offset order.
3. `flush()`: everything applied is durable at the endpoint, together with its checkpoint where
   the sink keeps one. Returns the offsets (next offset per partition) now safe to commit.
4. The runtime commits those offsets to the consumer group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import TracebackType

from aiokafka import ConsumerRecord, TopicPartition

from pipeline.catalog import BindingSpec, MaterializationSpec
from pipeline.figures import Figure


class Sink(ABC):
    """A materialization endpoint."""

    def __init__(self, spec: MaterializationSpec, topics: Mapping[str, BindingSpec]) -> None:
        self.spec = spec
        self.topics = topics
        """Source topic name -> its binding."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect; create what is missing."""

    async def positions(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        """Where each partition resumes; None for the consumer group's committed offset."""
        return dict.fromkeys(partitions)

    @abstractmethod
    async def apply(self, binding: BindingSpec, records: Sequence[ConsumerRecord]) -> None:
        """Buffer a batch's records of one binding (one partition, offset order)."""

    @abstractmethod
    async def flush(self) -> dict[TopicPartition, int]:
        """Make everything applied durable; return offsets now safe to commit."""

    def figures(self) -> Sequence[Figure]:
        """This sink's own metrics (`pipeline.runtime.metrics`); read from the worker's thread."""
        return ()

    async def revoke(self, partitions: Sequence[TopicPartition]) -> None:  # noqa: B027
        """Forget buffered work of partitions another worker now owns (it resumes them)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Called after the last flush."""

    async def __aenter__(self) -> Sink:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class BatchingSink(Sink):
    """Combines per key before each write: a subclass implements only `write`.

    Documents of derived collections are whole current documents, so combining keeps each key's
    last record; it is decoded only if the subclass needs it, once per key and write. `through`
    tells the subclass the offsets the batch covers (its checkpoint).
    """

    def __init__(self, spec: MaterializationSpec, topics: Mapping[str, BindingSpec]) -> None:
        super().__init__(spec, topics)
        self._pending: dict[BindingSpec, dict[bytes | None, ConsumerRecord]] = {}
        self._through: dict[TopicPartition, int] = {}

    async def apply(self, binding: BindingSpec, records: Sequence[ConsumerRecord]) -> None:
        latest = self._pending.setdefault(binding, {})
        for record in records:
            latest[record.key] = record
        if records:
            last = records[-1]
            self._through[TopicPartition(last.topic, last.partition)] = last.offset + 1

    async def flush(self) -> dict[TopicPartition, int]:
        if not self._through:
            return {}
        batch = {b: list(latest.values()) for b, latest in self._pending.items() if latest}
        through = self._through
        await self.write(batch, through)
        self._pending, self._through = {}, {}
        return through

    @abstractmethod
    async def write(
        self,
        batch: Mapping[BindingSpec, list[ConsumerRecord]],
        through: Mapping[TopicPartition, int],
    ) -> None:
        """Write each binding's records (the last one per key) and the checkpoint, atomically."""
