"""Local state of one shuffle partition: RocksDB through rocksdict, mirrored to a changelog.

The changelog partition holds every state change as a record keyed like the local key, and after
each batch a commit marker carrying the next input offsets (of the shuffle partition and of the
source partition read directly). Commit order of a batch:

1. derived documents (and source records re-routed to other partitions' owners) are produced
   and acknowledged;
2. the batch's state changes are produced to the changelog, then the marker; acknowledged;
3. the changes, the marker's changelog position and the input position are written locally in
   one RocksDB write batch;
4. (the consumer offset is committed, for lag figures only: the marker is authoritative).

A crash between 1 and 3 replays the batch from the previous marker: the same documents are
produced again (same keys, same content) and no state is applied twice. Changelog records after
the last marker are a torn batch: a restoring owner rolls them back by writing the committed
values again, followed by a marker, so every later reader sees committed state only.

Local writes skip RocksDB's write-ahead log: the changelog already is one. A crash may take the
last writes, but never part of one (a write batch, positions included, lands whole in the
memtable), so the state reopens at an earlier position and restoring replays the changelog from
there.
"""

from __future__ import annotations

import functools
import logging
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from rocksdict import (
    BlockBasedOptions,
    Cache,
    Options,
    Rdict,
    WriteBatch,
    WriteBufferManager,
    WriteOptions,
)

from pipeline.errors import BrokerStateLost
from pipeline.runtime.batches import BatchWriter
from pipeline.runtime.topics import OffsetBeyondEnd, read_to_end

log = logging.getLogger(__name__)

META = b"\x00meta"
MARKER = b"\x00commit"
WINDOWED = (b"d:", b"m:")
"""Prefixes of the entries remembering an id for a dedup window: events and import rows applied
(`d:`), merges moved (`m:`); the value is the record timestamp (ms, 8 bytes big-endian) of the
id's acceptance."""
EXPIRY = b"\x00x:"
"""The local index of windowed entries by time: EXPIRY + timestamp + key. Never in the changelog:
`apply` keeps it, for restored changes too."""

Changes = dict[bytes, bytes | None]

BLOCK_CACHE_BYTES = 64 << 20
MEMTABLE_BYTES = 128 << 20
"""RocksDB memory of a whole worker process, however many partitions it owns: one block cache,
and memtables (charged to that cache) capped together. RocksDB's defaults (an 8 MiB cache and
up to two 64 MiB memtables per database) grow with the partition count instead."""


@functools.cache
def _memory() -> tuple[Cache, WriteBufferManager]:
    """The process's block cache and memtable cap, made on first use."""
    cache = Cache(BLOCK_CACHE_BYTES)
    return cache, WriteBufferManager.new_write_buffer_manager_with_cache(
        MEMTABLE_BYTES, False, cache
    )


def _options() -> Options:
    cache, memtables = _memory()
    options = Options(raw_mode=True)
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    table.set_bloom_filter(10, False)  # most reads are of keys the batch has not seen yet
    options.set_block_based_table_factory(table)
    options.set_write_buffer_manager(memtables)
    options.set_write_buffer_size(16 << 20)
    return options


