"""`python -m bench.profiles`: product events end to end (events -> records in Postgres).

One `segflow worker` process with the shipped catalog (its dozen properties) on the embedded
broker and Postgres. The events (a merge-heavy stream: ~30% anonymous, 20% of people on two
devices, `tests.fixtures.profiles.product_events`) are written first, keyed as our producers key
them. The clock runs from the worker's launch (its start-up and the broker's JoinGroup included,
as in `make bench`) to the moment `profile_records` holds exactly the reference records
(`reference_records`, checked row by row: a wrong run is reported, not timed). Writes
`bench/profiles.json`; `docs/benchmarks.md` quotes it. BENCH_KEEP=1 keeps the logs and state;
BENCH_WORKER replaces `pipeline.tools.cli worker` (e.g. to run it under cProfile).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.harness.procs import ROOT, launch, segflow_env, total_cpu
from bench.harness.workload import produce
from pipeline.catalog import load_catalog
from pipeline.runtime.topics import Names, ensure_topics, partition_for, pipeline_topics
from pipeline.tools.embedded import start_broker, start_postgres
from tests.fixtures.profiles import product_events, reference_records

EVENTS = "profile/events"


async def rows(dsn: str, schema: str) -> list[Any] | None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        try:
            cursor = await conn.execute(
                f'select document from "{schema}".profile_records order by id'
            )
        except psycopg.errors.UndefinedTable:
            return None
        return [row[0] for row in await cursor.fetchall()]


async def count(dsn: str, schema: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        try:
            cursor = await conn.execute(f'select count(*) from "{schema}".profile_records')
        except psycopg.errors.UndefinedTable:
            return 0
        found = await cursor.fetchone()
        return int(found[0]) if found else 0


async def amain(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="segflow-bench-profiles-"))
    catalog = load_catalog(ROOT / "catalog", env={})
    events = product_events(args.events, seed=args.seed, people=max(1, args.events // 7))
    want = reference_records(catalog, events)
    (stage,) = catalog.derivations_from(EVENTS)
    key = stage.shuffle_encoder()
    partitions = catalog.collections[EVENTS].partitions
    records = [(partition_for(k := key(e), partitions), k, orjson.dumps(e)) for e in events]
    merges = sum(1 for e in events if e["type"] == "signin")
    print(f"profiles: {len(events):,} events, {len(want):,} records, {merges:,} sign-ins")
    broker, pg = start_broker(tmp / "broker"), start_postgres(tmp / "pg")
    prefix, schema = "bench.", "bench_profiles"
    try:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute(f"create schema if not exists {schema}")
        names = Names(prefix)
        await ensure_topics(broker.bootstrap, pipeline_topics(catalog, names))
        await produce(broker.bootstrap, names.collection(EVENTS), records)
        env = segflow_env(broker.bootstrap, prefix, tmp / "state", pg.dsn, schema, "")
        worker = launch(
            os.environ.get("BENCH_WORKER", "pipeline.tools.cli worker"), [env], tmp / "logs"
        )
        started = first = time.monotonic()
        cpu_before = 0.0
        try:
            while await count(pg.dsn, schema) == 0:
                await asyncio.sleep(0.05)
            first = time.monotonic()
            cpu_before = sum(total_cpu(p) for p in worker.tree())
            while True:
                if await count(pg.dsn, schema) == len(want):
                    got = await rows(pg.dsn, schema)
                    if got == want:
                        break
                if worker.exited():
                    print(worker.log_tail(), file=sys.stderr)
                    return 1
                if time.monotonic() - first > args.timeout:
                    print("profiles: WRONG or too slow: the table never equalled the reference")
                    return 1
                await asyncio.sleep(0.2)
            done = time.monotonic()
            cpu = sum(total_cpu(p) for p in worker.tree()) - cpu_before
        finally:
            worker.stop()
        seconds = done - started
        result = {
            "date": datetime.now(UTC).date().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "events": len(events),
            "records": len(want),
            "sign_ins": merges,
            "seconds": round(seconds, 2),
            "events_per_second": round(len(events) / seconds),
            "worker_cpu_us_per_event": round(cpu / len(events) * 1e6, 1),
            "seconds_from_first_row": round(done - first, 2),
            "events_per_second_from_first_row": round(len(events) / (done - first)),
        }
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        (ROOT / "bench" / "profiles.json").write_bytes(
            orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n"
        )
        return 0
    finally:
        pg.stop()
        broker.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0)
    return asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
