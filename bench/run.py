"""`python -m bench.run`: Segflow against naive Faust and Quix Streams on the same workload.

One embedded broker (Tansu) and one embedded Postgres are started for the whole benchmark.
Every run gets fresh topics, a fresh Postgres schema and fresh state directories; runs of the
implementations are interleaved over `--reps` repetitions and medians are reported. Every run's
three tables are checked row by row against the sequential reference of the spec
(`tests.fixtures.events.reference`); a run whose rows differ is WRONG and does not count.

Writes `bench/results.json`, `docs/benchmarks.md` and `docs/benchmarks.png`. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
import psycopg
from psycopg import sql

from bench.harness import check as checks
from bench.harness import report
from bench.harness.procs import (
    ROOT,
    Launched,
    free_addresses,
    launch,
    postmaster,
    segflow_env,
    total_cpu,
)
from bench.harness.receiver import Receiver
from bench.harness.workload import (
    PARTITIONS,
    WORKLOADS,
    Expected,
    Record,
    create_topic,
    delete_topics,
    encode,
    expected,
    generate,
    mix,
    produce,
)
from pipeline.documents.pointers import encode_key
from pipeline.runtime.batches import BatchWriter
from pipeline.runtime.produce import make_producer
from pipeline.runtime.topics import partition_for
from pipeline.tools.embedded import EmbeddedBroker, EmbeddedPostgres, start_broker, start_postgres

POLL_S = 0.1
"""Throughput runs: least time between two progress polls of the tables."""
POLL_SHARE = 10
"""…and at least this many times the last poll's own duration (a scan of every table)."""
PROBE_VENDOR = 9999
PROBE_SEGMENT = "bench-probe"
"""Probe events go to their own segment, so finding them uses the memberships' primary key."""


@dataclass(frozen=True)
class Impl:
    id: str
    family: str
    label: str
    module: str
    processes: int = 1

    @property
    def segflow(self) -> bool:
        return self.family == "segflow"


IMPLS = [
    Impl("segflow-1p", "segflow", "Segflow (1 process)", "pipeline.tools.cli worker", 1),
    Impl("segflow-2p", "segflow", "Segflow (2 processes)", "pipeline.tools.cli worker", 2),
    Impl("naive-faust", "naive-faust", "naive Faust", "bench.peers.naive_faust"),
    Impl("quix", "quix", "Quix Streams", "bench.peers.quix"),
    Impl("bytewax", "bytewax", "Bytewax (2 processes)", "bench.peers.bytewax", 2),
]
ALIASES = {
    "faust": "naive-faust",
    "naive_faust": "naive-faust",
    "quixstreams": "quix",
    "bytewax-2p": "bytewax",
}


def select(only: str | None) -> list[Impl]:
    if not only:
        return list(IMPLS)
    wanted = [ALIASES.get(w.strip(), w.strip()) for w in only.split(",") if w.strip()]
    chosen = [i for i in IMPLS if i.id in wanted or i.family in wanted]
    unknown = [w for w in wanted if not any(w in (i.id, i.family) for i in IMPLS)]
    if unknown:
        names = sorted({i.id for i in IMPLS} | {i.family for i in IMPLS})
        raise SystemExit(f"bench: unknown implementation(s) {unknown}; choose from {names}")
    return chosen


def available(impl: Impl) -> str | None:
    """Why the implementation cannot run (None: it can)."""
    if impl.segflow:
        return None
    try:
        if importlib.util.find_spec(impl.module) is None:
            return f"module {impl.module} not found"
    except Exception as exc:
        return f"module {impl.module}: {type(exc).__name__}: {exc}"
    return None


@dataclass
class Context:
    args: argparse.Namespace
    tmp: Path
    broker: EmbeddedBroker
    postgres: EmbeddedPostgres
    receiver: Receiver
    records: list[Record]
    want: Expected
    seq: int = 0
    pg_proc: psutil.Process | None = None
    broker_proc: psutil.Process | None = None
    fresh_records: list[Record] = field(default_factory=list)

    def token(self, impl: Impl) -> str:
        self.seq += 1
        return f"r{self.seq:03d}_{impl.id.replace('-', '_')}"


