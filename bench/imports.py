"""`python -m bench.imports`: issue 16's import goal — 1M rows in pages of 10k into records at
≥ 50k rows/s — on the embedded broker and Postgres of this machine.

A source table `users(id, plan, seats, updated_at)` of `--rows` rows (three rows per watermark
value, so pages cut through ties; an index on the watermark, as a warehouse table read by
watermark has) in a database of its own. Two measurements:
- `read`: the import reader alone (`ImportRunner.run_once` in this process): rows read from
  Postgres, page by page, and acknowledged by the broker, per second;
- `end_to_end`: a `segflow worker` subprocess whose schedule runs the import at start: from the
  first row written (the worker's `/metrics`, `segflow_import_rows_total`) until every row is
  applied to its record (`segflow_profile_import_rows_applied_total`), per second. Every row
  names a new person, so each makes a record.
Figures go to `bench/imports.json`. BENCH_KEEP=1 keeps the temporary directory.
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
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg

from bench.harness.metrics import parse_metrics
from bench.harness.procs import launch, segflow_env

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "imports.json"

CATALOG = """\
collections:
  profile/events:
    schema: {schemas}/profile-event.schema.yaml
    key: [/id]
    partitions: 4
    dedup: 7d
  profile/records:
    schema: {schemas}/profile-record.schema.yaml
    key: [/id]
    partitions: 4
profiles:
  properties:
    plan:  {{type: string, from: {{import: warehouse, column: plan}}}}
    seats: {{type: integer, from: {{import: warehouse, column: seats}}}}
imports:
  warehouse:
    postgres: {{dsn: "{dsn}", table: users}}
    watermark: updated_at
    interval: 1h
    pageSize: {page}
    identity: {{userId: id}}
"""


def create_source(dsn: str, rows: int) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("drop database if exists bench_warehouse")
        conn.execute("create database bench_warehouse")
    source = psycopg.conninfo.make_conninfo(dsn, dbname="bench_warehouse")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("create table users (id int, plan text, seats int, updated_at bigint)")
        conn.execute(
            "insert into users select i, (array['free','starter','pro','enterprise'])[1 + i %% 4],"
            " 1 + i %% 7, i / 3 from generate_series(1, %s) as i",
            (rows,),
        )
        conn.execute("create index on users (updated_at)")
        conn.execute("analyze users")
    return source


async def read_only(catalog_dir: Path, broker: str, dsn: str) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    from pipeline.catalog import load_catalog
    from pipeline.runtime.imports import Checkpoints, ImportRunner
    from pipeline.runtime.topics import Names, ensure_topics, pipeline_topics

    catalog = load_catalog(catalog_dir, env={})
    names = Names("read.")
    await ensure_topics(broker, pipeline_topics(catalog, names))
    producer = AIOKafkaProducer(
        bootstrap_servers=broker, acks="all", linger_ms=5, max_batch_size=1024 * 1024
    )
    await producer.start()

    try:
        runner = ImportRunner(
            catalog.imports["warehouse"], catalog, names, Checkpoints(dsn, "public"), producer
        )
        began = time.perf_counter()
        cpu = time.process_time()
        written = await runner.run_once() or 0
        seconds = time.perf_counter() - began
        cpu = time.process_time() - cpu
    finally:
        await producer.stop()
    return {
        "rows": written,
        "pages": runner.stats.pages,
        "seconds": round(seconds, 2),
        "rows_per_s": round(written / seconds),
        "reader_cpu_s": round(cpu, 2),
    }


async def end_to_end(
    catalog_dir: Path, broker: str, dsn: str, rows: int, tmp: Path
) -> dict[str, Any]:
    from pipeline.catalog import load_catalog
    from pipeline.runtime.topics import Names, ensure_topics, pipeline_topics
    from pipeline.tools.embedded import free_port

    catalog = load_catalog(catalog_dir, env={})
    await ensure_topics(broker, pipeline_topics(catalog, Names("e2e.")))
    port = free_port()
    env = segflow_env(broker, "e2e.", tmp / "state", dsn, "e2e", "")
    env |= {"SEGFLOW_CATALOG": str(catalog_dir), "SEGFLOW_METRICS_ADDR": f"127.0.0.1:{port}"}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create schema if not exists e2e")
    worker = launch("pipeline.tools.cli worker", [env], tmp / "logs")
    first: float | None = None
    samples = []
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                if worker.exited():
                    print(worker.log_tail(), file=sys.stderr)
                    raise SystemExit(1)
                try:
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as answer:
                        figures = parse_metrics(await answer.text())
                except aiohttp.ClientError:
                    await asyncio.sleep(0.2)
                    continue
                now = time.time()
                wrote = "segflow_import_rows_total"
                read = sum(v for k, v in figures.items() if k.startswith(wrote))
                applied = figures.get("segflow_profile_import_rows_applied_total", 0)
                if first is None and read > 0:
                    first = now
                samples.append((round(now - (first or now), 1), int(read), int(applied)))
                worker.sample()
                if applied >= rows:
                    break
                await asyncio.sleep(0.5)
    finally:
        worker.stop()
    assert first is not None
    seconds = time.time() - first
    return {
        "rows": rows,
        "seconds": round(seconds, 1),
        "rows_per_s": round(rows / seconds),
        "worker_cpu_s": round(worker.cpu_seconds(), 1),
        "peak_rss_mib": round(worker.peak_rss / 2**20),
        "progress": samples[:: max(1, len(samples) // 12)],
    }


async def main(args: argparse.Namespace) -> int:
    from pipeline.tools.embedded import start_broker, start_postgres

    tmp = Path(tempfile.mkdtemp(prefix="bench-imports-"))
    broker = start_broker(tmp / "broker")
    postgres = start_postgres(tmp / "pg")
    try:
        began = time.perf_counter()
        source = create_source(postgres.dsn, args.rows)
        print(f"imports: {args.rows:,} rows created in {time.perf_counter() - began:.1f}s")
        directory = tmp / "catalog"
        directory.mkdir()
        text = CATALOG.format(schemas=ROOT / "schemas", dsn=source, page=args.page)
        (directory / "imports.yaml").write_text(text)
        read = await read_only(directory, broker.bootstrap, postgres.dsn)
        print(f"read: {read}")
        e2e = await end_to_end(directory, broker.bootstrap, postgres.dsn, args.rows, tmp)
        print(f"end to end: { {k: v for k, v in e2e.items() if k != 'progress'} }")
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "rows": args.rows,
            "page_size": args.page,
            "read": read,
            "end_to_end": e2e,
            "goal_rows_per_s": 50_000,
        }
        OUT.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        print(f"wrote {OUT.relative_to(ROOT)}")
    finally:
        postgres.stop()
        broker.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--page", type=int, default=10_000)
    sys.exit(asyncio.run(main(parser.parse_args())))
