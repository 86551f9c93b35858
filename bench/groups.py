"""`python -m bench.groups`: issue 15's two speed goals for groups, as benchmarks.

`--cost`: the stage CPU per product event (in-process, as `bench.profile_stages` measures it)
with the shipped properties and (a) no groups, (b) the shipped 7 groups, (c) 50 groups
(`bench.harness.catalogs.fifty_groups`), over the same events, the three catalogs alternating
in each repetition (order rotated), medians of `--reps`. The clock stands at 1 s after the
events' occurredAt, so relative rules hold and set timers as for live traffic. Goal: (c) adds
≤ 20% to (a). Also the evaluations per event (`segflow_profile_group_evaluations_total`'s
count): only the groups reading a changed property are evaluated, far fewer than 50 a change.
With `--segments` the segmentation derivations that the group changes feed are timed too.

`--fire`: N records whose relative rule flips at the same instant, built in process (records
stage over N purchases, RocksDB state per partition as the worker keeps it), then fired in
passes of `TIMERS_PER_PASS` per partition, each pass applied to RocksDB like a commit: CPU of
`RecordsTask.fire` and of the write, and of the segmentation derivations over the leaves
(`--profile`: cProfile of the firing).

`--cohort`: the same cohort end to end on the embedded broker with a `segflow worker`
subprocess (no Postgres: the catalog's materializations have empty DSNs/URLs), while fresh
product events arrive at `--rate`/s: the time from the boundary until all N timers fired
(`/metrics`), until all N leaves are in segment/events and through segment/memberships (record
timestamps, read to the true end), and the latency from producing a fresh event to its record
document in profile/records (the worker producer's timestamp of the document) before and
during the burst. Goal: all changes out within 10 s of the boundary.

Each part merges its figures into `bench/groups.json`. BENCH_KEEP=1 keeps the cohort run's
temporary directory (logs, state, catalog).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench.harness.catalogs import catalog_with_groups, fifty_groups, shipped_groups
from bench.harness.metrics import parse_metrics
from bench.harness.procs import ROOT
from bench.harness.stages import Stages
from derivations.profiles.instants import parse_instant, to_epoch_ns
from pipeline.catalog import load_catalog
from tests.fixtures.profiles import product_events

RESULTS = ROOT / "bench" / "groups.json"
DATE = "2026-12-03"
COST_CLOCK = "2024-05-01T10:00:01Z"
"""The cost run's clock: 1 s after the fixture's events (2024-05-01T10:00:00.xxxxxxZ)."""


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};"
        f" shared and noisy (±15% run to run), load average at start {load}"
    )


def code() -> str:
    """The commit measured, and whether pipeline/ or derivations/ differed from it."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "pipeline", "derivations")
    return head + (" with uncommitted changes in pipeline/ or derivations/" if dirty else "")


def save(part: str, figures: dict[str, Any]) -> None:
    """Merge one part's figures into bench/groups.json."""
    results: dict[str, Any] = {}
    if RESULTS.exists():
        results = orjson.loads(RESULTS.read_bytes())
    results["date"] = DATE
    results[part] = {"machine": machine(), "code": code(), **figures}
    RESULTS.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


# -- 1. the cost of group evaluation per product event ----------------------------------------


