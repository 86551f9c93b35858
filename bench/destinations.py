"""`python -m bench.destinations`: issue 16's export goal — 100k records in a tracked group, one
mapped property changed on all, exports delivered at ≥ 20k records/s to a local receiver — on
the embedded broker and Postgres of this machine.

No product events: the records stage's output is written straight into the records topic
(`<prefix>profile.records`, keyed and partitioned as the stage writes it), so what is measured
is the destination alone — a `segflow worker` subprocess whose derive loop idles and whose
destination materialization reads the records, keeps its baselines, outbox and checkpoints in
Postgres and POSTs exports (`max_batch: 1000`) to an aiohttp receiver in this process, which
answers 200 at once and counts exports by kind (create: `oldProperties` empty; update: not).

1. warm-up: one record, until its create arrives (the destination's partitions are assigned
   and its tables made);
2. `create`: `--records` documents `{plan: free, ltv: 1.0, groups: [buyers]}`, from producing
   the first until every record's create arrived;
3. `update`: the same records with `plan: pro`, from producing the first until every record's
   update arrived; each must carry `oldProperties.plan == "free"` and `newProperties.plan ==
   "pro"` (mismatches counted).
Records/s is records over that time (`delivery_records_per_s`: from the first request's
arrival instead, so without the producing and the first fetch). Also requests, exports per
request, the worker's CPU seconds and peak RSS, the CPU seconds per phase of the worker,
Postgres, the broker and this process, and the worker's own `segflow_destination_*` figures.
Figures go to `bench/destinations.json`. BENCH_KEEP=1 keeps the temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from bench.harness.metrics import parse_metrics
from bench.harness.procs import Launched, launch, postmaster, segflow_env, total_cpu

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "destinations.json"
RECORDS = "profile/records"
PREFIX = "dest."
GOAL = 20_000
STALL_S = 120.0
"""A phase gives up after this long without a new export."""
WARM = "warm"
"""The warm-up record's id."""

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
  segment/events:  # groups flow into it (SPEC 8.4); nothing reads it here
    schema: {schemas}/event.schema.yaml
    key: [/event]
    partitions: 4
    dedup: 7d
profiles:
  events: profile/events
  records: profile/records
  groupVendor: 100
  properties:
    plan: {{type: string, from: {{events: [x], path: /data/plan, aggregate: latest}}}}
    ltv:  {{type: float, from: {{events: [x], path: /data/total, aggregate: sum}}}}
  groups:
    buyers:
      rules: [{{property: ltv, op: gt, value: 0}}]
destinations:
  bench:
    webhook: {{url: "{url}", max_batch: {max_batch}}}
    groups: {{buyers: B}}
    properties: {{plan: plan, ltv: ltv}}
    mode: sync
"""


# -- the receiver ---------------------------------------------------------------------------


@dataclass
class Receiver:
    """Answers 200 at once; counts exports by kind and the time of each request."""

    creates: set[str] = field(default_factory=set)
    updates: set[str] = field(default_factory=set)
    elements: Counter[str] = field(default_factory=Counter)
    """Every element received, by kind (create, update, delete, other): redeliveries too."""
    mismatches: int = 0
    """Updates whose plan is not free -> pro."""
    requests: list[tuple[float, int]] = field(default_factory=list)
    """(arrival time, elements) per request."""
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        elements = orjson.loads(await request.read())
        self.requests.append((time.time(), len(elements)))
        for e in elements:
            if "toDelete" not in e:
                self.elements["other"] += 1
            elif e["toDelete"]:
                self.elements["delete"] += 1
            elif not e["oldProperties"]:
                self.elements["create"] += 1
                self.creates.add(e["record"])
            else:
                self.elements["update"] += 1
                self.updates.add(e["record"])
                if (
                    e["oldProperties"].get("plan") != "free"
                    or e["newProperties"].get("plan") != "pro"
                ):
                    self.mismatches += 1
        self.progress.set()
        return web.Response(status=200)

    def since(self, began: float) -> list[tuple[float, int]]:
        return [r for r in self.requests if r[0] >= began]


async def serve(receiver: Receiver) -> tuple[web.AppRunner, str]:
    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post("/exports", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/exports"


# -- documents ------------------------------------------------------------------------------


def user(i: int) -> str:
    return f"u{i:06d}"


def document(record: str, plan: str, updated_at: str) -> dict[str, Any]:
    """A profile/records document as the records stage writes it."""
    return {
        "id": record,
        "userId": record,
        "anonymousIds": [],
        "properties": {"plan": plan, "ltv": 1.0},
        "groups": ["buyers"],
        "createdAt": "2026-12-01T10:00:00Z",
        "updatedAt": updated_at,
    }


async def produce(broker: str, topic: str, partitions: int, docs: list[dict[str, Any]]) -> None:
    """Write `docs` into the records topic as the records stage does: key `["<id>"]`,
    partitioned by `partition_for`, in aiokafka batches."""
    from pipeline.runtime.batches import BatchWriter
    from pipeline.runtime.groups import record_key
    from pipeline.runtime.produce import make_producer
    from pipeline.runtime.topics import partition_for

    by_partition: list[list[tuple[bytes | None, bytes | None]]] = [[] for _ in range(partitions)]
    for doc in docs:
        key = record_key(doc["id"])
        by_partition[partition_for(key, partitions)].append((key, orjson.dumps(doc)))
    producer = make_producer(broker)
    await producer.start()
    try:
        writer = BatchWriter(producer)
        for p, records in enumerate(by_partition):
            writer.add_many(topic, p, records)
        await writer.flush()
    finally:
        await producer.stop()


# -- a run ----------------------------------------------------------------------------------


@dataclass
class Probes:
    """The processes measured and the worker's /metrics."""

    worker: Launched
    metrics_url: str
    http: aiohttp.ClientSession
    postgres_dir: Path
    broker_pid: int

    def cpu(self) -> dict[str, float]:
        import psutil  # type: ignore[import-untyped]

        self.worker.sample()
        pg = postmaster(self.postgres_dir)
        return {
            "worker": self.worker.cpu_seconds(),
            "postgres": total_cpu(pg) if pg is not None else 0.0,
            "broker": total_cpu(psutil.Process(self.broker_pid)),
            "bench": time.process_time(),  # the receiver and the producing
        }

    async def figures(self) -> dict[str, float]:
        """The worker's `segflow_destination_*` figures (empty while it does not answer)."""
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with self.http.get(self.metrics_url, timeout=timeout) as answer:
                text = await answer.text()
        except (aiohttp.ClientError, TimeoutError):
            return {}
        return {k: v for k, v in parse_metrics(text).items() if "segflow_destination_" in k}