@dataclass(frozen=True)
class Setup:
    token: str
    topic: str
    schema: str
    envs: list[dict[str, str]]
    state: Path


def setup(ctx: Context, impl: Impl, token: str) -> Setup:
    state = ctx.tmp / "runs" / token
    url = ctx.receiver.url(token)
    schema = token
    if impl.segflow:
        prefix = f"{token}."
        envs = [
            segflow_env(
                ctx.broker.bootstrap,
                prefix,
                state / f"p{i}",
                ctx.postgres.dsn,
                schema,
                url,
                alone=impl.processes == 1,
            )
            for i in range(impl.processes)
        ]
        return Setup(token, f"{prefix}segment.events", schema, envs, state)
    topic = f"{token}.events"
    addresses = ",".join(free_addresses(impl.processes))
    envs = [
        {
            "BENCH_BROKER": ctx.broker.bootstrap,
            "BENCH_TOPIC": topic,
            "BENCH_POSTGRES": ctx.postgres.dsn,
            "BENCH_SCHEMA": schema,
            "BENCH_WEBHOOK_URL": url,
            "BENCH_GROUP": token,
            "BENCH_STATE_DIR": str(state / f"p{i}"),
            "BENCH_PROCESS": str(i),
            "BENCH_PROCESSES": str(impl.processes),
            "BENCH_ADDRESSES": addresses,
        }
        for i in range(impl.processes)
    ]
    return Setup(token, topic, schema, envs, state)


async def cleanup(ctx: Context, s: Setup) -> None:
    """Drop the run's schema and topics (Tansu keeps everything in memory) and its state."""
    await checks.drop_schema(ctx.postgres.dsn, s.schema)
    await delete_topics(ctx.broker.bootstrap, s.token)
    ctx.receiver.forget(s.token)
    if not ctx.args.keep:  # --keep: the state and logs stay for a look
        shutil.rmtree(s.state, ignore_errors=True)


def infra_cpu(ctx: Context) -> tuple[float, float]:
    broker = total_cpu(ctx.broker_proc) if ctx.broker_proc else math.nan
    pg = total_cpu(ctx.pg_proc) if ctx.pg_proc else math.nan
    return broker, pg


# --- Throughput --------------------------------------------------------------------------------