def cost(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="segflow-bench-groups-"))
    try:
        return _cost(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cost(args: argparse.Namespace, tmp: Path) -> int:
    catalogs = {  # schemas are read lazily: `tmp` stays until the end
        "none": load_catalog(catalog_with_groups(tmp / "none", {}), env={}),
        "shipped": load_catalog(catalog_with_groups(tmp / "shipped", shipped_groups()), env={}),
        "fifty": load_catalog(catalog_with_groups(tmp / "fifty", fifty_groups()), env={}),
    }
    events = product_events(args.events, seed=args.seed, people=max(1, args.events // 7))
    clock_ns = to_epoch_ns(parse_instant(COST_CLOCK))  # type: ignore[arg-type]
    names = list(catalogs)
    per_event: dict[str, list[float]] = {n: [] for n in names}
    records_only: dict[str, list[float]] = {n: [] for n in names}
    segments_cpu: dict[str, list[float]] = {n: [] for n in names}
    counted: dict[str, dict[str, int]] = {}
    gc.collect()
    gc.freeze()
    gc.disable()
    print(f"groups --cost: {len(events):,} events, {args.reps} repetitions, clock {COST_CLOCK}")
    for rep in range(args.reps):
        order = names[rep % 3 :] + names[: rep % 3]
        for name in order:
            stages = Stages(catalogs[name], lambda: clock_ns, args.batch, args.segments)
            figures = stages.run(events)
            stage_cpu = sum(s for src, s in figures.cpu.items() if src != "segment/events")
            per_event[name].append(stage_cpu / len(events) * 1e6)
            records_only[name].append(
                figures.cpu[stages.sources[1]] / len(events) * 1e6  # <records>.identified
            )
            segments_cpu[name].append(figures.cpu.get("segment/events", 0.0) / len(events) * 1e6)
            counted[name] = {
                "evaluations": figures.evaluations,
                "group_changes": figures.group_changes,
                "records_documents": figures.documents["profile/records"],
                "segment_events": figures.documents["segment/events"],
            }
            print(
                f"  rep {rep + 1} {name:<8} {per_event[name][-1]:6.1f} µs/event"
                f" (records stage {records_only[name][-1]:5.1f}"
                + (f", segment path {segments_cpu[name][-1]:5.1f}" if args.segments else "")
                + f"), {figures.evaluations / len(events):5.2f} evaluations/event",
                flush=True,
            )
            del stages, figures
            gc.collect()
    breakdown = {
        name: count_evaluations(catalogs[name], events, clock_ns, args.batch)
        for name in ("shipped", "fifty")
    }
    base = statistics.median(per_event["none"])
    out: dict[str, Any] = {
        "command": "python -m bench.groups --cost"
        + (f" --events {args.events}" if args.events != 100_000 else "")
        + (f" --reps {args.reps}" if args.reps != 5 else "")
        + (" --segments" if args.segments else ""),
        "events": len(events),
        "repetitions": args.reps,
        "batch": args.batch,
        "clock": COST_CLOCK,
        "method": (
            "in-process stage CPU (identity + records + unique stages' process_documents and"
            " state writes, process time), in-memory state, the three catalogs alternating per"
            " repetition with the order rotated; medians"
        ),
        "configurations": {},
    }
    for name in names:
        profiles = catalogs[name].profiles
        assert profiles is not None
        calculated = sum(1 for g in profiles.groups.values() if not g.manual)
        c = counted[name]
        median = statistics.median(per_event[name])
        pcts = [v / base * 100 - 100 for v in per_event[name]]
        row: dict[str, Any] = {
            "groups": len(catalogs[name].profiles.groups),  # type: ignore[union-attr]
            "calculated_groups": calculated,
            "stage_cpu_us_per_event": spread(per_event[name]),
            "records_stage_cpu_us_per_event": spread(records_only[name]),
            "runs_us_per_event": [round(v, 2) for v in per_event[name]],
            "over_no_groups_pct": round(median / base * 100 - 100, 1),
            "over_no_groups_pct_per_rep_pair": spread(
                [v / b * 100 - 100 for v, b in zip(per_event[name], per_event["none"], strict=True)]
            ),
            "evaluations": c["evaluations"],
            "evaluations_per_event": round(c["evaluations"] / len(events), 3),
            "evaluations_if_every_group_every_event": calculated * len(events),
            "evaluated_share_pct": round(c["evaluations"] / (calculated * len(events)) * 100, 1)
            if calculated
            else 0.0,
            "records_documents": c["records_documents"],
            "evaluations_per_records_document": round(
                c["evaluations"] / max(1, c["records_documents"]), 2
            ),
            "group_changes": c["group_changes"],
            "segment_events": c["segment_events"],
        }
        del pcts
        if name in breakdown:
            row["evaluations_by_cause"] = breakdown[name]
        if args.segments:
            row["segment_path_cpu_us_per_event"] = spread(segments_cpu[name])
        out["configurations"][name] = row
    fifty = out["configurations"]["fifty"]
    out["goal"] = "50 groups add ≤ 20% to the stage CPU per product event"
    out["goal_met"] = fifty["over_no_groups_pct"] <= 20
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    if not args.no_save:
        save("cost", out)
    return 0


# -- 2a. firing a cohort in process -------------------------------------------------------------

FIRE_T0 = "2024-05-01T10:00:00Z"
"""The in-process cohort's occurredAt (its boundary is W later)."""
FIRE_WINDOW_S = 60


def cohort_groups(window_s: int) -> dict[str, Any]:
    return {
        "cohort": {
            "rules": [{"property": "lastPurchaseAt", "op": "inTheLast", "value": f"{window_s}s"}]
        }
    }


def purchase(user: str, occurred_at: str, n: int) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=n + 1, version=4)),
        "type": "purchase",
        "userId": user,
        "occurredAt": occurred_at,
        "data": {"total": 20.0, "items": 1},
    }


def fire(args: argparse.Namespace) -> int:
    return asyncio.run(_fire_all(args))