class PartitionState:
    """RocksDB for one partition, with the changelog and input positions it reflects."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = Rdict(str(path), options=_options())
        self._write_options = WriteOptions()
        # The changelog is the log (module docstring). rocksdict's stub calls this a method; it
        # is a property.
        self._write_options.disable_wal = True  # type: ignore[assignment,method-assign]
        meta = self.db.get(META)
        position = orjson.loads(meta) if meta else {}
        self.changelog_next: int = position.get("changelog", 0)
        self.input_next: int = position.get("input", 0)
        """Next offset of the shuffle partition."""
        self.source_next: int = position.get("source", 0)
        """Next offset of the source partition with the same number (read directly)."""
        if not position.get("indexed"):
            self._index_windowed()

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.db.get(key)
        return value

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        # One get per key: rocksdict's multi-get costs more per key (≈1.7 µs against ≈1 µs).
        get = self.db.get
        return [get(key) for key in keys]

    def keys_from(self, start: bytes) -> Iterator[bytes]:
        """Stored keys from `start` on, in order (the caller stops when it has seen enough)."""
        it = self.db.iter()
        it.seek(start)
        while it.valid():
            yield it.key()
            it.next()

    def apply(
        self,
        changes: Mapping[bytes, bytes | None],
        changelog_next: int,
        input_next: int,
        source_next: int | None = None,
        forgotten: Iterable[bytes] = (),
    ) -> None:
        """Write changes and positions atomically; `forgotten` are expiry index entries to
        delete (local only: `expired`)."""
        batch = WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
                if key[:2] in WINDOWED and (before := self.db.get(key)) is not None:
                    batch.delete(EXPIRY + before + key)  # a restored deletion
            else:
                batch.put(key, value)
                if key[:2] in WINDOWED:
                    batch.put(EXPIRY + value + key, b"")
        for key in forgotten:
            batch.delete(key)
        source_next = self.source_next if source_next is None else source_next
        position = {
            "changelog": changelog_next,
            "input": input_next,
            "source": source_next,
            "indexed": True,
        }
        batch.put(META, orjson.dumps(position))
        self.db.write(batch, self._write_options)
        self.changelog_next = changelog_next
        self.input_next = input_next
        self.source_next = source_next

    def expired(self, cutoff: int, limit: int) -> tuple[Changes, list[bytes]]:
        """Up to `limit` windowed entries accepted before `cutoff` (ms): their deletions (for the
        changelog too) and the index entries they leave (`apply(forgotten=...)`). An entry
        accepted again since keeps its newer acceptance; only its old index entry goes."""
        deletions: Changes = {}
        forgotten: list[bytes] = []
        stop = EXPIRY + cutoff.to_bytes(8, "big")
        for index_key in self.keys_from(EXPIRY):
            if index_key >= stop or not index_key.startswith(EXPIRY) or len(forgotten) >= limit:
                break
            forgotten.append(index_key)
            accepted, key = index_key[len(EXPIRY) : len(EXPIRY) + 8], index_key[len(EXPIRY) + 8 :]
            if self.db.get(key) == accepted:
                deletions[key] = None
        return deletions, forgotten

    def _index_windowed(self) -> None:
        """Index the windowed entries of a state written before the expiry index existed."""
        batch = WriteBatch(raw_mode=True)
        for prefix in WINDOWED:
            it = self.db.iter()
            it.seek(prefix)
            while it.valid() and it.key().startswith(prefix):
                batch.put(EXPIRY + it.value() + it.key(), b"")
                it.next()
        meta = self.db.get(META)
        position = {**(orjson.loads(meta) if meta else {}), "indexed": True}
        batch.put(META, orjson.dumps(position))
        self.db.write(batch, self._write_options)

    def size(self) -> tuple[int, int]:
        """(keys, bytes): RocksDB's estimate of the keys, and its SST files and memtables."""
        prop = self.db.property_int_value
        keys = prop("rocksdb.estimate-num-keys") or 0
        size = (prop("rocksdb.total-sst-files-size") or 0) + (
            prop("rocksdb.cur-size-all-mem-tables") or 0
        )
        return keys, size

    def close(self) -> None:
        self.db.close()

    def wipe(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


def marker(input_next: int, source_next: int) -> bytes:
    return orjson.dumps({"input": input_next, "source": source_next})


def add_changelog(
    writer: BatchWriter,
    tp: TopicPartition,
    changes: Mapping[bytes, bytes | None],
    input_next: int,
    source_next: int,
) -> None:
    """Add a batch's changes and then its marker; the marker is the partition's last record."""
    writer.add_many(tp.topic, tp.partition, changes.items())
    writer.add(tp.topic, tp.partition, MARKER, marker(input_next, source_next))


async def restore(
    bootstrap: str,
    producer: AIOKafkaProducer,
    states: dict[TopicPartition, PartitionState],
) -> None:
    """Bring each partition's local state up to its changelog's last marker (`states` by
    changelog partition: every changelog is read at once, by one consumer).

    Raises BrokerStateLost when a changelog is shorter than what the local state was built
    from: the broker lost data (the embedded broker keeps nothing across its restarts).
    """
    starts = {tp: s.changelog_next for tp, s in states.items()}
    torn: dict[TopicPartition, Changes] = {tp: {} for tp in states}
    applied: dict[str, int] = {}
    try:
        async for records in read_to_end(bootstrap, starts):
            for record in records:
                tp = TopicPartition(record.topic, record.partition)
                if record.key == MARKER:
                    state = states[tp]
                    position = orjson.loads(record.value)
                    state.apply(
                        torn[tp], record.offset + 1, position["input"], position.get("source", 0)
                    )
                    applied[tp.topic] = applied.get(tp.topic, 0) + len(torn[tp])
                    torn[tp] = {}
                else:
                    torn[tp][record.key] = record.value
    except OffsetBeyondEnd as exc:
        state = states[exc.tp]
        raise BrokerStateLost(
            f"changelog {exc.tp.topic}[{exc.tp.partition}] ends before offset {exc.offset}, "
            f"which the local state in {state.path} was built from: the broker lost its data "
            "(the embedded broker keeps nothing across restarts). Delete that directory, or set "
            "SEGFLOW_ON_STATE_LOST=rebuild, to rebuild from what the broker has now."
        ) from exc
    for tp, changes in torn.items():
        if not changes:
            continue
        state = states[tp]
        rollback = dict(zip(changes, state.get_many(list(changes)), strict=True))
        writer = BatchWriter(producer)
        add_changelog(writer, tp, rollback, state.input_next, state.source_next)
        state.apply({}, (await writer.flush())[tp], state.input_next)
        log.warning(
            "%s[%d]: rolled back %d change(s) of a batch that did not commit",
            tp.topic,
            tp.partition,
            len(changes),
        )
    for topic, count in sorted(applied.items()):
        if count:
            log.info("%s: restored %d change(s) from the changelog", topic, count)