async def throughput_run(ctx: Context, impl: Impl, rep: int) -> dict[str, Any]:
    result: dict[str, Any] = {"phase": "throughput", "impl": impl.id, "rep": rep}
    if why := available(impl):
        return {**result, "status": "MISSING", "error": why}
    s = setup(ctx, impl, ctx.token(impl))
    result["token"] = s.token
    want, args = ctx.want, ctx.args
    launched: Launched | None = None
    conn = await psycopg.AsyncConnection.connect(ctx.postgres.dsn, autocommit=True)
    try:
        await create_topic(ctx.broker.bootstrap, s.topic)
        result["produce_s"] = round(await produce(ctx.broker.bootstrap, s.topic, ctx.records), 2)
        broker0, pg0 = infra_cpu(ctx)
        started = time.monotonic()
        launched = launch(impl.module, s.envs, s.state / "logs")
        status, verdict, end = "TIMEOUT", None, None
        p = checks.Progress()
        last_full = -math.inf
        last_change, last_seen = started, None
        next_tick, interval, polling = started, POLL_S, 0.0
        while True:
            next_tick += interval
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            launched.sample()
            if codes := launched.exited():
                status = "FAILED"
                result["error"] = f"exited with code(s) {codes}"
                break
            polled = time.monotonic()
            p = await checks.progress(conn, s.schema)
            now = time.monotonic()
            polling += now - polled
            # The poll scans the tables: as they grow, poll less often, so that the harness
            # never takes more than about a tenth of a core from Postgres (and the workers).
            interval = max(POLL_S, POLL_SHARE * (now - polled))
            hooks = ctx.receiver.distinct(s.token)
            seen = (p.counts(), p.members, p.last_seconds, hooks)
            if seen != last_seen:
                last_seen, last_change = seen, now
            if (
                p.counts_match(want)
                and hooks >= want.toggle_ids
                and (p.aggregates_match(want) or now - last_full >= 2.0)
            ):
                last_full = now
                verdict = await checks.check(conn, s.schema, want)
                if verdict["ok"]:
                    status, end = "OK", now
                    break
            if now - last_change > args.stall and any(p.counts().values()):
                verdict = await checks.check(conn, s.schema, want)
                status = "OK" if verdict["ok"] else "WRONG"
                if not verdict["ok"]:
                    result["error"] = f"no progress for {args.stall:.0f}s with rows that differ"
                end = last_change if verdict["ok"] else None
                break
            if now - started > args.timeout:
                result["error"] = f"not done within {args.timeout:.0f}s"
                break
        launched.sample()
        broker1, pg1 = infra_cpu(ctx)
        elapsed = (end if end is not None else time.monotonic()) - started
        launched.stop()
        if verdict is None or (status == "TIMEOUT" and not verdict.get("ok")):
            verdict = await checks.check(conn, s.schema, want)  # what it got to, for the record
        if status == "TIMEOUT" and verdict.get("tables") and p.counts_match(want):
            status = "WRONG"  # the counts were there but the rows never were
        hooks = ctx.receiver.distinct(s.token)
        result.update(
            status=status,
            seconds=round(elapsed, 3),
            events=len(ctx.records),
            events_per_s=round(len(ctx.records) / elapsed) if status == "OK" else None,
            progress_polls_s=round(polling, 2),
            peak_rss_mib=round(launched.peak_rss / 2**20, 1),
            cpu_s={
                "workers": round(launched.cpu_seconds(), 2),
                "broker": round(broker1 - broker0, 2),
                "postgres": round(pg1 - pg0, 2),
            },
            webhook={
                "distinct": hooks,
                "total": ctx.receiver.total.get(s.token, 0),
                "requests": ctx.receiver.requests.get(s.token, 0),
                "expected": want.toggle_ids,
            },
            check=verdict,
        )
        if status != "OK" and launched is not None:
            result["log_tail"] = launched.log_tail()
        if status == "OK" and hooks != want.toggle_ids:
            result.update(status="WRONG", error=f"webhook got {hooks} distinct toggles")
    except Exception as exc:
        result.update(status="FAILED", error=f"{type(exc).__name__}: {exc}")
        if launched is not None:
            result["log_tail"] = launched.log_tail()
    finally:
        if launched is not None:
            launched.stop()
        await conn.close()
        await cleanup(ctx, s)
    return result


# --- Freshness ---------------------------------------------------------------------------------


