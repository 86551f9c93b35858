"""`python -m bench.memory`: a Segflow worker's peak RSS with a million users in state.

The demo's generator, except that each new event goes to the next user in turn (redeliveries
keep their event's user), so `--users` distinct users are all in state after about
`--users / (1 - repeat ratio)` events, not the several times more uniform picks would need.
One `segflow worker` process (derivations, Postgres and webhook materializations) on the
embedded broker and Postgres; RSS is sampled every 200 ms until every profile row is in Postgres.
Writes `bench/memory.json` (not run by `make bench`: it takes several minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.harness.procs import ROOT, launch, segflow_env
from bench.harness.receiver import Receiver
from bench.harness.workload import create_topic, encode, mix, produce
from pipeline.producers.generate import EventGenerator
from pipeline.tools.embedded import start_broker, start_postgres


def events(users: int, count: int) -> list[dict[str, Any]]:
    """`count` demo events, new events spread over users in turn."""
    user_of: dict[str, str] = {}
    out = []
    for event in EventGenerator(mix(users), seed=1).take(count):
        user = user_of.setdefault(event["event"], f"usr-{len(user_of) % users:07d}")
        out.append({**event, "user": user})
    return out


async def amain(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="segflow-memory-"))
    generated = events(args.users, args.events)
    users = len({e["user"] for e in generated})
    records = [encode(e) for e in generated]
    del generated
    print(f"memory: {len(records):,} events for {users:,} users", flush=True)
    broker, pg, receiver = start_broker(tmp / "broker"), start_postgres(tmp / "pg"), Receiver()
    await receiver.start()
    try:
        topic = "memory.segment.events"
        await create_topic(broker.bootstrap, topic)
        await produce(broker.bootstrap, topic, records)
        del records
        env = segflow_env(
            broker.bootstrap, "memory.", tmp / "state", pg.dsn, "memory", receiver.url("memory")
        )
        started = time.monotonic()
        worker = launch("pipeline.tools.cli worker", [env], tmp / "logs")
        conn = await psycopg.AsyncConnection.connect(pg.dsn, autocommit=True)
        profiles = 0
        try:
            while profiles < users:
                await asyncio.sleep(0.2)
                worker.sample()
                if worker.exited():
                    print(worker.log_tail(), file=sys.stderr)
                    return 1
                try:
                    cur = await conn.execute("select count(*) from memory.segment_profiles")
                    profiles = (await cur.fetchone() or (0,))[0]
                except psycopg.errors.UndefinedTable:
                    pass
            seconds = time.monotonic() - started
            state = sum(f.stat().st_size for f in (tmp / "state").rglob("*") if f.is_file())
        finally:
            worker.stop()
            await conn.close()
        result = {
            "users_in_state": users,
            "events": args.events,
            "seconds": round(seconds, 1),
            "peak_rss_mib": round(worker.peak_rss / 2**20, 1),
            "state_on_disk_mib": round(state / 2**20, 1),
        }
        print(f"memory: {orjson.dumps(result).decode()}")
        Path(args.results).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    finally:
        await receiver.stop()
        pg.stop()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--events", type=int, default=1_700_000)
    p.add_argument("--results", default=str(ROOT / "bench" / "memory.json"))
    return asyncio.run(amain(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
