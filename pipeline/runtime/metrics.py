"""A worker's health and Prometheus metrics: `GET /health` and `GET /metrics` on
`SEGFLOW_METRICS_ADDR`.

Nothing is computed per event for them: the loops keep the counters they keep anyway (per
batch, per write, per request) and a scrape reads them. The materializations run on a thread
of their own; a scrape reads their counters from the worker's thread, which the interpreter
lock makes safe for these plain numbers (a figure may be one batch old).

Lag is the broker's high watermark as last seen in a fetch response minus the offset after the
last record the loop fetched. It is not taken from ListOffsets, which Tansu (the embedded
broker) answers with the last record batch's base offset plus one rather than the true end.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import orjson
from aiohttp import web
from aiokafka import TopicPartition

from pipeline.errors import SegflowError
from pipeline.figures import Figure, Histogram, LoopFigures, Stats, number


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Reporting(Protocol):
    def figures(self) -> Sequence[Figure]: ...


class SinkLoop(Protocol):
    """What metrics read of a materialization's loop (`pipeline.runtime.materialize`)."""

    @property
    def spec(self) -> _Named: ...
    @property
    def sink(self) -> _Reporting: ...
    @property
    def figures(self) -> LoopFigures: ...
    @property
    def records(self) -> int: ...
    @property
    def flushes(self) -> int: ...


class _State(Protocol):
    def size(self) -> tuple[int, int]: ...


class Observed(Protocol):
    """What metrics read of a worker: the figures its loops record, never the worker itself."""

    @property
    def stats(self) -> Stats: ...
    @property
    def figures(self) -> LoopFigures: ...
    @property
    def sinks(self) -> Sequence[SinkLoop]: ...
    @property
    def stopping(self) -> asyncio.Event: ...
    @property
    def states(self) -> Mapping[TopicPartition, _State]: ...


log = logging.getLogger(__name__)

Labels = Mapping[str, str]


class Exposition:
    """Prometheus text format, version 0.0.4: each family's samples together, once."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, help: str, samples: Iterable[tuple[Labels, int | float]]
    ) -> None:
        self.lines += [f"# HELP segflow_{name} {help}", f"# TYPE segflow_{name} {kind}"]
        for labels, value in samples:
            self.lines.append(f"segflow_{name}{_labels(labels)} {number(value)}")

    def histograms(self, name: str, help: str, samples: Iterable[tuple[Labels, Histogram]]) -> None:
        self.lines += [f"# HELP segflow_{name} {help}", f"# TYPE segflow_{name} histogram"]
        for labels, hist in samples:
            for le, n in hist.cumulative():
                self.lines.append(f"segflow_{name}_bucket{_labels({**labels, 'le': le})} {n}")
            self.lines.append(f"segflow_{name}_sum{_labels(labels)} {number(hist.sum)}")
            self.lines.append(f"segflow_{name}_count{_labels(labels)} {hist.count}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(worker: Observed) -> str:
    """Every metric of `worker`, in the Prometheus text format."""
    s = worker.stats
    out = Exposition()
    for name, help, value in (
        ("events_in_total", "Source documents read.", s.events_in),
        (
            "events_derived_total",
            "Valid source documents processed by derivations, redeliveries included.",
            s.derived_events,
        ),
        (
            "dedup_hits_total",
            "Source documents dropped as redeliveries of one already processed.",
            s.redeliveries,
        ),
        (
            "dedup_expired_total",
            "Dedup entries forgotten a window (and its grace) after their acceptance.",
            s.dedup_expired,
        ),
        (
            "dead_letters_total",
            "Invalid source documents sent to the dead-letter topic.",
            s.dead_letters,
        ),
        ("batches_total", "Batches derived and committed.", s.batches),
        (
            "profile_records_merged_total",
            "Anonymous profile records merged into a person's record.",
            s.records_merged,
        ),
        (
            "profile_identity_conflicts_total",
            "Profile events whose anonymousId is linked to another userId (the merge guard).",
            s.identity_conflicts,
        ),
        (
            "profile_group_changes_total",
            "Records joining or leaving calculated groups (each one a segment event).",
            s.group_changes,
        ),
        (
            "profile_group_evaluations_total",
            "Groups evaluated for changed records (only those reading a changed property).",
            s.group_evaluations,
        ),
        (
            "profile_timers_fired_total",
            "Records whose relative-rule timer fired (a group flipping with no new event).",
            s.timers_fired,
        ),
        (
            "profile_import_rows_applied_total",
            "Import rows applied to records (a row read twice is applied once).",
            s.import_rows_applied,
        ),
    ):
        out.family(name, "counter", help, [({}, value)])
    out.family(
        "documents_out_total",
        "counter",
        "Derived documents published, per collection (toggles: segment/toggles).",
        [({"collection": c}, n) for c, n in sorted(s.documents_by_collection.items())],
    )
    out.histograms(
        "derive_batch_seconds",
        "From a derive batch's fetch to its commit (documents, changelog, local state).",
        [({}, s.batch_seconds)],
    )
    sizes = [
        ({"topic": tp.topic, "partition": str(tp.partition)}, state.size())
        for tp, state in sorted(worker.states.items())
    ]
    out.family(
        "state_keys",
        "gauge",
        "Keys in a partition's RocksDB state (RocksDB's estimate).",
        [(labels, keys) for labels, (keys, _) in sizes],
    )
    out.family(
        "state_bytes",
        "gauge",
        "Bytes of a partition's RocksDB state: SST files and memtables.",
        [(labels, size) for labels, (_, size) in sizes],
    )
    loops = _loops(worker)
    now = time.monotonic()
    out.family(
        "consumer_lag",
        "gauge",
        "Records between the last one a loop fetched and the partition's end.",
        [
            ({"loop": f.name, "topic": tp.topic, "partition": str(tp.partition)}, n)
            for f in loops
            for tp, n in sorted(f.current_lag().items())
        ],
    )
    out.family(
        "loop_idle_seconds",
        "gauge",
        "Seconds since a loop last fetched (a loop stuck in a write or retry grows here).",
        [({"loop": f.name}, round(now - f.last_round, 3)) for f in loops],
    )
    sinks = [({"materialization": m.spec.name}, m) for m in worker.sinks]
    out.family(
        "materialization_records_total",
        "counter",
        "Records applied to a materialization.",
        [(labels, m.records) for labels, m in sinks],
    )
    out.family(
        "materialization_writes_total",
        "counter",
        "Writes that made a materialization's records durable.",
        [(labels, m.flushes) for labels, m in sinks],
    )
    _sink_figures(out, worker)
    _import_figures(out, worker)
    return out.text()


def _import_figures(out: Exposition, worker: Observed) -> None:
    """Each scheduled import's counters (SPEC 10), labelled by import."""
    runners = [({"import": r.spec.name}, r.stats) for r in getattr(worker, "imports", ())]
    if not runners:
        return
    for name, kind, help_, attribute in (
        ("import_runs_total", "counter", "Import runs completed.", "runs"),
        ("import_pages_total", "counter", "Pages of rows read.", "pages"),
        ("import_rows_total", "counter", "Rows written on toward records.", "rows"),
        ("import_rows_skipped_total", "counter", "Rows without an identity.", "skipped"),
        ("import_errors_total", "counter", "Failed runs (retried with backoff).", "errors"),
        ("import_last_run_timestamp_seconds", "gauge", "When a run last ended.", "last_run_at"),
    ):
        out.family(name, kind, help_, [(labels, getattr(s, attribute)) for labels, s in runners])


