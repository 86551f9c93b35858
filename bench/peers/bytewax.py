"""Segflow's segmentation job on Bytewax 0.21 with its in-memory keyed state.

Bytewax's `KafkaSource` reads every partition of the topic from the earliest offset (it assigns
the partitions itself, without a consumer group, and keeps polling at the end of a partition).
Each message is keyed by its Kafka key (the user — producers key events by user), so that
Bytewax routes all of a user's events, in order, to the worker that holds that user's state. A
`stateful_batch` step keeps, per user, the seen event ids, each segment's membership and
register, and the user's profile (in memory, like any Bytewax state without recovery), and
emits one output per new event. A `DynamicSink` writes what each worker emitted, batch by batch,
where it was emitted (no further exchange between processes): it upserts the batch's rows into
Postgres in one transaction (last row per key wins) and POSTs the batch's toggles to the webhook
as one JSON array.

Batching: Bytewax hands the sink at most 1,024 outputs at a time, whatever the source's batch
size. But the stateful step emits a poll's outputs grouped by user, so the larger the polls
(`BATCH_SIZE` messages per partition), the more of a sink batch's rows are the same user's and
collapse into one (0.97 rows written per output with polls of 50,000, 1.6 with 5,000). A
`FixedPartitionedSink` that gathers larger transactions (flushing at each epoch's snapshot)
was measured too: its exchange of the outputs to the partitions' workers cost more than the
larger transactions saved.

    BENCH_BROKER=… BENCH_TOPIC=… BENCH_POSTGRES=… BENCH_SCHEMA=… BENCH_WEBHOOK_URL=… \\
    BENCH_GROUP=… BENCH_STATE_DIR=… python -m bench.peers.bytewax

Several processes make one Bytewax cluster (one worker each): `BENCH_PROCESS` (this process'
index), `BENCH_PROCESSES` (how many) and `BENCH_ADDRESSES` (`host:port` of every process,
comma-separated, the same list for all). Without them it runs as a single process.
`BENCH_BYTEWAX_BATCH` (messages per partition per poll, default 50,000) and
`BENCH_BYTEWAX_EPOCH_S` (default 10, Bytewax's own) are there for measurements.

Runs until SIGTERM/SIGINT; there is no recovery (state lives in memory only).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import bytewax.operators as op
import psycopg
import requests
from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.run import cli_main
from bytewax.tracing import setup_tracing
from confluent_kafka import OFFSET_BEGINNING

from bench.peers.common import (
    Config,
    Doc,
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

log = logging.getLogger("bench.peers.bytewax")

BATCH_SIZE = int(os.environ.get("BENCH_BYTEWAX_BATCH", "50000"))
"""Most messages per partition per poll of the source (a poll takes what librdkafka holds)."""
EPOCH = timedelta(seconds=float(os.environ.get("BENCH_BYTEWAX_EPOCH_S", "10")))
"""Bytewax snapshots the state of every user touched in an epoch at its end (even without
recovery); shorter epochs cost throughput and buy nothing here."""
REPORT_S = 5.0
"""Each worker's sink logs its counters this often."""
DDL_LOCK = 7_406_210
"""Advisory lock taken around the DDL, which every process runs at start."""


@dataclass
class UserState:
    """One user's state: seen event ids, per-segment memberships and registers, profile."""

    seen: set[str] = field(default_factory=set)
    memberships: dict[str, Doc] = field(default_factory=dict)
    registers: dict[str, Doc] = field(default_factory=dict)
    profile: Doc | None = None

    def copy(self) -> UserState:
        # The documents are never changed in place (reduce_event and with_membership return
        # new ones), so copying the containers is enough.
        return UserState(set(self.seen), dict(self.memberships), dict(self.registers), self.profile)


def segmentation(state: UserState, e: Doc) -> Doc | None:
    """Reduce one event in the user's state; None for a redelivery."""
    if e["event"] in state.seen:
        return None
    state.seen.add(e["event"])
    segment = f"{e['segment']['vendor']}|{e['segment']['name']}"
    m, register, toggle = reduce_event(
        e, state.memberships.get(segment), state.registers.get(segment)
    )
    state.memberships[segment] = m
    state.registers[segment] = register
    state.profile = with_membership(state.profile, e["user"], m)
    return {"membership": m, "profile": state.profile, "toggle": toggle}


class Segmentation(op.StatefulBatchLogic[bytes, Doc, UserState]):
    """The stateful step for one user: decodes the user's events and reduces them in order."""

    def __init__(self, resume: UserState | None) -> None:
        self.state = resume if resume is not None else UserState()

    def on_batch(self, values: list[bytes]) -> tuple[Iterable[Doc], bool]:
        outs: list[Doc] = []
        for value in values:
            out = segmentation(self.state, json.loads(value))
            if out is not None:
                outs.append(out)
        return outs, op.StatefulBatchLogic.RETAIN

    def snapshot(self) -> UserState:
        return self.state.copy()


def by_user(
    msg: KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None],
) -> tuple[str, bytes]:
    """(user, raw event): the event stays undecoded until it reaches its user's worker."""
    # The source raises on Kafka errors (raise_on_errors), so none come down the stream.
    assert isinstance(msg, KafkaSourceMessage)
    assert msg.key is not None and msg.value is not None
    return msg.key.decode(), msg.value


