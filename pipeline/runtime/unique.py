"""The unique stage (`UniqueTask`, only when a property is `unique: true`): the index of unique
values, partitioned by (property, value), telling each claimant who holds its value. The claims
and tells it exchanges with the records stage are described in `pipeline.runtime.profiles`; who
holds a value is `derivations.profiles.uniqueness`'s to say."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from derivations.profiles import uniqueness
from pipeline.catalog import Catalog
from pipeline.runtime.groups import record_key
from pipeline.runtime.identity import Stage
from pipeline.runtime.profiles import INDEX
from pipeline.runtime.state import PartitionState
from pipeline.runtime.task import BatchResult


class UniqueTask(Stage):
    """Stage 3: the index of unique values, telling claimants who holds theirs
    (`pipeline.runtime.profiles` says how)."""

    def __init__(self, catalog: Catalog, source: str, topic_of: Callable[[str], str]) -> None:
        super().__init__(catalog, source, topic_of)
        self.tells = self.into_records
        self.outputs = [self.tells]

    def process_documents(
        self, items: Sequence[tuple[Any, int]], state: PartitionState
    ) -> BatchResult:
        result = BatchResult(events=len(items))
        before: dict[str, uniqueness.Entry] = {}
        after: dict[str, uniqueness.Entry] = {}
        values: dict[str, tuple[str, Any]] = {}
        for doc, _ in items:
            key = doc["k"]
            entry = after.get(key)
            if entry is None:
                stored = state.get(INDEX + key.encode())
                entry = before[key] = {} if stored is None else orjson.loads(stored)
                values[key] = doc["p"], doc["v"]
            if "s" in doc:
                after[key] = uniqueness.claim(entry, doc["r"], doc["s"])
            else:
                after[key] = uniqueness.release(entry, doc["r"])
        dumps = orjson.dumps
        for key, entry in after.items():
            was = before[key]
            if entry == was:
                continue
            result.changes[INDEX + key.encode()] = dumps(entry) if entry else None
            holder = uniqueness.holder(entry)
            prop, value = values[key]
            for record_id in uniqueness.to_tell(was, entry):
                tell = {"r": record_id, "k": prop, "v": value, "h": holder}
                result.documents.append((self.tells, record_key(record_id), dumps(tell)))
        return result
