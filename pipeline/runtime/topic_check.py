"""Existing topics against the settings the pipeline asks for, before anything runs on them.

A topic that already exists keeps the settings it was created with, whatever the catalog says
now. Running on one that contradicts them loses data quietly: a changelog or a derived
collection that is not compacted grows without end (and a consumer reading from the start no
longer gets current state), an event stream that is compacted drops events that share a key, a
topic with fewer partitions than the catalog says leaves some partitions' owners without their
input. So a worker refuses to start on them, naming the topic, the setting, what it has and what
was expected.

The configs come from DescribeConfigs. Apache Kafka answers with every config, defaults
included; the embedded broker (Tansu) answers with exactly the configs the topic was created
with, so a config it leaves out has Kafka's default. A broker that does not answer (an error, or
an error code for the topic) gets its configs unchecked, with a log line; partition counts are
checked whatever it answers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from pipeline.errors import SegflowError

log = logging.getLogger(__name__)

DEFAULTS = {"cleanup.policy": "delete", "retention.ms": "604800000"}
"""Apache Kafka's defaults, for a config the broker's answer leaves out."""

Plan = Mapping[str, tuple[int, Mapping[str, str]]]


class TopicMismatch(SegflowError):
    """Existing topics whose settings contradict what the pipeline needs."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n  ".join(problems)
        super().__init__(
            f"{len(problems)} existing topic setting(s) contradict the pipeline's:\n  {lines}"
            "\nChange them (kafka-configs.sh --alter --entity-type topics --entity-name TOPIC"
            " --add-config NAME=VALUE; kafka-topics.sh --alter --partitions N), or delete the"
            " topics to have them created again (docs/deploying.md)"
        )


def contradictions(
    name: str,
    expected: tuple[int, Mapping[str, str]],
    partitions: int,
    configs: Mapping[str, str] | None,
) -> tuple[list[str], list[str]]:
    """(problems, warnings) of topic `name`, which has `partitions` and `configs` (None: the
    broker did not describe them), where `expected` is what the pipeline would create."""
    want_partitions, want = expected
    problems: list[str] = []
    warnings: list[str] = []
    if partitions < want_partitions:
        problems.append(
            f"topic {name!r}: has {partitions} partition(s), expected {want_partitions}"
            " (the catalog's partitions)"
        )
    if configs is None:
        return problems, warnings
    have = {**DEFAULTS, **configs}
    policy = set(have["cleanup.policy"].replace(" ", "").split(","))
    if want.get("cleanup.policy") == "compact" and "compact" not in policy:
        problems.append(
            f"topic {name!r}: cleanup.policy is {have['cleanup.policy']!r}, expected 'compact'"
            " (each key's last record is what readers restore or materialize)"
        )
    elif want.get("cleanup.policy") == "delete" and "compact" in policy:
        problems.append(
            f"topic {name!r}: cleanup.policy is {have['cleanup.policy']!r}, expected 'delete'"
            " (its records share keys: compaction would drop some before they are read)"
        )
    elif want.get("cleanup.policy") == "delete" and have["retention.ms"] != want["retention.ms"]:
        warnings.append(  # an operator's choice, perhaps: said, not refused
            f"topic {name!r}: retention.ms is {have['retention.ms']}, the pipeline would"
            f" create it with {want['retention.ms']}"
        )
    return problems, warnings


async def describe(
    admin: AIOKafkaAdminClient, names: list[str]
) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    """Partition counts of `names`, and the configs of those the broker describes."""
    partitions = {
        topic["topic"]: len(topic["partitions"])
        for topic in await admin.describe_topics(names)
        if not topic["error_code"]
    }
    configs: dict[str, dict[str, str]] = {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    try:
        responses = await admin.describe_configs(resources)
    except KafkaError as exc:
        log.info("the broker did not describe topic configs (%r): not checking them", exc)
        return partitions, configs
    for response in responses:
        # v0-v2 alike: (error code, message, type, name, [(name, value, ...), ...])
        for code, _message, _type, name, entries in response.resources:
            if code:
                log.info("the broker did not describe %s (error %d): not checking it", name, code)
                continue
            configs[name] = {entry[0]: entry[1] for entry in entries if entry[1] is not None}
    return partitions, configs


async def check_existing(admin: AIOKafkaAdminClient, plan: Plan, existing: list[str]) -> None:
    """Raise TopicMismatch listing every problem of the `existing` topics of `plan`; log the
    settings that only differ (a retention an operator changed)."""
    if not existing:
        return
    partitions, configs = await describe(admin, existing)
    problems: list[str] = []
    for name in existing:
        if name not in partitions:
            continue  # deleted meanwhile: nothing runs on it
        found, warnings = contradictions(name, plan[name], partitions[name], configs.get(name))
        problems += found
        for warning in warnings:
            log.warning("%s", warning)
    if problems:
        raise TopicMismatch(problems)