@dataclass
class Counters:
    """What a worker's sink wrote since its last report (logged every REPORT_S at INFO)."""

    batches: int = 0
    outputs: int = 0
    rows: int = 0
    write_s: float = 0.0
    since: float = field(default_factory=time.monotonic)

    def add(self, outputs: int, rows: int, write_s: float) -> None:
        self.batches += 1
        self.outputs += outputs
        self.rows += rows
        self.write_s += write_s

    def due(self) -> bool:
        return time.monotonic() - self.since >= REPORT_S

    def report(self) -> None:
        log.info(
            "%d batches, %d outputs (%.0f per batch), %d rows; %.1fs writing in %.1fs",
            self.batches,
            self.outputs,
            self.outputs / max(1, self.batches),
            self.rows,
            self.write_s,
            time.monotonic() - self.since,
        )


class PostgresWebhookPartition(StatelessSinkPartition[tuple[str, Doc]]):
    """One worker's writer: a Postgres connection and an HTTP session. Every worker runs the
    DDL when it starts, one after the other (an advisory lock)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.counters = Counters()
        self.conn = psycopg.connect(cfg.postgres)
        self.http = requests.Session()
        with self.conn.transaction():
            self.conn.execute("select pg_advisory_xact_lock(%s)", (DDL_LOCK,))
            for statement in ddl(cfg.schema):
                self.conn.execute(statement)

    def write_batch(self, items: list[tuple[str, Doc]]) -> None:
        memberships: dict[tuple[Any, ...], Doc] = {}
        profiles: dict[str, Doc] = {}
        toggles: list[Doc] = []
        for _user, out in items:
            m = out["membership"]
            memberships[(m["segment"]["vendor"], m["segment"]["name"], m["user"])] = m
            profiles[out["profile"]["user"]] = out["profile"]
            if out["toggle"] is not None:
                toggles.append(out["toggle"])
        began = time.monotonic()
        self.write_rows(list(memberships.values()), list(profiles.values()), toggles)
        if toggles:
            self.post(toggles)
        rows = len(memberships) + len(profiles) + len(toggles)
        self.counters.add(len(items), rows, time.monotonic() - began)
        if self.counters.due():
            self.counters.report()
            self.counters = Counters()

    def write_rows(self, memberships: list[Doc], profiles: list[Doc], toggles: list[Doc]) -> None:
        schema = self.cfg.schema
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                upsert_membership_sql(schema),
                [membership_params(m, json.dumps) for m in memberships],
            )
            cur.executemany(
                upsert_profile_sql(schema), [profile_params(p, json.dumps) for p in profiles]
            )
            if toggles:
                cur.executemany(
                    insert_toggle_sql(schema), [toggle_params(t, json.dumps) for t in toggles]
                )

    def post(self, toggles: list[Doc]) -> None:
        response = self.http.post(
            self.cfg.webhook_url,
            data=json.dumps(toggles),
            headers={"content-type": "application/json"},
            timeout=30,
        )
        response.raise_for_status()

    def close(self) -> None:
        self.http.close()
        self.conn.close()


class PostgresWebhookSink(DynamicSink[tuple[str, Doc]]):
    """Every worker writes its own outputs (user, output)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def build(self, step_id: str, worker_index: int, worker_count: int) -> PostgresWebhookPartition:
        return PostgresWebhookPartition(self.cfg)


def build_flow(cfg: Config, batch_size: int = BATCH_SIZE) -> Dataflow:
    flow = Dataflow("segmentation")
    source = KafkaSource(
        [cfg.broker],
        [cfg.topic],
        tail=True,  # keep polling at the end of a partition: run until stopped
        starting_offset=OFFSET_BEGINNING,
        add_config={"log_level": "6"},  # librdkafka's syslog level: 6 is INFO
        batch_size=batch_size,
    )
    messages = op.input("events", flow, source)
    keyed = op.map("by_user", messages, by_user)
    outs = op.stateful_batch("segmentation", keyed, Segmentation)
    op.output("postgres_webhook", outs, PostgresWebhookSink(cfg))
    return flow


@dataclass(frozen=True)
class Cluster:
    """This process' place in the Bytewax cluster (None, None: a process alone)."""

    process: int | None
    addresses: list[str] | None

    @classmethod
    def from_env(cls) -> Cluster:
        env = os.environ
        if int(env.get("BENCH_PROCESSES", "1")) <= 1:
            return cls(None, None)
        return cls(int(env["BENCH_PROCESS"]), env["BENCH_ADDRESSES"].split(","))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    tracer = setup_tracing(log_level="WARN")  # Bytewax's own (Rust) log, kept for the run
    cfg = Config.from_env()
    cluster = Cluster.from_env()
    log.info(
        "bytewax peer: topic %s, process %s of %s, batch %d, epoch %s",
        cfg.topic,
        cluster.process,
        cluster.addresses,
        BATCH_SIZE,
        EPOCH,
    )
    cli_main(
        build_flow(cfg),
        workers_per_process=1,
        process_id=cluster.process,
        addresses=cluster.addresses,
        epoch_interval=EPOCH,
    )
    del tracer


if __name__ == "__main__":
    main()