def _loops(worker: Observed) -> list[LoopFigures]:
    """The derive loop's figures, then each materialization's."""
    return [worker.figures, *(m.figures for m in worker.sinks)]


def _sink_figures(out: Exposition, worker: Observed) -> None:
    """Each sink's own figures, one family per name across sinks."""
    families: dict[str, tuple[Figure, list[tuple[Labels, int | float | Histogram]]]] = {}
    for m in worker.sinks:
        for figure in m.sink.figures():
            entry = families.setdefault(figure.name, (figure, []))
            entry[1].append(({"materialization": m.spec.name}, figure.value))
    for name, (first, samples) in families.items():
        plain = [(labels, v) for labels, v in samples if not isinstance(v, Histogram)]
        hists = [(labels, v) for labels, v in samples if isinstance(v, Histogram)]
        if hists:
            out.histograms(name, first.help, hists)
        else:
            out.family(name, first.kind, first.help, plain)


async def serve_metrics(
    worker: Observed,
    addr: tuple[str, int] | None,
    console: Callable[[str], web.Application] | None = None,
) -> web.AppRunner | None:
    """Start the health and metrics endpoint on `addr` (None: none); the runner's `addresses`
    tell the port it took. `console(host)` makes the pages served under `/console/` (the tools
    layer's, `pipeline.tools.console`) for an endpoint listening on `host`."""
    if addr is None:
        return None

    async def health(request: web.Request) -> web.Response:
        now = time.monotonic()
        body = {
            "status": "stopping" if worker.stopping.is_set() else "ok",
            "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in worker.states),
            "loops": {f.name: round(now - f.last_round, 3) for f in _loops(worker)},
        }
        status = 503 if worker.stopping.is_set() else 200
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=render(worker).encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    host, port = addr
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = "address in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise SegflowError(
            f"SEGFLOW_METRICS_ADDR={host}:{port}: cannot listen ({why}); set another port, "
            "0 for any free one, or off"
        ) from exc
    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    if console is not None:
        app.add_subapp("/console/", console(host))

        async def home(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound("/console/")

        app.router.add_get("/", home)
        app.router.add_get("/console", home)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "health and metrics on http://%s:%d/health and /metrics%s",
        shown,
        port,
        f", the console on http://{shown}:{port}/console/" if console is not None else "",
    )
    return runner