async def _fire_all(args: argparse.Namespace) -> int:
    runs = []
    print(
        f"groups --fire: {args.records:,} records flipping at one instant, {args.reps} repetitions"
    )
    for rep in range(args.reps):
        tmp = Path(tempfile.mkdtemp(prefix="segflow-bench-groups-fire-"))
        try:
            runs.append(await _fire_once(args, tmp, profile=args.profile and rep == 0))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        r = runs[-1]
        print(
            f"  rep {rep + 1}: fire {r['fire_cpu_s']:.2f} s,"
            f" RocksDB write {r['apply_cpu_s']:.2f} s,"
            f" Kafka batches {r['encode_cpu_s']:.2f} s, segment path {r['segment_cpu_s']:.2f} s"
            f" = {r['total_cpu_s']:.2f} s CPU for {r['fired']:,} ({r['passes']} passes)",
            flush=True,
        )
    parts = ["fire_cpu_s", "apply_cpu_s", "encode_cpu_s", "segment_cpu_s", "total_cpu_s"]
    n = args.records
    out: dict[str, Any] = {
        "command": "python -m bench.groups --fire"
        + (f" --records {n}" if n != 100_000 else "")
        + (f" --reps {args.reps}" if args.reps != 5 else ""),
        "records": n,
        "repetitions": args.reps,
        "method": (
            "records stage (shipped properties, one group lastPurchaseAt inTheLast 60s) over N"
            " purchases of N people with one occurredAt, RocksDB state per partition (4) as the"
            " worker keeps it; then passes of RecordsTask.fire (TIMERS_PER_PASS per partition),"
            " each pass's changes written to RocksDB (PartitionState.apply), its documents and"
            " changelog appended to aiokafka batches (BatchWriter, not sent), and the leaves run"
            " through the segmentation derivations (memberships, profiles, toggles; in-memory"
            " state, validation left out). Process time; medians"
        ),
        "passes": runs[0]["passes"],
        "documents_per_fired_record": runs[0]["documents_per_fired_record"],
    }
    for part in parts:
        values = [r[part] for r in runs]
        out[part] = spread(values)
        out[part.replace("_cpu_s", "_us_per_record")] = round(
            statistics.median(values) / n * 1e6, 1
        )
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    if not args.no_save:
        save("fire", out)
    return 0