async def wait_for(
    receiver: Receiver, done: set[str], n: int, probes: Probes, samples: list[Any], began: float
) -> float:
    """Wait until `done` holds `n` records (or the worker exits, or no export comes for
    STALL_S); the time the last one arrived."""
    last_progress = time.time()
    seen = len(done)
    while len(done) < n:
        receiver.progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.progress.wait(), timeout=0.5)
        now = time.time()
        if probes.worker.exited():
            print(probes.worker.log_tail(), file=sys.stderr)
            raise SystemExit("destinations: the worker exited")
        if len(done) > seen:
            seen, last_progress = len(done), now
        elif now - last_progress > STALL_S:
            print(probes.worker.log_tail(), file=sys.stderr)
            raise SystemExit(f"destinations: stalled at {seen:,} of {n:,}")
        if not samples or now - began - samples[-1][0] >= 1.0:
            probes.worker.sample()
            samples.append((round(now - began, 1), len(done)))
    return receiver.requests[-1][0]


async def phase(
    name: str,
    receiver: Receiver,
    done: set[str],
    docs: list[dict[str, Any]],
    probes: Probes,
    broker: str,
    topic: str,
    partitions: int,
) -> dict[str, Any]:
    """Produce `docs`, wait until each record's export of this kind arrived; the figures."""
    before_cpu = probes.cpu()
    before_figures = await probes.figures()
    before_elements = dict(receiver.elements)
    samples: list[Any] = []
    began = time.time()
    await produce(broker, topic, partitions, docs)
    produced = time.time() - began
    last = await wait_for(receiver, done, len(docs), probes, samples, began)
    seconds = last - began
    requests = receiver.since(began)
    first = requests[0][0]
    after_cpu = probes.cpu()
    await asyncio.sleep(1.0)  # the last settle, for the worker's counters
    after_figures = await probes.figures()
    n = len(docs)
    worker: dict[str, float] = {}
    for k, v in after_figures.items():
        delta = v - before_figures.get(k, 0.0)
        short = k.removeprefix("segflow_destination_").split("{")[0]
        if short.endswith("_bucket") or not delta:
            continue
        worker[short] = round(delta, 3)
    if worker.get("request_seconds_count"):
        worker["request_seconds_mean_ms"] = round(
            worker.get("request_seconds_sum", 0.0) / worker["request_seconds_count"] * 1000, 2
        )
    cpu = {k: round(after_cpu[k] - before_cpu[k], 2) for k in after_cpu}
    elements = sum(count for _, count in requests)
    out = {
        "records": n,
        "seconds": round(seconds, 2),
        "records_per_s": round(n / seconds),
        "produce_s": round(produced, 2),
        "first_request_s": round(first - began, 2),
        "delivery_records_per_s": round(n / (last - first)),
        "requests": len(requests),
        "exports_per_request": round(elements / max(1, len(requests)), 1),
        "elements_received": {
            k: v - before_elements.get(k, 0) for k, v in receiver.elements.items()
        },
        "cpu_s": cpu,
        "worker_cpu_us_per_record": round(cpu["worker"] / n * 1e6, 1),
        "worker_figures": worker,
        "progress": samples[:: max(1, len(samples) // 12)],
    }
    if name == "update":
        out["mismatches"] = receiver.mismatches
    print(
        f"{name}: {n:,} records in {seconds:.2f}s = {n / seconds:,.0f} records/s;"
        f" {len(requests)} requests, {out['exports_per_request']} exports each;"
        f" CPU s worker {cpu['worker']}, postgres {cpu['postgres']}, broker {cpu['broker']},"
        f" this process {cpu['bench']}",
        flush=True,
    )
    return out


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from pipeline.catalog import load_catalog
    from pipeline.runtime.topics import Names, ensure_topics, pipeline_topics
    from pipeline.tools.embedded import free_port, start_broker, start_postgres

    broker = start_broker(tmp / "broker")
    postgres = start_postgres(tmp / "pg")
    receiver = Receiver()
    runner, url = await serve(receiver)
    worker: Launched | None = None
    try:
        directory = tmp / "catalog"
        directory.mkdir()
        text = CATALOG.format(schemas=ROOT / "schemas", url=url, max_batch=args.max_batch)
        (directory / "destinations.yaml").write_text(text)
        catalog = load_catalog(directory, env={})
        names = Names(PREFIX)
        await ensure_topics(broker.bootstrap, pipeline_topics(catalog, names))
        topic = names.collection(RECORDS)
        partitions = catalog.collections[RECORDS].partitions
        validator = catalog.collections[RECORDS].schema.validator()
        validator.validate(document(user(0), "free", "2026-12-01T10:00:00Z"))

        port = free_port()
        env = segflow_env(broker.bootstrap, PREFIX, tmp / "state", postgres.dsn, "bench", "")
        env |= {"SEGFLOW_CATALOG": str(directory), "SEGFLOW_METRICS_ADDR": f"127.0.0.1:{port}"}
        worker = launch("pipeline.tools.cli worker", [env], tmp / "logs")
        launched = time.time()
        async with aiohttp.ClientSession() as http:
            probes = Probes(
                worker,
                f"http://127.0.0.1:{port}/metrics",
                http,
                tmp / "pg",
                broker.process.pid,
            )
            warm = [document(WARM, "free", "2026-12-01T10:00:00Z")]
            await produce(broker.bootstrap, topic, partitions, warm)
            await wait_for(receiver, receiver.creates, 1, probes, [], launched)
            print(f"warm-up: first export {time.time() - launched:.1f}s after launch", flush=True)
            receiver.creates.discard(WARM)
            n = args.records
            create = await phase(
                "create",
                receiver,
                receiver.creates,
                [document(user(i), "free", "2026-12-01T10:00:00Z") for i in range(n)],
                probes,
                broker.bootstrap,
                topic,
                partitions,
            )
            update = await phase(
                "update",
                receiver,
                receiver.updates,
                [document(user(i), "pro", "2026-12-02T10:00:00Z") for i in range(n)],
                probes,
                broker.bootstrap,
                topic,
                partitions,
            )
            worker.sample()
    finally:
        if worker is not None:
            worker.stop()
        await runner.cleanup()
        postgres.stop()
        broker.stop()
    return {
        "create": create,
        "update": update,
        "worker_cpu_s": round(worker.cpu_seconds(), 1),
        "worker_peak_rss_mib": round(worker.peak_rss / 2**20),
    }


async def main(args: argparse.Namespace) -> int:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    tmp = Path(tempfile.mkdtemp(prefix="bench-destinations-"))
    try:
        figures = await run(args, tmp)
    finally:
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    slowest = min(figures["create"]["records_per_s"], figures["update"]["records_per_s"])
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python"
        f" {platform.python_version()}; load average at start {load}",
        "command": "python -m bench.destinations"
        + (f" --records {args.records}" if args.records != 100_000 else "")
        + (f" --max-batch {args.max_batch}" if args.max_batch != 1000 else ""),
        "records": args.records,
        "max_batch": args.max_batch,
        "method": (
            "embedded Tansu broker and Postgres, one `segflow worker` (a webhook destination,"
            " mode sync, 4 partitions); records documents written straight into the records"
            " topic; an aiohttp receiver in the benchmark process answering 200 at once. Each"
            " phase from producing its first document until every record's export of that kind"
            " arrived"
        ),
        **figures,
        "goal_records_per_s": GOAL,
        "goal_met": slowest >= GOAL and figures["update"]["mismatches"] == 0,
    }
    OUT.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(
        f"worker: {figures['worker_cpu_s']} CPU s, peak RSS {figures['worker_peak_rss_mib']} MiB;"
        f" goal {GOAL:,} records/s {'met' if result['goal_met'] else 'missed'}"
        f" (slowest phase {slowest:,}/s); wrote {OUT.relative_to(ROOT)}"
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--max-batch", type=int, default=1000, help="the webhook's max_batch")
    sys.exit(asyncio.run(main(parser.parse_args())))
