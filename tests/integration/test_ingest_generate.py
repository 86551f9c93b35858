"""`segflow ingest` and `segflow generate` as users run them, against the embedded broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from pipeline.runtime.produce import PRODUCER
from pipeline.runtime.topics import read_to_end
from tests.fixtures.stack import ROOT, Namespace

pytestmark = pytest.mark.integration

EVENTS = "segment/events"


def segflow(
    *args: str, env: dict[str, str], stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pipeline.tools.cli", *args]
    result = subprocess.run(
        command, input=stdin, capture_output=True, cwd=ROOT, env=env, timeout=120
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


async def records(ns: Namespace, collection: str = EVENTS) -> list[ConsumerRecord]:
    """Every record of the collection's topic, in partition and offset order."""
    topic = ns.names.collection(collection)
    partitions = ns.catalog.collections[collection].partitions
    starts = {TopicPartition(topic, p): 0 for p in range(partitions)}
    found: list[ConsumerRecord] = []
    async for batch in read_to_end(ns.bootstrap, starts):
        found += batch
    return sorted(found, key=lambda r: (r.partition, r.offset))


def by_id(docs: list[Any]) -> list[Any]:
    return sorted(docs, key=lambda d: d["event"])


def event(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "event": f"00000000-0000-4000-8000-{n:012d}",
        "timestamp": "2021-10-08T02:36:21Z",
        "user": f"usr-{n:06d}",
        "segment": {"vendor": 1, "name": "seg-1"},
        **extra,
    }


VALID = [event(1), event(6, remove=True), event(8, value="v")]
MISSING_TIMESTAMP = {k: v for k, v in event(4).items() if k != "timestamp"}
LINES = [
    orjson.dumps(VALID[0]),
    orjson.dumps(event(2, event="nope")),
    b"",
    orjson.dumps(MISSING_TIMESTAMP),
    b'{"event": nope}',
    b"  " + orjson.dumps(VALID[1]),
    b"   ",
    orjson.dumps(VALID[2]),
    orjson.dumps(event(9, remove=True, value="v", user=7)),
]
EXPECTED_ERRORS = [
    "line 2: /event: must be a UUID (32 hexadecimal digits grouped 8-4-4-4-12)",
    "line 4: /: 'timestamp' is a required property",
    "line 5: /: not valid JSON (invalid literal, expected 'null' at column 11)",
    "line 9: /: `value` may not appear with `remove`",
    "line 9: /user: 7 is not of type 'string'",
]


@pytest.fixture
def mixed_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(LINES))  # no newline after the last line
    return path


async def test_ingest_sends_valid_lines_and_reports_each_invalid_one(
    namespace: Namespace, mixed_file: Path
) -> None:
    result = segflow("ingest", EVENTS, str(mixed_file), "--batch", "2", env=namespace.env())
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines[:-1] == EXPECTED_ERRORS
    assert lines[-1] == "sent 3 document(s), 4 invalid line(s)"
    got = await records(namespace)
    assert by_id([orjson.loads(r.value) for r in got]) == by_id(VALID)
    assert all(dict(r.headers)[PRODUCER] == b"segflow-ingest" for r in got)


async def test_ingest_strict_sends_nothing_when_a_line_is_invalid(
    namespace: Namespace, mixed_file: Path
) -> None:
    result = segflow("ingest", EVENTS, str(mixed_file), "--strict", env=namespace.env())
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[: len(EXPECTED_ERRORS)] == EXPECTED_ERRORS
    assert lines[-1] == "sent 0 document(s), 4 invalid line(s)"
    from_stdin = segflow("ingest", EVENTS, "--strict", env=namespace.env(), stdin=b"\n".join(LINES))
    assert from_stdin.returncode == 1
    assert from_stdin.stderr.splitlines()[-1] == "sent 0 document(s), 4 invalid line(s)"
    assert await records(namespace) == []


async def test_ingest_strict_sends_everything_when_all_lines_are_valid(
    namespace: Namespace, tmp_path: Path
) -> None:
    docs = [event(n) for n in range(2500)]
    path = tmp_path / "valid.jsonl"
    path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    result = segflow("ingest", EVENTS, str(path), "--strict", env=namespace.env())
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "sent 2500 document(s), 0 invalid line(s)"
    assert by_id([orjson.loads(r.value) for r in await records(namespace)]) == by_id(docs)


async def test_ingest_reads_stdin(namespace: Namespace) -> None:
    docs = [event(n, remove=True) for n in range(1200)]
    body = b"\r\n".join(orjson.dumps(d) for d in docs) + b"\r\n\r\n"
    result = segflow("ingest", EVENTS, env=namespace.env(), stdin=body)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["sent 1200 document(s), 0 invalid line(s)"]
    assert by_id([orjson.loads(r.value) for r in await records(namespace)]) == by_id(docs)


@pytest.mark.parametrize(
    ("collection", "message"),
    [
        ("segment/event", "unknown collection 'segment/event' (did you mean 'segment/events'?)"),
        ("segment/toggles", "collection 'segment/toggles' is derived from 'segment/events'"),
    ],
)
def test_ingest_refuses_unknown_and_derived_collections(
    namespace: Namespace, collection: str, message: str
) -> None:
    result = segflow("ingest", collection, env=namespace.env(), stdin=b"")
    assert result.returncode == 2
    assert message in result.stderr


def test_ingest_needs_a_broker(namespace: Namespace, mixed_file: Path) -> None:
    result = segflow("ingest", EVENTS, str(mixed_file), env=namespace.env(SEGFLOW_BROKER=""))
    assert result.returncode == 2
    assert "SEGFLOW_BROKER is not set" in result.stderr


def test_generate_with_a_seed_is_reproducible(namespace: Namespace) -> None:
    args = ("generate", "--stdout", "--seed", "7", "--count", "1000", "--rate", "0")
    first = segflow(*args, "--repeat-ratio", "0.1", "--timezones", env=namespace.env())
    again = segflow(*args, "--repeat-ratio", "0.1", "--timezones", env=namespace.env())
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 1000
    assert first.stdout == again.stdout
    other = segflow(*args[:3], "8", *args[4:], env=namespace.env())
    assert other.stdout != first.stdout


async def test_generate_to_the_broker(namespace: Namespace) -> None:
    result = segflow("generate", "--count", "5000", "--rate", "0", env=namespace.env())
    assert result.returncode == 0, result.stderr
    got = await records(namespace)
    assert len(got) == 5000
    assert len({orjson.loads(r.value)["event"] for r in got}) == 5000
    assert all(dict(r.headers)[PRODUCER] == b"segflow-generate" for r in got)


async def test_generate_keeps_the_rate(namespace: Namespace) -> None:
    result = segflow("generate", "--rate", "2000", "--duration", "5", env=namespace.env())
    assert result.returncode == 0, result.stderr
    stamps = sorted(r.timestamp for r in await records(namespace))
    assert len(stamps) == 10_000
    rate = len(stamps) / ((stamps[-1] - stamps[0]) / 1000)
    print(f"measured {rate:.0f} events/s over {(stamps[-1] - stamps[0]) / 1000:.2f}s")
    assert rate == pytest.approx(2000, rel=0.1)
    # Steady, not bursty: every second of the run holds about its share.
    per_second = [0] * 5
    for ts in stamps:
        per_second[min(4, (ts - stamps[0]) // 1000)] += 1
    assert all(s == pytest.approx(2000, rel=0.2) for s in per_second), per_second