async def _fire_once(args: argparse.Namespace, tmp: Path, profile: bool) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    from bench.harness.stages import MemoryState
    from pipeline.catalog.profiles import SEGMENT_EVENTS, identified
    from pipeline.runtime.batches import BatchWriter
    from pipeline.runtime.derive import _publish, make_task
    from pipeline.runtime.groups import record_key
    from pipeline.runtime.state import PartitionState, add_changelog
    from pipeline.runtime.topics import partition_for

    catalog = load_catalog(catalog_with_groups(tmp, cohort_groups(FIRE_WINDOW_S)), env={})
    assert catalog.profiles is not None
    t0 = to_epoch_ns(parse_instant(FIRE_T0))  # type: ignore[arg-type]
    now = [t0 + 10**9]
    source = identified(catalog.profiles.records)
    task = make_task(catalog, source, lambda name: name, lambda: now[0])
    segments = make_task(catalog, SEGMENT_EVENTS, lambda name: name)
    partitions = catalog.collections[source].partitions
    states = [PartitionState(tmp / "state" / str(p)) for p in range(partitions)]
    segment_states = [MemoryState() for _ in range(partitions)]
    queues: list[list[tuple[Any, int]]] = [[] for _ in range(partitions)]
    for i in range(args.records):
        user = f"c{i:06d}"
        doc = {"r": user, "e": purchase(user, FIRE_T0, i), "t": 1_000 + i}
        queues[partition_for(record_key(user), partitions)].append((doc, 1_000 + i))
    position = [0] * partitions

    def segment_pass(p: int, docs: list[tuple[Any, int]]) -> None:
        result = segments.process_documents(docs, segment_states[p])  # type: ignore[arg-type]
        for key, value in result.changes.items():
            segment_states[p][key] = value  # type: ignore[assignment]

    joins = 0
    for p, queue in enumerate(queues):  # build: untimed
        for start in range(0, len(queue), args.batch):
            result = task.process_documents(queue[start : start + args.batch], states[p])
            position[p] += 1
            states[p].apply(result.changes, position[p], position[p])
            docs = [
                (orjson.loads(v), 2_000)
                for o, _, v in result.documents
                if o.spec.name == SEGMENT_EVENTS and v
            ]
            joins += len(docs)
            segment_pass(p, docs)
    assert joins == args.records, f"{joins} joins for {args.records} records"
    now[0] = t0 + (FIRE_WINDOW_S + 1) * 10**9
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")  # not started: batches only
    cpu = {"fire": 0.0, "apply": 0.0, "encode": 0.0, "segment": 0.0}
    fired = passes = documents = 0
    profiler = cProfile.Profile() if profile else None
    gc.collect()
    gc.disable()
    try:
        while True:
            any_fired = False
            for p in range(partitions):
                started = time.process_time()
                if profiler is not None:
                    profiler.enable()
                fired_result = task.fire(states[p], now[0])  # type: ignore[union-attr]
                if profiler is not None:
                    profiler.disable()
                fired_at = time.process_time()
                cpu["fire"] += fired_at - started
                if fired_result is None:
                    continue
                any_fired = True
                passes += 1
                fired += fired_result.timers_fired
                documents += len(fired_result.documents)
                writer = BatchWriter(producer)
                for output in task.outputs:
                    _publish(writer, output, p, fired_result)
                add_changelog(writer, _changelog(p), fired_result.changes, position[p], 0)
                encoded = time.process_time()
                cpu["encode"] += encoded - fired_at
                position[p] += 1
                states[p].apply(fired_result.changes, position[p], position[p])
                applied = time.process_time()
                cpu["apply"] += applied - encoded
                docs = [
                    (orjson.loads(v), 3_000)
                    for o, _, v in fired_result.documents
                    if o.spec.name == SEGMENT_EVENTS and v
                ]
                started = time.process_time()
                segment_pass(p, docs)
                cpu["segment"] += time.process_time() - started
            if not any_fired:
                break
    finally:
        gc.enable()
        for state in states:
            state.close()
        await producer.stop()
    if profiler is not None:
        print("cProfile of RecordsTask.fire (all passes), by own time:")
        pstats.Stats(profiler).sort_stats(os.environ.get("BENCH_SORT", "tottime")).print_stats(
            int(os.environ.get("BENCH_TOP", "25"))
        )
    assert fired == args.records, f"fired {fired} of {args.records}"
    return {
        "fired": fired,
        "passes": passes,
        "documents_per_fired_record": round(documents / fired, 2),
        "fire_cpu_s": cpu["fire"],
        "apply_cpu_s": cpu["apply"],
        "encode_cpu_s": cpu["encode"],
        "segment_cpu_s": cpu["segment"],
        "total_cpu_s": sum(cpu.values()),
    }


def _changelog(partition: int) -> Any:
    from aiokafka import TopicPartition

    return TopicPartition("changelog", partition)


# -- 2b. a cohort boundary end to end ------------------------------------------------------------

EVENTS = "profile/events"
PRE_WINDOW_S = 10.0
"""Fresh events are timed for at least this long before the boundary (the 'before' window)."""


def default_window(records: int) -> int:
    """W: long enough for N purchases to be ingested and joined, plus the 'before' window.
    Measured 2026-12-03: 100k purchases are joined (through segment/memberships) ≈ 16 s
    after they are produced, on one worker process with the broker on the same 2 cores."""
    return int(25 + 35 * records / 100_000)


def percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"n": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)}


def experiment_settings() -> dict[str, str]:
    """Worker settings changed for an experiment, from this environment: SEGFLOW_BATCH_MAX_RECORDS
    (records per derive batch) and BENCH_TIMERS_PER_PASS (`bench.harness.timed_worker`)."""
    names = {"SEGFLOW_BATCH_MAX_RECORDS": "batch", "BENCH_TIMERS_PER_PASS": "timers_per_pass"}
    return {short: os.environ[name] for name, short in names.items() if os.environ.get(name)}


def experiment_settings_env() -> dict[str, str]:
    names = ("SEGFLOW_BATCH_MAX_RECORDS", "BENCH_TIMERS_PER_PASS")
    return {name: os.environ[name] for name in names if os.environ.get(name)}


