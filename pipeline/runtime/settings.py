"""Settings, read once from the environment (prefix SEGFLOW_) and passed explicitly."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.errors import SegflowError


def parse_addr(value: str) -> tuple[str, int] | None:
    """`SEGFLOW_METRICS_ADDR`: `host:port`, `:port` (every interface) or `off`."""
    if value == "off":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise SegflowError(f"SEGFLOW_METRICS_ADDR={value!r}: expected host:port, :port or off")
    return host.strip("[]") or "0.0.0.0", int(port)


def without_credentials(value: str) -> str:
    """A DSN with its user and password masked (anything else unchanged)."""
    if "@" in value and "://" in value:
        scheme, rest = value.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[-1]}"
    return value


def _mask(value: str | None) -> str | None:
    if not value:
        return value
    masked = without_credentials(value)
    return masked if masked != value else "***"


@dataclass(frozen=True)
class Settings:
    """Everything a Segflow process is configured with."""

    broker: str | None = None
    """Kafka bootstrap servers; None starts the embedded broker (`segflow dev`, tests)."""
    postgres: str | None = field(default=None, repr=False)
    """Postgres DSN; None starts embedded Postgres where one is needed."""
    postgres_schema: str = "public"
    """Schema of the materialized tables and of Segflow's own (API keys)."""
    data_dir: Path = Path(".segflow")
    catalog: Path = Path("catalog")
    topic_prefix: str = ""
    """Namespace for topics and consumer groups: several pipelines can share one broker."""
    session_timeout_ms: int = 8000
    """Consumer-group session timeout. Tansu holds a JoinGroup for half of it."""
    alone: bool = False
    """This worker is the only one of its pipeline: it takes every partition without waiting
    for consumer groups (`pipeline.runtime.alone` guards against a second worker)."""
    batch_max_records: int = 20000
    linger_ms: int = 5
    poll_interval_ms: int = 50
    """Least time between two fetches of the derive loop while records keep coming: records
    arriving meanwhile make one batch (fewer broker requests and cycles at light load)."""
    fetch_max_wait_ms: int = 100
    """How long the broker may hold a fetch that finds nothing. Each idle consumer sends about
    1000 / this fetches a second (six in a worker with the demo's sinks): at 100 ms they cost
    the embedded broker ≈ 0.14 cores doing nothing. The embedded broker answers a held fetch
    only when the wait is over, even when records arrive meanwhile, so a longer wait is that
    much latency there; Apache Kafka answers as soon as records arrive, so a deployment on it
    can set 500 (Kafka's default) for fewer requests at no latency."""
    sink_interval_ms: int = 100
    """Least time between the starts of two writes of a materialization: records arriving
    meanwhile are combined per key into the next write (fewer, larger Postgres transactions)."""
    on_state_lost: str = "stop"
    """What a worker does when the broker lost data its local state came from: stop | rebuild."""
    metrics_addr: tuple[str, int] | None = ("0.0.0.0", 9400)
    """Where a worker serves `/health` and `/metrics` (None: nowhere; port 0: any free one)."""
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    log_level: str = "INFO"

    def __repr__(self) -> str:
        shown = {k: getattr(self, k) for k in self.__dataclass_fields__}
        shown["postgres"] = _mask(self.postgres)
        shown["webhook_secret"] = _mask(self.webhook_secret)
        inner = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"Settings({inner})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(f"SEGFLOW_{name}")
            return value if value else None

        def integer(name: str, default: int, minimum: int) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                value = minimum - 1
            if value < minimum:
                raise SegflowError(f"SEGFLOW_{name}={raw!r}: expected an integer >= {minimum}")
            return value

        alone = (get("ALONE") or "0").lower()
        if alone not in ("0", "1", "true", "false"):
            raise SegflowError(f"SEGFLOW_ALONE={alone!r}: expected 1 or 0")
        on_lost = get("ON_STATE_LOST") or "stop"
        if on_lost not in ("stop", "rebuild"):
            raise SegflowError(f"SEGFLOW_ON_STATE_LOST={on_lost!r}: expected 'stop' or 'rebuild'")
        return cls(
            broker=get("BROKER"),
            postgres=get("POSTGRES"),
            postgres_schema=get("POSTGRES_SCHEMA") or "public",
            data_dir=Path(get("DATA_DIR") or ".segflow"),
            catalog=Path(get("CATALOG") or "catalog"),
            topic_prefix=get("TOPIC_PREFIX") or "",
            session_timeout_ms=integer("SESSION_TIMEOUT_MS", 8000, 1000),
            alone=alone in ("1", "true"),
            batch_max_records=integer("BATCH_MAX_RECORDS", 20000, 1),
            linger_ms=integer("LINGER_MS", 5, 0),
            poll_interval_ms=integer("POLL_INTERVAL_MS", 50, 0),
            fetch_max_wait_ms=integer("FETCH_MAX_WAIT_MS", 100, 1),
            sink_interval_ms=integer("SINK_INTERVAL_MS", 100, 0),
            on_state_lost=on_lost,
            metrics_addr=parse_addr(get("METRICS_ADDR") or ":9400"),
            webhook_url=get("WEBHOOK_URL"),
            webhook_secret=get("WEBHOOK_SECRET"),
            log_level=(get("LOG_LEVEL") or "INFO").upper(),
        )

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]
