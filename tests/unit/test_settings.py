"""Settings: read once from a SEGFLOW_ environment, validated, secrets masked in repr."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import SegflowError
from pipeline.runtime.settings import Settings

DEFAULTS: dict[str, Any] = {
    "broker": None,
    "postgres": None,
    "postgres_schema": "public",
    "data_dir": Path(".segflow"),
    "catalog": Path("catalog"),
    "topic_prefix": "",
    "session_timeout_ms": 8000,
    "alone": False,
    "batch_max_records": 20000,
    "linger_ms": 5,
    "poll_interval_ms": 50,
    "fetch_max_wait_ms": 100,
    "sink_interval_ms": 100,
    "on_state_lost": "stop",
    "metrics_addr": ("0.0.0.0", 9400),
    "webhook_url": None,
    "webhook_secret": None,
    "log_level": "INFO",
}


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert dataclasses.asdict(settings) == DEFAULTS
    assert settings == Settings()


def test_empty_values_count_as_unset() -> None:
    env = {f"SEGFLOW_{name.upper()}": "" for name in DEFAULTS}
    assert Settings.from_env(env) == Settings()


def test_other_variables_are_ignored() -> None:
    assert Settings.from_env({"BROKER": "x:9092", "SEGFLOW_UNKNOWN": "1"}) == Settings()


def test_from_env_reads_every_variable() -> None:
    env = {
        "SEGFLOW_BROKER": "kafka:9092",
        "SEGFLOW_POSTGRES": "postgresql://u:pw@db:5432/segflow",
        "SEGFLOW_POSTGRES_SCHEMA": "analytics",
        "SEGFLOW_DATA_DIR": "/var/lib/segflow",
        "SEGFLOW_CATALOG": "conf/catalog",
        "SEGFLOW_TOPIC_PREFIX": "staging.",
        "SEGFLOW_SESSION_TIMEOUT_MS": "12000",
        "SEGFLOW_ALONE": "1",
        "SEGFLOW_BATCH_MAX_RECORDS": "500",
        "SEGFLOW_LINGER_MS": "0",
        "SEGFLOW_POLL_INTERVAL_MS": "0",
        "SEGFLOW_FETCH_MAX_WAIT_MS": "500",
        "SEGFLOW_SINK_INTERVAL_MS": "50",
        "SEGFLOW_ON_STATE_LOST": "rebuild",
        "SEGFLOW_METRICS_ADDR": "127.0.0.1:9500",
        "SEGFLOW_WEBHOOK_URL": "http://hooks.example/toggles",
        "SEGFLOW_WEBHOOK_SECRET": "s3cret",
        "SEGFLOW_LOG_LEVEL": "debug",
    }
    assert dataclasses.asdict(Settings.from_env(env)) == {
        "broker": "kafka:9092",
        "postgres": "postgresql://u:pw@db:5432/segflow",
        "postgres_schema": "analytics",
        "data_dir": Path("/var/lib/segflow"),
        "catalog": Path("conf/catalog"),
        "topic_prefix": "staging.",
        "session_timeout_ms": 12000,
        "alone": True,
        "batch_max_records": 500,
        "linger_ms": 0,
        "poll_interval_ms": 0,
        "fetch_max_wait_ms": 500,
        "sink_interval_ms": 50,
        "on_state_lost": "rebuild",
        "metrics_addr": ("127.0.0.1", 9500),
        "webhook_url": "http://hooks.example/toggles",
        "webhook_secret": "s3cret",
        "log_level": "DEBUG",
    }


def test_from_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGFLOW_TOPIC_PREFIX", "from-os.")
    assert Settings.from_env().topic_prefix == "from-os."


@pytest.mark.parametrize(
    "variable", ["SEGFLOW_SESSION_TIMEOUT_MS", "SEGFLOW_BATCH_MAX_RECORDS", "SEGFLOW_LINGER_MS"]
)
@pytest.mark.parametrize("raw", ["fast", "1.5", "10ms", "1e3"])
def test_integer_errors_name_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(SegflowError) as caught:
        Settings.from_env({variable: raw})
    message = str(caught.value)
    assert variable in message
    assert repr(raw) in message
    assert "integer" in message


def test_alone_takes_one_or_zero() -> None:
    assert Settings.from_env({"SEGFLOW_ALONE": "true"}).alone
    assert not Settings.from_env({"SEGFLOW_ALONE": "0"}).alone
    with pytest.raises(SegflowError, match=r"SEGFLOW_ALONE='yes': expected 1 or 0"):
        Settings.from_env({"SEGFLOW_ALONE": "yes"})


@pytest.mark.parametrize("value", ["stop", "rebuild"])
def test_on_state_lost_accepts_stop_and_rebuild(value: str) -> None:
    assert Settings.from_env({"SEGFLOW_ON_STATE_LOST": value}).on_state_lost == value


@pytest.mark.parametrize("value", ["restart", "ignore", "Stop "])
def test_on_state_lost_rejects_anything_else(value: str) -> None:
    with pytest.raises(SegflowError) as caught:
        Settings.from_env({"SEGFLOW_ON_STATE_LOST": value})
    message = str(caught.value)
    assert "SEGFLOW_ON_STATE_LOST" in message
    assert repr(value) in message
    assert "'stop'" in message
    assert "'rebuild'" in message


@pytest.mark.parametrize(
    ("raw", "addr"),
    [
        ("off", None),
        (":9400", ("0.0.0.0", 9400)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9400", ("::1", 9400)),
        ("metrics.internal:80", ("metrics.internal", 80)),
    ],
)
def test_metrics_addr_forms(raw: str, addr: tuple[str, int] | None) -> None:
    assert Settings.from_env({"SEGFLOW_METRICS_ADDR": raw}).metrics_addr == addr


@pytest.mark.parametrize("raw", ["9400", "host:", "host:port", ":70000", "Off"])
def test_metrics_addr_errors_name_the_variable(raw: str) -> None:
    with pytest.raises(SegflowError) as caught:
        Settings.from_env({"SEGFLOW_METRICS_ADDR": raw})
    message = str(caught.value)
    assert "SEGFLOW_METRICS_ADDR" in message
    assert repr(raw) in message
    assert "host:port" in message


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().broker = "x"  # type: ignore[misc]


def test_with_returns_a_changed_copy() -> None:
    base = Settings()
    changed = base.with_(topic_prefix="t.", data_dir=Path("/tmp/x"))
    assert (changed.topic_prefix, changed.data_dir) == ("t.", Path("/tmp/x"))
    assert base == Settings()


MASKS = [
    # (postgres DSN, what repr may show of it)
    pytest.param(
        "postgresql://segflow:hunter2@db.internal:5432/segflow",
        "postgresql://***@db.internal:5432/segflow",
        id="url",
    ),
    pytest.param(
        "postgresql://segflow:p@ss@word@db:5432/segflow",
        "postgresql://***@db:5432/segflow",
        id="at-in-password",
    ),
    pytest.param("host=db user=segflow password=hunter2", "***", id="keyword-dsn"),
    pytest.param("postgresql://db/segflow?password=hunter2", "***", id="password-in-query"),
]


@pytest.mark.parametrize(("dsn", "shown"), MASKS)
def test_repr_masks_the_postgres_password(dsn: str, shown: str) -> None:
    settings = Settings.from_env({"SEGFLOW_POSTGRES": dsn})
    assert settings.postgres == dsn
    text = repr(settings)
    assert f"postgres={shown!r}" in text
    assert "hunter2" not in text
    assert "word@" not in text
    assert str(settings) == text


def test_repr_masks_the_webhook_secret() -> None:
    settings = Settings.from_env(
        {"SEGFLOW_WEBHOOK_SECRET": "hunter2", "SEGFLOW_WEBHOOK_URL": "http://hooks.example/x"}
    )
    text = repr(settings)
    assert "hunter2" not in text
    assert "webhook_secret='***'" in text
    assert "webhook_url='http://hooks.example/x'" in text


def test_repr_shows_unset_secrets_as_none() -> None:
    text = repr(Settings())
    assert "postgres=None" in text
    assert "webhook_secret=None" in text
    assert text.startswith("Settings(broker=None, ")