COHORT_FIGURES = {
    "fired_all_s": ("fired_all_s",),
    "leaves_in_segment_events_s": ("leaves_in_segment_events", "all_s"),
    "leaves_through_segment_memberships_s": ("leaves_through_segment_memberships", "all_s"),
    "fresh_before_p50_ms": ("fresh_event_to_record_document", "before", "p50_ms"),
    "fresh_before_p99_ms": ("fresh_event_to_record_document", "before", "p99_ms"),
    "fresh_during_p50_ms": ("fresh_event_to_record_document", "during", "p50_ms"),
    "fresh_during_p99_ms": ("fresh_event_to_record_document", "during", "p99_ms"),
    "fresh_during_max_ms": ("fresh_event_to_record_document", "during", "max_ms"),
    "derive_batch_before_p99_ms": ("derive_batch_seconds", "before", "p99_ms"),
    "derive_batch_during_max_ms": ("derive_batch_seconds", "during", "max_ms"),
    "timer_pass_wall_s": ("timer_passes", "wall_s_per_pass", "median"),
    "worker_cpu_s": ("cpu_s_boundary_to_memberships", "worker"),
    "broker_cpu_s": ("cpu_s_boundary_to_memberships", "broker"),
}
"""The figures of a cohort run summarised over runs (median, min, max)."""


