"""`python -m bench.profile_stages`: the CPU of the profile stages alone, without broker or sink.

The identity, records and unique stages of the shipped catalog run in this process over the
same product events as `bench.profiles` (200k by default), with in-memory state and queues
standing for the topics between them, in batches of `--batch` documents per partition. It prints
each stage's CPU seconds and the total per event: a steady figure to compare changes to the
stages' code by, where the end-to-end benchmark moves by ±15% from run to run on this machine.
The cyclic garbage collector is off, as the worker pauses it during a batch. `--profile` prints
the top of a cProfile run instead.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from collections import defaultdict
from typing import Any

import orjson

from bench.harness.procs import ROOT
from pipeline.catalog import load_catalog
from pipeline.catalog.profiles import internal_collections
from pipeline.runtime.derive import make_task
from pipeline.runtime.topics import partition_for
from tests.fixtures.profiles import product_events


class MemoryState(dict[bytes, bytes]):
    """A partition's state in a dict, committed after each batch."""

    def get(self, key: bytes, default: Any = None) -> bytes | None:  # type: ignore[override]
        return super().get(key, default)

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        return [self.get(key) for key in keys]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=5000, help="documents per partition batch")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    catalog = load_catalog(ROOT / "catalog", env={})
    assert catalog.profiles is not None
    events = product_events(args.events, seed=args.seed, people=max(1, args.events // 7))
    sources = [catalog.profiles.events, *internal_collections(catalog.profiles)]
    tasks = {s: make_task(catalog, s, lambda name: name) for s in sources}
    partitions = {s: catalog.collections[s].partitions for s in sources}
    queues: dict[str, dict[int, list[tuple[Any, int]]]] = {s: defaultdict(list) for s in sources}
    states = {s: [MemoryState() for _ in range(partitions[s])] for s in sources}
    first = sources[0]
    for i, event in enumerate(events):
        partition = partition_for(tasks[first].shuffle_key(event), partitions[first])
        queues[first][partition].append((event, 1_000 + i))
    cpu: dict[str, float] = defaultdict(float)
    written = 0

    def run() -> None:
        nonlocal written
        while any(q for s in sources for q in queues[s].values()):
            for source in sources:
                for partition, queue in list(queues[source].items()):
                    if not queue:
                        continue
                    batch, queues[source][partition] = queue[: args.batch], queue[args.batch :]
                    state = states[source][partition]
                    started = time.process_time()
                    result = tasks[source].process_documents(batch, state)  # type: ignore[arg-type]
                    for key, value in result.changes.items():
                        if value is None:
                            state.pop(key, None)
                        else:
                            state[key] = value
                    cpu[source] += time.process_time() - started
                    for output, key, value in result.documents:
                        name = output.spec.name
                        if name not in queues:
                            written += 1
                            continue
                        by_key = output.by_key
                        target = partition_for(key, partitions[name]) if by_key else partition
                        queues[name][target].append((orjson.loads(value), 2_000))

    gc.collect()
    gc.freeze()
    gc.disable()
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return 0
    run()
    total = sum(cpu.values())
    for source in sources:
        print(f"{source:<28} {cpu[source]:6.2f} s CPU")
    print(
        f"{len(events):,} events, {written:,} records documents: {total:.2f} s,"
        f" {total / len(events) * 1e6:.1f} µs of stage CPU per event"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