def probe(n: int | str) -> dict[str, Any]:
    return {
        "event": str(uuid.uuid4()),
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "user": f"probe-{n}",
        "segment": {"vendor": PROBE_VENDOR, "name": PROBE_SEGMENT},
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest rank; values may hold inf (probes never seen)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


async def freshness_run(ctx: Context, impl: Impl) -> dict[str, Any]:
    result: dict[str, Any] = {"phase": "freshness", "impl": impl.id, "rate": ctx.args.rate}
    if why := available(impl):
        return {**result, "status": "MISSING", "error": why}
    s = setup(ctx, impl, ctx.token(impl))
    result["token"] = s.token
    args = ctx.args
    launched: Launched | None = None
    conn = await psycopg.AsyncConnection.connect(ctx.postgres.dsn, autocommit=True)
    producer = make_producer(ctx.broker.bootstrap, 5)
    table = sql.Identifier(s.schema, "segment_memberships")
    probes_query = sql.SQL(
        "select user_id from {} where vendor = %s and segment_name = %s and user_id like 'probe-%%'"
    ).format(table)
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    stopping = asyncio.Event()

    async def send_probe(n: int | str) -> None:
        doc = probe(n)
        key = encode_key((doc["user"],))
        future = await producer.send(
            s.topic, orjson.dumps(doc), key=key, partition=partition_for(key, PARTITIONS)
        )

        def on_ack(f: asyncio.Future[Any], user: str = doc["user"]) -> None:
            if not f.cancelled() and f.exception() is None:
                acked[user] = time.monotonic()

        future.add_done_callback(on_ack)

    async def look() -> None:
        """Note when each probe's row is first visible (the time the query was sent)."""
        asked = time.monotonic()
        cur = await conn.execute(probes_query, (PROBE_VENDOR, PROBE_SEGMENT))
        for (user,) in await cur.fetchall():
            seen.setdefault(user, asked)

    async def poll_probes() -> None:
        while not stopping.is_set():
            await look()
            await asyncio.sleep(0.015)

    try:
        await create_topic(ctx.broker.bootstrap, s.topic)
        await producer.start()
        started = time.monotonic()
        launched = launch(impl.module, s.envs, s.state / "logs")
        await send_probe("warmup")
        while "probe-warmup" not in seen:
            if codes := launched.exited():
                raise RuntimeError(f"exited with code(s) {codes} before it was up")
            if time.monotonic() - started > args.ready_timeout:
                raise TimeoutError(f"warm-up probe not visible within {args.ready_timeout:.0f}s")
            with contextlib.suppress(
                psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName
            ):
                await look()
            await asyncio.sleep(0.1)
        result["ready_s"] = round(seen["probe-warmup"] - started, 2)
        seen.clear()
        acked.clear()
        poller = asyncio.create_task(poll_probes())
        loop = asyncio.get_running_loop()
        flushes: set[asyncio.Task[Any]] = set()
        records = ctx.fresh_records
        sent = probes = tick = 0
        launched.sample()
        cpu0 = (launched.cpu_seconds(), *infra_cpu(ctx), time.process_time())
        begin = loop.time()
        while (elapsed := loop.time() - begin) < args.freshness_seconds:
            due = min(int(elapsed * args.rate) + 1, len(records)) - sent
            if due > 0:
                writer = BatchWriter(producer)
                for partition, key, value in records[sent : sent + due]:
                    writer.add(s.topic, partition, key, value)
                task = asyncio.create_task(writer.flush())
                flushes.add(task)
                task.add_done_callback(flushes.discard)
                sent += due
            while probes < int(elapsed * args.probe_rate) + 1:
                await send_probe(probes)
                probes += 1
            tick += 1
            await asyncio.sleep(max(0.0, begin + tick * 0.01 - loop.time()))
        produced_s = loop.time() - begin
        launched.sample()
        cpu1 = (launched.cpu_seconds(), *infra_cpu(ctx), time.process_time())
        if flushes:
            await asyncio.gather(*flushes)
        await producer.flush()
        acks_done = loop.time() - begin
        drain_until = time.monotonic() + args.drain
        while time.monotonic() < drain_until and not set(acked) <= set(seen):
            if launched.exited():
                break
            await asyncio.sleep(0.05)
        stopping.set()
        await poller
        latencies = [(seen[u] - t) if u in seen else math.inf for u, t in acked.items()]
        # The worst probe of each second of the phase: shows whether the tail is a stall
        # (start-up, a rebalance) or steady.
        worst: dict[int, float] = {}
        for user, t in acked.items():
            second = int(t - begin)  # the loop's clock is time.monotonic()
            late = seen[user] - t if user in seen else math.inf
            worst[second] = max(worst.get(second, 0.0), late)
        finite = [x for x in latencies if math.isfinite(x)]
        unseen = len(latencies) - len(finite)
        p50 = percentile(latencies, 50) if latencies else math.nan
        p99 = percentile(latencies, 99) if latencies else math.nan
        result.update(
            status="OK" if latencies and math.isfinite(p99) else "BEHIND",
            events=sent,
            achieved_rate=round(sent / acks_done),
            produce_s=round(produced_s, 2),
            # CPU seconds while producing; the harness produces and polls the probes.
            cpu_s={
                name: round(after - before, 2)
                for name, before, after in zip(
                    ("workers", "broker", "postgres", "harness"), cpu0, cpu1, strict=True
                )
            },
            probes=len(latencies),
            unseen=unseen,
            p50_ms=round(p50 * 1000, 1) if math.isfinite(p50) else None,
            p99_ms=round(p99 * 1000, 1) if math.isfinite(p99) else None,
            max_ms=round(max(finite) * 1000, 1) if finite else None,
            worst_ms_by_second=[
                round(worst[k] * 1000) if math.isfinite(worst[k]) else None for k in sorted(worst)
            ],
        )
        if unseen:
            result["error"] = (
                f"{unseen} of {len(latencies)} probes not visible "
                f"{args.drain:.0f}s after the last send"
            )
    except Exception as exc:
        result.update(status="FAILED", error=f"{type(exc).__name__}: {exc}")
        if launched is not None:
            result["log_tail"] = launched.log_tail()
    finally:
        stopping.set()
        if launched is not None:
            launched.stop()
        with contextlib.suppress(Exception):
            await producer.stop()
        await conn.close()
        await cleanup(ctx, s)
    return result


MEMORY = ROOT / "bench" / "memory.json"
"""`python -m bench.memory`'s result, reported with the targets (it is too slow for every run)."""


# --- The command -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "cpu": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": packages(),
    }


