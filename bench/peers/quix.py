"""Segflow's segmentation job on Quix Streams 3.x with its RocksDB state.

A stateful `apply` keeps, per message key (the user — producers key events by user), the seen
event ids, each segment's membership and register, and the user's profile; a `BatchingSink`
upserts each checkpoint's rows into Postgres in one transaction (last row per key wins) and POSTs
that checkpoint's toggles to the webhook as one JSON array.

    BENCH_BROKER=… BENCH_TOPIC=… BENCH_POSTGRES=… BENCH_SCHEMA=… BENCH_WEBHOOK_URL=… \\
    BENCH_GROUP=… BENCH_STATE_DIR=… python -m bench.peers.quix

Runs until SIGTERM/SIGINT, reading the topic from the earliest offset.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import requests
from quixstreams import Application, State
from quixstreams.models.topics import TopicConfig
from quixstreams.sinks import BatchingSink, SinkBatch

from bench.peers.common import (
    Config,
    ddl,
    insert_toggle_sql,
    membership_params,
    profile_params,
    reduce_event,
    toggle_params,
    upsert_membership_sql,
    upsert_profile_sql,
    with_membership,
)

# Tansu deletes what a topic without explicit retention holds; Quix derives its changelog
# topics' retention from the source topic's, which is created with these.
TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}


def segmentation(e: dict[str, Any], state: State) -> dict[str, Any] | None:
    """Reduce one event in the user's state; None for a redelivery."""
    seen_key = "seen:" + e["event"]
    if state.get(seen_key) is not None:
        return None
    state.set(seen_key, 1)
    segment = f"{e['segment']['vendor']}|{e['segment']['name']}"
    m, register, toggle = reduce_event(e, state.get("m:" + segment), state.get("r:" + segment))
    state.set("m:" + segment, m)
    state.set("r:" + segment, register)
    profile = with_membership(state.get("profile"), e["user"], m)
    state.set("profile", profile)
    return {"membership": m, "profile": profile, "toggle": toggle}


class PostgresWebhookSink(BatchingSink):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.conn: psycopg.Connection | None = None
        self.http = requests.Session()

    def setup(self) -> None:
        self.conn = psycopg.connect(self.cfg.postgres)
        with self.conn.transaction():
            for statement in ddl(self.cfg.schema):
                self.conn.execute(statement)

    def write(self, batch: SinkBatch) -> None:
        memberships: dict[tuple, dict[str, Any]] = {}
        profiles: dict[str, dict[str, Any]] = {}
        toggles: list[dict[str, Any]] = []
        for item in batch:
            out = item.value
            m = out["membership"]
            memberships[(m["segment"]["vendor"], m["segment"]["name"], m["user"])] = m
            profiles[out["profile"]["user"]] = out["profile"]
            if out["toggle"] is not None:
                toggles.append(out["toggle"])
        assert self.conn is not None
        schema = self.cfg.schema
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                upsert_membership_sql(schema),
                [membership_params(m, json.dumps) for m in memberships.values()],
            )
            cur.executemany(
                upsert_profile_sql(schema),
                [profile_params(p, json.dumps) for p in profiles.values()],
            )
            if toggles:
                cur.executemany(
                    insert_toggle_sql(schema), [toggle_params(t, json.dumps) for t in toggles]
                )
        if toggles:
            response = self.http.post(
                self.cfg.webhook_url,
                data=json.dumps(toggles),
                headers={"content-type": "application/json"},
                timeout=30,
            )
            response.raise_for_status()


def main() -> None:
    cfg = Config.from_env()
    app = Application(
        broker_address=cfg.broker,
        consumer_group=cfg.group,
        state_dir=cfg.state_dir,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        # librdkafka's default 45 s session makes each join on Tansu wait ~25 s.
        consumer_extra_config={"session.timeout.ms": 2000, "heartbeat.interval.ms": 500},
        loglevel="INFO",
    )
    topic = app.topic(
        cfg.topic,
        key_deserializer="str",
        value_deserializer="json",
        config=TopicConfig(num_partitions=4, replication_factor=1, extra_config=dict(TOPIC_CONFIG)),
    )
    sdf = app.dataframe(topic)
    sdf = sdf.apply(segmentation, stateful=True).filter(lambda out: out is not None)
    sdf.sink(PostgresWebhookSink(cfg))
    app.run()


if __name__ == "__main__":
    main()
