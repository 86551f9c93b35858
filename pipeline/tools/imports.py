"""`segflow imports`: run an import now, and see where each one stands (SPEC 10).

- `imports run NAME` reads everything new in the import's source since its checkpoint, page by
  page, into the pipeline (the worker applies it), and prints how many rows it wrote. A worker
  running the same import meanwhile holds its lock: the command waits for it, so the two never
  read the same pages at once.
- `imports list` prints each import of the catalog with its checkpoint: the greatest watermark
  read, the paging mode, when it last advanced.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from psycopg import sql

from pipeline.catalog import Catalog, load_catalog
from pipeline.errors import SegflowError
from pipeline.runtime.imports import Checkpoints, ImportRunner
from pipeline.runtime.settings import Settings
from pipeline.runtime.topics import Names, ensure_topics, pipeline_topics


def _checkpoints(settings: Settings) -> Checkpoints:
    if not settings.postgres:
        raise SegflowError("SEGFLOW_POSTGRES is not set: imports keep their checkpoints there")
    return Checkpoints(settings.postgres, settings.postgres_schema)


def _spec(catalog: Catalog, name: str) -> Any:
    spec = catalog.imports.get(name)
    if spec is None:
        known = ", ".join(sorted(catalog.imports)) or "none"
        raise SegflowError(f"unknown import {name!r}; the catalog's imports: {known}")
    if not spec.enabled:
        raise SegflowError(f"import {name!r} is disabled: its postgres dsn is empty")
    return spec


async def run_import(settings: Settings, catalog: Catalog, name: str) -> int:
    """Run import `name` once; the rows written."""
    spec = _spec(catalog, name)
    if not settings.broker:
        raise SegflowError("SEGFLOW_BROKER is not set: which broker do the rows go to?")
    names = Names(settings.topic_prefix)
    await ensure_topics(settings.broker, pipeline_topics(catalog, names))
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.broker, acks="all", linger_ms=5, max_batch_size=1024 * 1024
    )
    await producer.start()
    try:
        runner = ImportRunner(spec, catalog, names, _checkpoints(settings), producer)
        written = await runner.run_once()
        return written or 0
    finally:
        await producer.stop()


async def list_imports(settings: Settings, catalog: Catalog) -> list[dict[str, Any]]:
    """Each import with its checkpoint."""
    checkpoints = _checkpoints(settings)
    out = []
    async with await checkpoints.connect() as conn:
        for name, spec in sorted(catalog.imports.items()):
            cursor = await conn.execute(
                sql.SQL("select watermark, mode, updated_at from {} where name = %s").format(
                    checkpoints.table
                ),
                (name,),
            )
            found = await cursor.fetchone()
            out.append(
                {
                    "import": name,
                    "enabled": spec.enabled,
                    "source": spec.table or "query",
                    "watermark": None if found is None else found[0],
                    "mode": None if found is None else found[1],
                    "updatedAt": None if found is None else found[2].isoformat(),
                }
            )
    return out


def cmd_imports(args: argparse.Namespace, settings: Settings) -> int:
    catalog = load_catalog(settings.catalog)
    try:
        if args.imports_command == "run":
            began = time.monotonic()
            written = asyncio.run(run_import(settings, catalog, args.name))
            seconds = time.monotonic() - began
            print(f"import {args.name}: {written} rows written in {seconds:.1f}s")
            return 0
        for entry in asyncio.run(list_imports(settings, catalog)):
            shown = entry["watermark"] if entry["watermark"] is not None else "(never run)"
            state = "" if entry["enabled"] else " (disabled)"
            print(f"{entry['import']}{state}: {entry['source']}, watermark {shown}")
        return 0
    except (psycopg.OperationalError, KafkaError, OSError) as error:
        raise SegflowError(f"imports: {error}") from None


def add_imports_parser(sub: Any) -> None:
    imports = sub.add_parser("imports", help="run an import now, list imports and checkpoints")
    imports_sub = imports.add_subparsers(dest="imports_command", required=True)
    run = imports_sub.add_parser("run", help="read everything new since the checkpoint, now")
    run.add_argument("name")
    imports_sub.add_parser("list", help="each import and its checkpoint")
    imports.set_defaults(func=cmd_imports)
