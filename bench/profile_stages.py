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

from bench.harness.procs import ROOT
from bench.harness.stages import Stages
from pipeline.catalog import load_catalog
from tests.fixtures.profiles import product_events


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
    stages = Stages(catalog, batch=args.batch)
    gc.collect()
    gc.freeze()
    gc.disable()
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(stages.run, events)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return 0
    figures = stages.run(events)
    total = sum(figures.cpu.values())
    for source in stages.sources:
        print(f"{source:<28} {figures.cpu[source]:6.2f} s CPU")
    print(
        f"{len(events):,} events, {figures.documents[catalog.profiles.records]:,} records"
        f" documents: {total:.2f} s, {total / len(events) * 1e6:.1f} µs of stage CPU per event"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
