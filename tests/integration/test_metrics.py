"""`segflow worker` serves /health and Prometheus /metrics that match what it did."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline.tools.embedded import free_port
from tests.fixtures.events import generate, reference
from tests.fixtures.stack import Namespace
from tests.fixtures.webhooks import Endpoint
from tests.integration.test_materialize import TABLES, materialize_env, materialized
from tests.integration.test_pipeline import by_user, stop

pytestmark = pytest.mark.integration

SAMPLE = re.compile(r'^(segflow_\w+)(\{(\w+="[^"]*",?)+\})? (-?[0-9.e+-]+|\+Inf)$')


def parse(text: str) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    """Samples by name and label set; fails on a line that is not the text format."""
    samples: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    declared: list[str] = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            declared.append(line.split()[2])
            continue
        if line.startswith("# HELP "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        samples.setdefault(match.group(1), {})[labels] = float(match.group(4))
    assert len(declared) == len(set(declared)), "a family is declared twice"
    return samples


def one(samples: dict[str, dict[Any, float]], name: str, **labels: str) -> float:
    return samples[name][frozenset(labels.items())]


async def test_health_and_metrics_match_the_work_done(
    namespace: Namespace, postgres: str, pg_schema: str, endpoint: Endpoint, tmp_path: Path
) -> None:
    events = generate(3000, seed=61, redeliveries=0.1)
    expected = reference(events)
    bad = [{**events[0], "event": "not-a-uuid"}, {**events[1], "segment": {"vendor": 0}}]
    port = free_port()
    env = {
        **materialize_env(namespace, postgres, pg_schema, endpoint),
        "SEGFLOW_METRICS_ADDR": f"127.0.0.1:{port}",
    }
    worker = namespace.worker(tmp_path / "worker.log", **env)
    base = f"http://127.0.0.1:{port}"
    try:
        await namespace.produce("segment/events", [*events, *bad], partition_of=by_user)
        toggles = len(expected["segment/toggles"])
        rows = sum(len(expected[name]) for name in TABLES)
        await materialized(namespace, postgres, pg_schema, endpoint, toggles)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/health") as response:
                assert response.status == 200
                health = await response.json()
            # A write's figures follow its commit by a moment: scrape until the last is in.
            for _ in range(50):
                async with http.get(f"{base}/metrics") as response:
                    assert response.status == 200
                    content_type = response.headers["Content-Type"]
                    assert content_type.startswith("text/plain; version=0.0.4")
                    samples = parse(await response.text())
                written = samples["segflow_postgres_write_rows_sum"]
                if sum(written.values()) >= rows:
                    break
                await asyncio.sleep(0.2)
    finally:
        stop(worker)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]

    assert health["status"] == "ok"
    # 4 partitions of each derivation source: segment/events and the four profile stages'
    # (identity, records, the unique index: the shipped email is unique; manual memberships)
    assert len(health["partitions"]) == 5 * 4
    assert set(health["loops"]) == {
        "derive",
        "materialize.postgres",
        "materialize.profile-records",
        "materialize.webhook",
    }

    distinct = len({e["event"] for e in events})
    assert one(samples, "segflow_events_in_total") == len(events) + len(bad)
    assert one(samples, "segflow_dead_letters_total") == len(bad)
    assert one(samples, "segflow_dedup_hits_total") == len(events) - distinct
    assert one(samples, "segflow_events_derived_total") == len(events)  # redeliveries too
    assert one(samples, "segflow_documents_out_total", collection="segment/toggles") == toggles
    assert one(samples, "segflow_documents_out_total", collection="segment/memberships") >= len(
        expected["segment/memberships"]
    )
    # Everything is processed and written: every loop is at the end of every partition.
    lag = samples["segflow_consumer_lag"]
    loops = {dict(labels)["loop"] for labels in lag}
    # profile-records reads an empty topic here (segment events only): no lag figure yet.
    assert loops == {"derive", "materialize.postgres", "materialize.webhook"}
    assert set(lag.values()) == {0.0}
    pg = {"materialization": "postgres"}
    assert one(samples, "segflow_postgres_write_rows_sum", **pg) >= rows
    writes = one(samples, "segflow_postgres_write_rows_count", **pg)
    assert writes == one(samples, "segflow_materialization_writes_total", **pg)
    assert one(samples, "segflow_postgres_write_rows_bucket", le="+Inf", **pg) == writes
    assert one(samples, "segflow_postgres_write_seconds_count", **pg) == writes
    hook = {"materialization": "webhook"}
    assert one(samples, "segflow_webhook_toggles_delivered_total", **hook) == toggles
    assert one(samples, "segflow_webhook_retries_total", **hook) == 0
    assert one(samples, "segflow_webhook_toggles_parked_total", **hook) == 0
    requests = one(samples, "segflow_webhook_requests_total", **hook)
    assert requests == len(endpoint.requests)
    assert one(samples, "segflow_webhook_request_seconds_count", **hook) == requests
    assert one(samples, "segflow_webhook_batch_toggles_sum", **hook) == toggles


async def test_a_taken_metrics_port_stops_the_worker_with_a_clear_error(
    namespace: Namespace, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "worker.log"
        worker = namespace.worker(log, SEGFLOW_METRICS_ADDR=f"127.0.0.1:{port}")
        try:
            code = worker.wait(60)
        except subprocess.TimeoutExpired:
            stop(worker)
            raise
    assert code != 0
    text = log.read_text()
    assert f"SEGFLOW_METRICS_ADDR=127.0.0.1:{port}: cannot listen (address in use)" in text
    assert "Traceback" not in text