PACKAGES = (
    "aiokafka",
    "faust-streaming",
    "quixstreams",
    "bytewax",
    "psycopg",
    "rocksdict",
    "orjson",
)


def packages() -> dict[str, str | None]:
    """Versions of the libraries the implementations run on (peers move with them)."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def line(r: dict[str, Any]) -> str:
    if r["phase"] == "throughput":
        if r["status"] == "OK":
            return (
                f"  {r['impl']:<12} rep {r['rep'] + 1}: {r['events_per_s']:>9,} events/s"
                f" in {r['seconds']:.1f}s, RSS {r['peak_rss_mib']:.0f} MiB,"
                f" CPU workers {r['cpu_s']['workers']:.1f}s broker {r['cpu_s']['broker']:.1f}s"
                f" postgres {r['cpu_s']['postgres']:.1f}s"
            )
        return f"  {r['impl']:<12} rep {r['rep'] + 1}: {r['status']} {r.get('error', '')}"
    if r["status"] in ("OK", "BEHIND"):
        p50 = "—" if r["p50_ms"] is None else f"{r['p50_ms']:.0f} ms"
        p99 = "—" if r["p99_ms"] is None else f"{r['p99_ms']:.0f} ms"
        return (
            f"  {r['impl']:<12} freshness at {r['achieved_rate']:,}/s: p50 {p50}, p99 {p99}"
            f" ({r['probes']} probes, {r['unseen']} unseen; up in {r['ready_s']}s) {r['status']};"
            f" CPU s {' / '.join(f'{k} {v}' for k, v in r['cpu_s'].items())}"
        )
    return f"  {r['impl']:<12} freshness: {r['status']} {r.get('error', '')}"


async def amain(args: argparse.Namespace) -> int:
    impls = select(args.only)
    tmp = Path(tempfile.mkdtemp(prefix="segflow-bench-"))
    runs: list[dict[str, Any]] = []
    broker = pg = None
    receiver = Receiver()
    t0 = time.monotonic()
    host = machine()  # before we load the machine ourselves
    try:
        print(f"bench: generating {args.events:,} events and their reference rows…", flush=True)
        events = generate(args.events, users=args.users, seed=1, workload=args.workload)
        records = [encode(e) for e in events]
        want = expected(events)
        del events
        print(
            "bench: expected rows: "
            + ", ".join(f"{k} {v:,}" for k, v in want.counts().items())
            + f" ({want.toggle_ids:,} webhook toggles)",
            flush=True,
        )
        broker = start_broker(tmp / "broker")
        pg = start_postgres(tmp / "pg")
        await receiver.start()
        ctx = Context(args, tmp, broker, pg, receiver, records, want)
        ctx.broker_proc = psutil.Process(broker.process.pid)
        ctx.pg_proc = postmaster(tmp / "pg")
        print(f"bench: broker {broker.bootstrap}, Postgres up, webhook receiver :{receiver.port}")
        for rep in range(args.reps):
            order = impls[rep % len(impls) :] + impls[: rep % len(impls)]  # interleaved, rotated
            for impl in order:
                runs.append(r := await throughput_run(ctx, impl, rep))
                print(line(r), flush=True)
        if not args.skip_freshness:
            fresh = generate(
                int(args.rate * args.freshness_seconds) + 1,
                users=args.users,
                seed=2,
                workload=args.workload,
            )
            ctx.fresh_records = [encode(e) for e in fresh]
            del fresh
            for impl in impls:
                runs.append(r := await freshness_run(ctx, impl))
                print(line(r), flush=True)
    finally:
        await receiver.stop()
        if pg is not None:
            pg.stop()
        if broker is not None:
            broker.stop()
        if args.keep:
            print(f"bench: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    the_mix = mix(args.users, args.workload)
    results = report.summarize(
        runs,
        impls=[(i.id, i.label, i.family) for i in impls],
        machine=host,
        workload={
            "name": args.workload,
            "events": args.events,
            "users": the_mix.users,
            "segments": the_mix.segments,
            "skew": the_mix.skew,
            "remove_ratio": the_mix.remove_ratio,
            "repeat_ratio": the_mix.repeat_ratio,
            "partitions": PARTITIONS,
            "expected_rows": want.counts(),
            "expected_toggles": want.toggle_ids,
            "reps": args.reps,
            "timeout_s": args.timeout,
            "freshness_rate": None if args.skip_freshness else args.rate,
            "freshness_seconds": None if args.skip_freshness else args.freshness_seconds,
        },
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        duration_s=round(time.monotonic() - t0, 1),
        memory=orjson.loads(MEMORY.read_bytes()) if MEMORY.exists() else None,
        baseline=baseline(args),
    )
    print()
    print(report.terminal_table(results))
    out = Path(args.results)
    out.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")
    report.write_docs(results, Path(args.docs), Path(args.chart))
    print(f"\nbench: wrote {out}, {args.docs}, {args.chart}")
    return 0


def baseline(args: argparse.Namespace) -> dict[str, Any] | None:
    """For a 1M-event run: the summary of the last 200k-event run of the same workload."""
    if args.events < 1_000_000:
        return None
    suffix = "" if args.workload == "demo" else f"-{args.workload}"
    path = ROOT / "bench" / f"results{suffix}.json"
    if not path.exists():
        return None
    earlier = orjson.loads(path.read_bytes())
    return earlier["summary"] if earlier["workload"]["events"] == 200_000 else None


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=200_000, help="events pre-produced per run")
    p.add_argument("--big", action="store_true", help="1,000,000 events")
    p.add_argument(
        "--workload",
        choices=WORKLOADS,
        default="demo",
        help="demo: the demo's mix; toggles: a third of the events flip a membership",
    )
    p.add_argument("--users", type=int, help="user cardinality (demo 10,000, toggles 2,000)")
    p.add_argument(
        "--reps", type=int, default=3, help="repetitions of each throughput run (0: none)"
    )
    p.add_argument(
        "--only", help="comma-separated: segflow, segflow-1p, segflow-2p, naive-faust, quix"
    )
    p.add_argument("--skip-freshness", action="store_true", help="no freshness phase")
    p.add_argument("--rate", type=float, default=10_000, help="freshness phase: events/s")
    p.add_argument("--probe-rate", type=float, default=20, help="freshness phase: probes/s")
    p.add_argument("--freshness-seconds", type=float, default=20, help="freshness phase length")
    p.add_argument("--drain", type=float, default=30, help="freshness: wait for late probes (s)")
    p.add_argument(
        "--timeout", type=float, help="per throughput run (default max(300, events/3000))"
    )
    p.add_argument(
        "--stall", type=float, default=45, help="give up after this long without progress"
    )
    p.add_argument("--ready-timeout", type=float, default=120, help="freshness: start-up limit (s)")
    p.add_argument("--results", help="default bench/results[-<workload>][-1m].json")
    p.add_argument("--docs", help="default docs/benchmarks[-<workload>][-1m].md")
    p.add_argument("--chart", help="default docs/benchmarks[-<workload>][-1m].png")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = p.parse_args(argv)
    if args.big:
        args.events = 1_000_000
    if args.timeout is None:
        args.timeout = max(300.0, args.events / 3000)
    suffix = ("" if args.workload == "demo" else f"-{args.workload}") + (
        "-1m" if args.events == 1_000_000 else ""
    )
    args.results = args.results or str(ROOT / "bench" / f"results{suffix}.json")
    args.docs = args.docs or str(ROOT / "docs" / f"benchmarks{suffix}.md")
    args.chart = args.chart or str(ROOT / "docs" / f"benchmarks{suffix}.png")
    if args.events < 1 or args.reps < 0:
        p.error("--events must be at least 1 and --reps at least 0")
    if args.reps == 0 and args.skip_freshness:
        p.error("--reps 0 with --skip-freshness leaves nothing to run")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