async def cohort(args: argparse.Namespace) -> int:
    runs = []
    for run in range(args.runs):
        tmp = Path(tempfile.mkdtemp(prefix="segflow-bench-groups-cohort-"))
        try:
            print(f"-- run {run + 1} of {args.runs}")
            out = await _cohort(args, tmp)
        finally:
            if os.environ.get("BENCH_KEEP"):
                print(f"kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        if out is None:
            return 1
        runs.append(out)

    def pick(run: dict[str, Any], path: tuple[str, ...]) -> Any:
        for step in path:
            run = run.get(step) if isinstance(run, dict) else None  # type: ignore[assignment]
        return run

    summary: dict[str, Any] = {}
    for name, path in COHORT_FIGURES.items():
        values = [v for r in runs if (v := pick(r, path)) is not None]
        if values:
            summary[name] = spread([float(v) for v in values])
    written = [pick(r, COHORT_FIGURES["leaves_in_segment_events_s"]) for r in runs]
    result = {
        "command": " ".join(f"{k}={v}" for k, v in experiment_settings_env().items())
        + (" " if experiment_settings_env() else "")
        + runs[0]["command"]
        + (f" --runs {args.runs}" if args.runs != 3 else ""),
        "records": args.records,
        "runs": len(runs),
        "medians": summary,
        "goal": runs[0]["goal"],
        "goal_met": bool(
            all(r["leaves_in_segment_events"]["count"] == args.records for r in runs)
            and statistics.median(written) <= 10
        ),
        "method": runs[0]["method"],
        "each_run": runs,
    }
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    if not args.no_save:
        part = "cohort" if args.workers == 1 else f"cohort_{args.workers}_workers"
        for name, value in experiment_settings().items():
            part += f"_{name}_{value}"
        save(part, result)
    return 0


async def _cohort(args: argparse.Namespace, tmp: Path) -> dict[str, Any] | None:
    import aiohttp
    import psutil  # type: ignore[import-untyped]
    from aiokafka import TopicPartition

    from bench.harness.procs import launch, segflow_env, total_cpu
    from bench.harness.workload import produce
    from derivations.profiles.instants import format_instant, from_epoch_ns
    from pipeline.runtime.batches import BatchWriter
    from pipeline.runtime.produce import make_producer
    from pipeline.runtime.topics import (
        Names,
        ensure_topics,
        partition_for,
        pipeline_topics,
        read_to_end,
    )
    from pipeline.tools.embedded import free_port, start_broker

    n = args.records
    window = int(args.window or default_window(n))
    directory = catalog_with_groups(tmp, cohort_groups(window))
    catalog = load_catalog(directory, env={})
    (stage,) = catalog.derivations_from(EVENTS)
    key_of = stage.shuffle_encoder()
    partitions = catalog.collections[EVENTS].partitions
    names = Names("bench.")
    ports = [free_port() for _ in range(args.workers)]
    timings = [tmp / f"timings-{i}.jsonl" for i in range(args.workers)]
    broker = start_broker(tmp / "broker")
    broker_proc = psutil.Process(broker.process.pid)
    print(
        f"groups --cohort: {n:,} purchases with one occurredAt, group cohort ="
        f" lastPurchaseAt inTheLast {window}s, fresh events at {args.rate:,.0f}/s,"
        f" {args.workers} worker process(es)"
    )
    try:
        await ensure_topics(broker.bootstrap, pipeline_topics(catalog, names))
        envs = []
        for i, (port, timing) in enumerate(zip(ports, timings, strict=True)):
            env = segflow_env(broker.bootstrap, "bench.", tmp / f"state-{i}", "", "", "")
            env |= {
                "SEGFLOW_CATALOG": str(directory),
                "SEGFLOW_METRICS_ADDR": f"127.0.0.1:{port}",
                "SEGFLOW_LOG_LEVEL": os.environ.get("BENCH_SEGFLOW_LOG_LEVEL", "INFO"),
                "BENCH_TIMINGS": str(timing),
            }
            envs.append(env)
        t0 = time.time_ns() // 10**9  # a whole second just past: every purchase is a member
        occurred = format_instant(from_epoch_ns(t0 * 10**9))
        boundary = float(t0 + window)
        purchases = [purchase(f"c{i:06d}", occurred, i) for i in range(n)]
        records = [
            (partition_for(k := key_of(e), partitions), k, orjson.dumps(e)) for e in purchases
        ]
        produced_at = time.time()
        await produce(broker.bootstrap, names.collection(EVENTS), records)
        produce_s = time.time() - produced_at
        del records, purchases
        worker = launch("bench.harness.timed_worker worker", envs, tmp / "logs")
        launched_at = time.time()
        urls = [f"http://127.0.0.1:{port}/metrics" for port in ports]
        samples: list[tuple[float, dict[str, float]]] = []
        memberships_key = 'segflow_documents_out_total{collection="segment/memberships"}'

        async with aiohttp.ClientSession() as http:

            async def scrape() -> dict[str, float]:
                """The workers' figures, summed (empty unless every worker answered)."""
                figures: dict[str, float] = {}
                for url in urls:
                    try:
                        timeout = aiohttp.ClientTimeout(total=2)
                        async with http.get(url, timeout=timeout) as answer:
                            text = await answer.text()
                    except (aiohttp.ClientError, TimeoutError):
                        return {}
                    for name, value in parse_metrics(text).items():
                        figures[name] = figures.get(name, 0.0) + value
                samples.append((time.time(), figures))
                return figures

            # ingest and join
            while True:
                if worker.exited():
                    print(worker.log_tail(), file=sys.stderr)
                    return None
                figures = await scrape()
                if (
                    figures.get("segflow_profile_group_changes_total", 0) >= n
                    and figures.get(memberships_key, 0) >= n
                ):
                    break
                if time.time() > boundary:
                    print("cohort: the boundary passed before every record joined; raise --window")
                    worker.stop()
                    return None
                await asyncio.sleep(0.2)
            joined_at = time.time()
            print(
                f"  ingest + join: {joined_at - produced_at:.1f} s from the first produce"
                f" ({produce_s:.1f} s producing, worker launched {launched_at - produced_at:.1f} s"
                f" in); boundary in {boundary - joined_at:.1f} s",
                flush=True,
            )
            if boundary - joined_at < PRE_WINDOW_S:
                print(
                    f"  warning: less than {PRE_WINDOW_S:.0f} s of fresh events before the boundary"
                )

            # fresh events, steadily, through the boundary
            sent: dict[str, float] = {}
            stop = asyncio.Event()
            producer = make_producer(broker.bootstrap, 5)
            await producer.start()
            topic = names.collection(EVENTS)

            async def fresh() -> None:
                started, done = time.monotonic(), 0
                while not stop.is_set():
                    due = int((time.monotonic() - started) * args.rate)
                    if due > done:
                        writer = BatchWriter(producer)
                        stamp = format_instant(from_epoch_ns(time.time_ns()))
                        ids = []
                        for i in range(done, due):
                            user = f"live-{i:07d}"
                            doc = {
                                "id": str(uuid.uuid4()),
                                "type": "pageview",
                                "userId": user,
                                "occurredAt": stamp,
                                "data": {"path": "/docs"},
                            }
                            k = key_of(doc)
                            writer.add(topic, partition_for(k, partitions), k, orjson.dumps(doc))
                            ids.append(user)
                        now = time.time()
                        for user in ids:
                            sent[user] = now
                        await writer.flush()
                        done = due
                    await asyncio.sleep(0.01)

            feeding = asyncio.create_task(fresh())
            cpu_worker: dict[str, float] = {}
            cpu_broker: dict[str, float] = {}
            try:
                while time.time() < boundary:
                    await scrape()
                    await asyncio.sleep(0.25)
                cpu_worker["boundary"] = sum(total_cpu(p) for p in worker.tree())
                cpu_broker["boundary"] = total_cpu(broker_proc)
                fired_at = None
                while time.time() < boundary + 120:
                    figures = await scrape()
                    if (
                        fired_at is None
                        and figures.get("segflow_profile_timers_fired_total", 0) >= n
                    ):
                        fired_at = time.time()
                    if fired_at is not None and figures.get(memberships_key, 0) >= 2 * n:
                        break
                    if worker.exited():
                        print(worker.log_tail(), file=sys.stderr)
                        return None
                    await asyncio.sleep(0.05)
                through_at = time.time()
                cpu_worker["done"] = sum(total_cpu(p) for p in worker.tree())
                cpu_broker["done"] = total_cpu(broker_proc)
                await asyncio.sleep(5.0)  # an 'after' window of fresh events
            finally:
                stop.set()
                await feeding
                await producer.stop()
            await asyncio.sleep(2.0)
            last = await scrape()
        worker.stop()

        # read back: record timestamps are the worker producer's append times
        async def read(collection: str) -> list[Any]:
            topic = names.collection(collection)
            count = catalog.collections[collection].partitions
            starts = {TopicPartition(topic, p): 0 for p in range(count)}
            out: list[Any] = []
            async for batch in read_to_end(broker.bootstrap, starts):
                out += [(r.key, r.value, r.timestamp / 1000) for r in batch]
            return out

        latencies: list[tuple[float, float]] = []  # (sent, latency s)
        fired_docs: list[float] = []
        for key, _, stamp in await read("profile/records"):
            if key.startswith(b'["live-'):
                user = orjson.loads(key)[0]
                if user in sent:
                    latencies.append((sent[user], stamp - sent[user]))
            elif key.startswith(b'["c') and stamp >= boundary - 1:
                fired_docs.append(stamp)
        leaves = [s for _, v, s in await read("segment/events") if v and b'"remove":true' in v]
        left = [s for _, v, s in await read("segment/memberships") if v and b'"member":false' in v]
    finally:
        broker.stop()

    def since(stamps: list[float]) -> dict[str, Any]:
        if not stamps:
            return {"count": 0}
        return {
            "count": len(stamps),
            "first_s": round(min(stamps) - boundary, 2),
            "all_s": round(max(stamps) - boundary, 2),
        }

    passes: list[dict[str, Any]] = []
    batches: list[dict[str, Any]] = []
    for timing in timings:
        for line in timing.read_bytes().splitlines() if timing.exists() else []:
            item = orjson.loads(line)
            (passes if item["k"] == "fire" else batches).append(item)
    passes.sort(key=lambda p: p["at"] + p["s"])
    fired_metric = last.get("segflow_profile_timers_fired_total", 0)
    written, through = since(leaves), since(left)
    burst_end = boundary + max(written.get("all_s", 0.0), through.get("all_s", 0.0), 0.0)

    def phase(start: float, seconds: float) -> str:
        """Where an interval falls: wholly before the boundary (and after the joins had
        settled), overlapping the burst (boundary until the last leave is through
        segment/memberships), or after it."""
        if start + seconds < boundary:
            return "before" if start >= joined_at + 2.0 else "settling"
        return "during" if start <= burst_end else "after"

    fresh_latency = {
        name: percentiles([lat for at, lat in latencies if phase(at, lat) == name])
        for name in ("before", "during", "after")
    }
    batch_seconds = {
        name: percentiles([b["s"] for b in batches if phase(b["at"], b["s"]) == name])
        for name in ("before", "during", "after")
    }
    burst_passes = [p for p in passes if p["at"] >= boundary - 1]
    during = [b for b in batches if phase(b["at"], b["s"]) == "during"]
    out: dict[str, Any] = {
        "command": "python -m bench.groups --cohort"
        + (f" --records {n}" if n != 100_000 else "")
        + (f" --window {args.window:g}" if args.window else "")
        + (f" --rate {args.rate:g}" if args.rate != 2000 else "")
        + (f" --workers {args.workers}" if args.workers != 1 else ""),
        "records": n,
        "workers": args.workers,
        "settings": experiment_settings(),
        "window_s": window,
        "fresh_events_per_second": args.rate,
        "method": (
            "embedded Tansu broker, `segflow worker` processes (bench.harness.timed_worker),"
            " no materializations; N purchases of N people with one occurredAt pre-produced,"
            " then fresh pageviews of new people at a steady rate from the moment all N joined"
            " (segment/memberships) until 5 s after the burst. Times from the boundary instant:"
            " fired = end of the last timer pass that fired (the worker's own timing, committed);"
            " fired_metric = segflow_profile_timers_fired_total seen at N (scraped every 50 ms;"
            " late by up to a derive batch: /metrics is served on the derive loop's event loop);"
            " written = the record timestamps (the worker producer's append time) of"
            " the leaves in segment/events, the fired records' documents and the memberships"
            " with member false, read back to the true end. Fresh latency = record timestamp of"
            " the fresh person's profile/records document - the time its produce was sent"
        ),
        "ingest_and_join_s": round(joined_at - produced_at, 1),
        "fired_all_s": round(burst_passes[-1]["at"] + burst_passes[-1]["s"] - boundary, 2)
        if burst_passes
        else None,
        "fired_metric_s": None if fired_at is None else round(fired_at - boundary, 2),
        "fired_metric_count": fired_metric,
        "records_documents_after_boundary": since(fired_docs),
        "leaves_in_segment_events": written,
        "leaves_through_segment_memberships": through,
        "burst_window_s": round(burst_end - boundary, 2),
        "all_through_memberships_metric_s": round(through_at - boundary, 2),
        "goal": "all N changes out (segment/events) within 10 s of the boundary",
        "goal_met": bool(written.get("count") == n and written.get("all_s", 99) <= 10),
        "fresh_event_to_record_document": fresh_latency,
        "derive_batch_seconds": batch_seconds,
        "timer_passes": {
            "count": len(burst_passes),
            "fired": sum(p["n"] for p in burst_passes),
            "first_start_s": round(min(p["at"] for p in burst_passes) - boundary, 3)
            if burst_passes
            else None,
            "last_end_s": round(burst_passes[-1]["at"] + burst_passes[-1]["s"] - boundary, 2)
            if burst_passes
            else None,
            "wall_s_total": round(sum(p["s"] for p in burst_passes), 2),
            "compute_s_total": round(sum(p["compute"] for p in burst_passes), 2),
            "wall_s_per_pass": spread([p["s"] for p in burst_passes]) if burst_passes else None,
        },
        "derive_batches_during": {
            "count": len(during),
            "wall_s_total": round(sum(b["s"] for b in during), 2),
            "records": sum(b["n"] for b in during),
            "largest": max(
                ({"records": b["n"], "s": round(b["s"], 2)} for b in during),
                key=lambda b: b["s"],
                default=None,
            ),
        },
        "cpu_s_boundary_to_memberships": {
            "worker": round(cpu_worker["done"] - cpu_worker["boundary"], 2),
            "broker": round(cpu_broker["done"] - cpu_broker["boundary"], 2),
        },
    }
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode(), flush=True)
    return out


