"""Topic settings on the embedded broker: what the pipeline creates, and a worker refusing
existing topics that contradict them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import UnsupportedVersionError

from pipeline.catalog import Catalog
from pipeline.runtime.settings import Settings
from pipeline.runtime.topic_check import TopicMismatch, describe
from pipeline.runtime.topics import (
    TOPIC_CONFIG,
    Names,
    ensure_topics,
    pipeline_topics,
    retained,
)
from pipeline.runtime.worker import Worker
from tests.fixtures.stack import ROOT

WEEK = 7 * 86400.0


def names() -> Names:
    return Names(f"t{uuid.uuid4().hex[:10]}.")


async def create(bootstrap: str, topics: dict[str, tuple[int, dict[str, str]]]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, p, 1, topic_configs=c) for n, (p, c) in topics.items()]
        )
    finally:
        await admin.close()


async def described(
    bootstrap: str, topics: list[str]
) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await describe(admin, topics)
    finally:
        await admin.close()


async def test_the_broker_describes_the_settings_the_pipeline_created(
    broker: str, catalog: Catalog
) -> None:
    ns = names()
    plan = pipeline_topics(catalog, ns)
    await ensure_topics(broker, plan)
    partitions, configs = await described(broker, list(plan))
    assert partitions == {name: count for name, (count, _) in plan.items()}
    assert configs == {name: config for name, (_, config) in plan.items()}
    compacted = {"cleanup.policy": "compact", "segment.ms": str(86400 * 1000)}
    assert configs[ns.changelog("segment/events")] == compacted
    assert configs[ns.collection("segment/memberships")] == compacted
    assert configs[ns.collection("segment/events")] == retained(WEEK)
    assert configs[ns.shuffle("segment/events")] == retained(WEEK)
    assert configs[ns.dead_letter("segment/events")] == retained(30 * 86400.0)
    await ensure_topics(broker, plan)  # its own topics contradict nothing


async def test_a_worker_refuses_topics_that_contradict_the_pipeline(
    broker: str, catalog: Catalog, tmp_path: Path
) -> None:
    ns = names()
    changelog = ns.changelog("segment/events")
    memberships, events = ns.collection("segment/memberships"), ns.collection("segment/events")
    await create(
        broker,
        {changelog: (4, TOPIC_CONFIG), memberships: (4, TOPIC_CONFIG), events: (2, TOPIC_CONFIG)},
    )
    settings = Settings(broker=broker, data_dir=tmp_path, topic_prefix=ns.prefix)
    with pytest.raises(TopicMismatch) as caught:
        await Worker(settings, catalog, bootstrap=broker).run()
    assert caught.value.problems == [
        f"topic '{events}': has 2 partition(s), expected 4 (the catalog's partitions)",
        f"topic '{memberships}': cleanup.policy is 'delete', expected 'compact' (each key's last"
        " record is what readers restore or materialize)",
        f"topic '{changelog}': cleanup.policy is 'delete', expected 'compact' (each key's last"
        " record is what readers restore or materialize)",
    ]
    assert not (tmp_path / "state").exists()  # it stopped before opening any state


async def test_segflow_worker_exits_with_the_problems(broker: str, tmp_path: Path) -> None:
    ns = names()
    changelog = ns.changelog("segment/events")
    await create(broker, {changelog: (4, TOPIC_CONFIG)})
    env = {
        **os.environ,
        "SEGFLOW_BROKER": broker,
        "SEGFLOW_TOPIC_PREFIX": ns.prefix,
        "SEGFLOW_DATA_DIR": str(tmp_path),
        "SEGFLOW_CATALOG": str(ROOT / "catalog"),
        "SEGFLOW_METRICS_ADDR": "off",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.tools.cli", "worker"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert (
        f"segflow: 1 existing topic setting(s) contradict the pipeline's:\n  topic '{changelog}':"
        " cleanup.policy is 'delete', expected 'compact'"
    ) in done.stderr
    assert "kafka-configs.sh --alter --entity-type topics" in done.stderr


async def test_partitions_are_checked_where_configs_are_not_described(
    broker: str, catalog: Catalog, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ns = names()
    events = ns.collection("segment/events")
    await create(broker, {events: (1, {"cleanup.policy": "compact"})})

    async def unsupported(self: AIOKafkaAdminClient, *args: object, **kwargs: object) -> None:
        raise UnsupportedVersionError("DescribeConfigs")

    monkeypatch.setattr(AIOKafkaAdminClient, "describe_configs", unsupported)
    with caplog.at_level(logging.INFO), pytest.raises(TopicMismatch) as caught:
        await ensure_topics(broker, pipeline_topics(catalog, ns))
    assert caught.value.problems == [
        f"topic '{events}': has 1 partition(s), expected 4 (the catalog's partitions)"
    ]  # and not its compaction, which the broker did not describe
    assert "the broker did not describe topic configs" in caplog.text
