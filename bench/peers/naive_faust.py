"""The obvious Faust (faust-streaming) implementation of Segflow's segmentation job.

One agent over the events topic; Faust Tables (RocksDB through rocksdict, with changelogs)
for seen event ids, memberships, per-(segment, user) registers and profiles, written per event;
one INSERT … ON CONFLICT per changed row (psycopg, autocommit) and one aiohttp POST per toggle.

    BENCH_BROKER=… BENCH_TOPIC=… BENCH_POSTGRES=… BENCH_SCHEMA=… BENCH_WEBHOOK_URL=… \\
    BENCH_GROUP=… BENCH_STATE_DIR=… python -m bench.peers.naive_faust

Runs until SIGTERM/SIGINT, reading the topic from the earliest offset.
"""

from __future__ import annotations

import json
import logging
import sys

import aiohttp
import faust
import psycopg

from bench.peers.common import (
    Config,
    ddl,
    insert_toggle_sql,
    membership_params,
    profile_params,
    reduce_event,
    segment_key,
    toggle_params,
    upsert_membership_sql,
    upsert_profile_sql,
    with_membership,
)

cfg = Config.from_env()

# Tansu deletes what a topic without explicit retention holds; changelogs must keep everything.
TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}

app = faust.App(
    cfg.group,
    broker=f"kafka://{cfg.broker}",
    store="rocksdb://",  # faust-streaming's rocksdb driver uses rocksdict when installed
    datadir=cfg.state_dir,
    topic_partitions=4,
    topic_replication_factor=1,
    topic_disable_leader=True,
    consumer_auto_offset_reset="earliest",
    # Faust's defaults (60 s session) make every join on Tansu wait ~30 s.
    broker_session_timeout=2.0,
    broker_heartbeat_interval=0.5,
    broker_rebalance_timeout=4.0,
    web_enabled=False,
)

events = app.topic(cfg.topic, key_serializer="raw", value_serializer="json")

seen = app.Table("seen", default=None, extra_topic_configs=TOPIC_CONFIG)
memberships = app.Table("memberships", default=None, extra_topic_configs=TOPIC_CONFIG)
registers = app.Table("registers", default=None, extra_topic_configs=TOPIC_CONFIG)
profiles = app.Table("profiles", default=None, extra_topic_configs=TOPIC_CONFIG)

_db: psycopg.AsyncConnection | None = None
_http: aiohttp.ClientSession | None = None


async def db() -> psycopg.AsyncConnection:
    global _db
    if _db is None or _db.closed:
        _db = await psycopg.AsyncConnection.connect(cfg.postgres, autocommit=True)
        for statement in ddl(cfg.schema):
            await _db.execute(statement)
    return _db


async def http() -> aiohttp.ClientSession:
    global _http
    if _http is None or _http.closed:
        _http = aiohttp.ClientSession()
    return _http


@app.agent(events)
async def segmentation(stream):  # type: ignore[no-untyped-def]
    async for e in stream:
        if seen.get(e["event"]) is not None:
            continue  # a redelivery changes nothing and emits nothing
        seen[e["event"]] = True
        key = segment_key(e)
        m, register, toggle = reduce_event(e, memberships.get(key), registers.get(key))
        memberships[key] = m
        registers[key] = register
        profile = with_membership(profiles.get(e["user"]), e["user"], m)
        profiles[e["user"]] = profile

        conn = await db()
        await conn.execute(upsert_membership_sql(cfg.schema), membership_params(m, json.dumps))
        await conn.execute(upsert_profile_sql(cfg.schema), profile_params(profile, json.dumps))
        if toggle is not None:
            await conn.execute(insert_toggle_sql(cfg.schema), toggle_params(toggle, json.dumps))
            session = await http()
            async with session.post(cfg.webhook_url, json=[toggle]) as response:
                response.raise_for_status()


@app.on_before_shutdown.connect
async def _close(app, **kwargs) -> None:  # type: ignore[no-untyped-def]
    if _http is not None:
        await _http.close()
    if _db is not None:
        await _db.close()


def main() -> None:
    logging.getLogger("faust").setLevel(logging.INFO)
    logging.getLogger("mode").setLevel(logging.INFO)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    sys.argv = [sys.argv[0], "worker", "--loglevel", "info", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