def count_evaluations(
    catalog: Any, events: list[dict[str, Any]], clock_ns: int, batch: int
) -> dict[str, Any]:
    """An untimed run that splits the evaluations by cause: records evaluated against every
    group (new, or merged into) and changed records (only the groups reading a changed
    property, manual ones whose membership changed, and flips already due)."""
    stages = Stages(catalog, lambda: clock_ns, batch)
    grouping = stages.tasks[stages.sources[1]].grouping  # type: ignore[union-attr]
    memberships = grouping.memberships  # type: ignore[union-attr]
    on_change = memberships.on_change
    tally = {"every group": [0, 0], "changed properties": [0, 0]}

    def counted(state: Any, properties: Any, changed: Any, now: Any, manual: Any = None) -> Any:
        before = memberships.evaluated
        out = on_change(state, properties, changed, now, manual)
        cause = tally["every group" if changed is None else "changed properties"]
        cause[0] += 1
        cause[1] += memberships.evaluated - before
        return out

    memberships.on_change = counted  # type: ignore[method-assign]
    stages.run(events)
    return {
        cause: {
            "records": records,
            "evaluations": evaluations,
            "per_record": round(evaluations / max(1, records), 2),
        }
        for cause, (records, evaluations) in tally.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    part = parser.add_mutually_exclusive_group(required=True)
    part.add_argument("--cost", action="store_true", help="group evaluation cost per event")
    part.add_argument("--fire", action="store_true", help="in-process firing of a cohort")
    part.add_argument("--cohort", action="store_true", help="a cohort boundary end to end")
    parser.add_argument("--events", type=int, default=100_000, help="--cost: product events")
    parser.add_argument("--reps", type=int, default=5, help="--cost, --fire: repetitions")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=5000, help="documents per partition batch")
    parser.add_argument("--segments", action="store_true", help="--cost: time the segment path")
    parser.add_argument("--records", type=int, default=100_000, help="--fire, --cohort: cohort")
    parser.add_argument("--profile", action="store_true", help="--fire: cProfile the firing")
    parser.add_argument("--window", type=float, default=None, help="--cohort: W seconds")
    parser.add_argument("--rate", type=float, default=2000.0, help="--cohort: fresh events/s")
    parser.add_argument("--runs", type=int, default=3, help="--cohort: runs (medians)")
    parser.add_argument("--workers", type=int, default=1, help="--cohort: worker processes")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/groups.json")
    args = parser.parse_args()
    if args.cost:
        return cost(args)
    if args.fire:
        return fire(args)
    return asyncio.run(cohort(args))


if __name__ == "__main__":
    sys.exit(main())
