"""`segflow test`: Flow-style test files run against the real runtime, each from empty state."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
import zlib
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from derivations.profiles import durations
from derivations.profiles.durations import Duration, describe_bad, parse_duration
from derivations.profiles.instants import (
    Instant,
    format_instant,
    from_epoch_ns,
    parse_instant,
    to_epoch_ns,
)
from pipeline.catalog import Catalog
from pipeline.documents import pointers
from pipeline.documents.pointers import encode_key
from pipeline.documents.validation import Validator
from pipeline.errors import SegflowError, TestFileError
from pipeline.runtime.clock import TestClock, wall_clock
from pipeline.runtime.settings import Settings
from pipeline.runtime.topics import Names, ensure_topics, pipeline_topics
from pipeline.runtime.worker import Worker
from pipeline.tools.read import current_documents

VERIFY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Step:
    kind: str  # "ingest" | "verify" | "clock" | "advance"
    collection: str = ""
    documents: list[Any] = field(default_factory=list)
    time: Instant | None = None
    """`clock`: the time it sets."""
    duration: Duration | None = None
    """`advance`: how far it moves the clock."""


@dataclass(frozen=True)
class TestCase:
    __test__ = False
    file: Path
    name: str
    steps: list[Step]

    @property
    def clocked(self) -> bool:
        """Whether the test runs on its own clock (it has a `clock` or `advance` step)."""
        return any(step.kind in ("clock", "advance") for step in self.steps)


@dataclass
class Outcome:
    test: TestCase
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def load_test_file(path: Path, catalog: Catalog) -> list[TestCase]:
    """Parse and check a test file; every problem names the file, the test and the step."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TestFileError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise TestFileError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tests"), dict):
        raise TestFileError(
            f"{path}: expected a mapping with a 'tests' mapping of test name -> steps"
        )
    unknown = set(data) - {"tests", "import"}
    if unknown:
        raise TestFileError(
            f"{path}: unknown top-level key(s) {sorted(unknown)}; expected 'tests' (and 'import')"
        )
    problems: list[str] = []
    cases: list[TestCase] = []
    for name, raw_steps in data["tests"].items():
        where = f"{path}: test {name!r}"
        if not isinstance(raw_steps, list) or not raw_steps:
            problems.append(f"{where}: expected a non-empty list of steps")
            continue
        steps: list[Step] = []
        for number, raw in enumerate(raw_steps, 1):
            step_where = f"{where}, step {number}"
            step = _parse_step(raw, catalog, step_where, problems)
            if step is not None:
                steps.append(step)
        cases.append(TestCase(file=path, name=str(name), steps=steps))
    if problems:
        raise TestFileError("\n".join(problems))
    return cases


_KINDS = ("ingest", "verify", "clock", "advance")


def _parse_step(raw: Any, catalog: Catalog, where: str, problems: list[str]) -> Step | None:
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in _KINDS:
        problems.append(
            f"{where}: expected a mapping with exactly one of 'ingest', 'verify', 'clock' or"
            " 'advance'"
        )
        return None
    kind, body = next(iter(raw.items()))
    if kind == "clock":
        instant = parse_instant(body) if isinstance(body, str) else None
        if instant is None:
            problems.append(
                f"{where} (clock): expected an RFC 3339 date-time such as"
                f' "2024-05-01T00:00:00Z", not {_show_yaml(body)}'
            )
            return None
        return Step(kind, time=instant)
    if kind == "advance":
        duration = parse_duration(body)
        if duration is None:
            problems.append(f"{where} (advance): {describe_bad(body)}")
            return None
        return Step(kind, duration=duration)
    if not isinstance(body, dict) or set(body) - {"collection", "documents"}:
        problems.append(f"{where} ({kind}): expected only 'collection' and 'documents'")
        return None
    collection = body.get("collection")
    documents = body.get("documents")
    if not isinstance(collection, str) or collection not in catalog.collections:
        problems.append(
            f"{where} ({kind}): unknown collection {collection!r}; "
            f"expected one of {sorted(catalog.collections)}"
        )
        return None
    if not isinstance(documents, list):
        problems.append(f"{where} ({kind} {collection}): 'documents' must be a list")
        return None
    if kind == "ingest":
        if collection in catalog.derivations:
            problems.append(
                f"{where} (ingest {collection}): cannot ingest into a derived collection"
            )
            return None
        validator = Validator(catalog.collections[collection].schema)
        for i, doc in enumerate(documents):
            for error in validator.errors(doc):
                problems.append(f"{where} (ingest {collection}), document {i}: {error}")
    return Step(kind=kind, collection=collection, documents=documents)


def mismatches(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where `actual` does not contain `expected` (objects: subset; arrays: same length)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path or '/'}: expected an object, got {_show(actual)}"]
        out: list[str] = []
        for k, v in expected.items():
            here = f"{path}/{pointers.escape(k)}"
            if k not in actual:
                out.append(f"{here}: expected {_show(v)}, but it is absent")
            else:
                out += mismatches(v, actual[k], here)
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path or '/'}: expected an array, got {_show(actual)}"]
        if len(expected) != len(actual):
            where = path or "/"
            return [
                f"{where}: expected {len(expected)} item(s), got {len(actual)}: {_show(actual)}"
            ]
        return [
            m
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for m in mismatches(e, a, f"{path}/{i}")
        ]
    if (
        type(expected) is not type(actual)
        and not (
            isinstance(expected, int | float)
            and isinstance(actual, int | float)
            and not isinstance(expected, bool)
            and not isinstance(actual, bool)
        )
    ) or expected != actual:
        return [f"{path or '/'}: expected {_show(expected)}, got {_show(actual)}"]
    return []


def _show(value: Any) -> str:
    return orjson.dumps(value).decode()


def _show_yaml(value: Any) -> str:
    try:
        return _show(value)
    except TypeError:  # a YAML date or time, say
        return repr(value)


def compare(expected: list[Any], actual: list[Any]) -> list[str]:
    out = []
    if len(expected) != len(actual):
        out.append(f"expected {len(expected)} document(s), got {len(actual)}")
    for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
        out += [f"document {i}: {m}" for m in mismatches(e, a)]
    if out:
        out.append("actual documents, in key order:")
        out += [f"  {_show(a)}" for a in actual] or ["  (none)"]
    return out


class Runner:
    """Runs test cases one at a time, each in its own namespace on one broker."""

    def __init__(self, settings: Settings, catalog: Catalog, bootstrap: str) -> None:
        self.settings = settings
        self.catalog = catalog
        self.bootstrap = bootstrap

    async def run(self, case: TestCase) -> Outcome:
        outcome = Outcome(case)
        prefix = f"{self.settings.topic_prefix}test-{uuid.uuid4().hex[:10]}."
        data_dir = Path(tempfile.mkdtemp(prefix="segflow-test-"))
        settings = self.settings.with_(topic_prefix=prefix, data_dir=data_dir)
        clock = TestClock(time.time_ns()) if case.clocked else None
        worker = Worker(
            settings,
            self.catalog,
            bootstrap=self.bootstrap,
            group=False,
            materialize=False,
            clock=clock or wall_clock,
        )
        await ensure_topics(self.bootstrap, pipeline_topics(self.catalog, Names(prefix)))
        running = asyncio.create_task(worker.run())
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=1)
        await producer.start()
        names = Names(prefix)
        targets: dict[TopicPartition, int] = {}
        # One partition per test, varying between tests: documents fan out through the shuffle.
        partition = zlib.crc32(case.name.encode())
        try:
            for number, step in enumerate(case.steps, 1):
                label = f"step {number} ({step.kind} {step.collection})"
                if step.kind == "ingest":
                    await self._ingest(producer, names, step, targets, partition, clock)
                    continue
                if step.kind in ("clock", "advance"):
                    assert clock is not None
                    label = f"step {number} ({step.kind})"
                    # What came before is processed at the time it was ingested at.
                    await self._wait(worker, running, targets, label)
                    await self._move(worker, running, clock, step, label)
                    continue
                await self._wait(worker, running, targets, label)
                spec = self.catalog.collections[step.collection]
                actual = await current_documents(
                    self.bootstrap, names.collection(step.collection), spec
                )
                problems = compare(step.documents, actual)
                if problems:
                    outcome.failures.append(label + ":")
                    outcome.failures += [f"  {p}" for p in problems]
                    break
        except SegflowError as exc:
            outcome.failures.append(str(exc))
        finally:
            await producer.stop()
            worker.stop()
            with contextlib.suppress(Exception):
                await running
            await self._drop_topics(names)
            shutil.rmtree(data_dir, ignore_errors=True)
        return outcome

    async def _ingest(
        self,
        producer: AIOKafkaProducer,
        names: Names,
        step: Step,
        targets: dict[TopicPartition, int],
        partition: int,
        clock: TestClock | None,
    ) -> None:
        """Write a step's documents in order to one partition, so they arrive in file order.
        On the test's clock, records carry its time: what a missing occurredAt gets."""
        spec = self.catalog.collections[step.collection]
        topic = names.collection(step.collection)
        key_of = pointers.key_getter(spec.key)
        timestamp_ms = None if clock is None else clock() // 1_000_000
        sends = [
            await producer.send(
                topic,
                orjson.dumps(doc),
                key=encode_key(key_of(doc)),
                partition=partition % spec.partitions,
                timestamp_ms=timestamp_ms,
            )
            for doc in step.documents
        ]
        for meta in await asyncio.gather(*sends):
            tp = TopicPartition(meta.topic, meta.partition)
            targets[tp] = max(targets.get(tp, 0), meta.offset + 1)

    async def _move(
        self,
        worker: Worker,
        running: asyncio.Task[None],
        clock: TestClock,
        step: Step,
        label: str,
    ) -> None:
        """Set or advance the clock, then wait until every timer due by then has fired."""
        if step.time is not None:
            now = step.time
        else:
            assert step.duration is not None
            now = durations.add(from_epoch_ns(clock()), step.duration)
        clock.set(to_epoch_ns(now))
        progress = worker.progress
        await _unless_stopped(
            progress.wait_for(lambda: progress.timers_through >= clock()),
            running,
            label,
            f"the timers due by {format_instant(now)} to fire",
        )

    async def _wait(
        self,
        worker: Worker,
        running: asyncio.Task[None],
        targets: dict[TopicPartition, int],
        label: str,
    ) -> None:
        await _unless_stopped(
            worker.caught_up(targets),
            running,
            label,
            "the pipeline to process the ingested documents",
        )

    async def _drop_topics(self, names: Names) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        with contextlib.suppress(Exception):
            await admin.start()
            await admin.delete_topics(list(pipeline_topics(self.catalog, names)))
        with contextlib.suppress(Exception):
            await admin.close()


async def _unless_stopped(
    awaited: Coroutine[Any, Any, None], running: asyncio.Task[None], label: str, what: str
) -> None:
    """Wait for `awaited`, or fail the step if the worker stops or VERIFY_TIMEOUT_S pass."""
    waiting = asyncio.ensure_future(awaited)
    done, _ = await asyncio.wait(
        [waiting, running], timeout=VERIFY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
    )
    if waiting in done:
        return
    waiting.cancel()
    if running in done:
        raise SegflowError(f"{label}: the worker stopped: {running.exception()!r}")
    raise SegflowError(f"{label}: timed out after {VERIFY_TIMEOUT_S:.0f}s waiting for {what}")


async def run_files(
    files: Sequence[Path], settings: Settings, catalog: Catalog, bootstrap: str, out: Any
) -> bool:
    """Run every test of every file; print a line per test and diffs of failures."""
    cases = [case for path in files for case in load_test_file(path, catalog)]
    runner = Runner(settings, catalog, bootstrap)
    failed = 0
    for case in cases:
        outcome = await runner.run(case)
        mark = "ok  " if outcome.passed else "FAIL"
        print(f"{mark} {case.file}: {case.name}", file=out, flush=True)
        for line in outcome.failures:
            print(f"     {line}", file=out)
        failed += not outcome.passed
    print(f"{len(cases) - failed} passed, {failed} failed", file=out)
    return failed == 0
