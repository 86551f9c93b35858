"""docker-compose.yml and the Dockerfile, checked by reading (no Docker engine here): the
services, ports, environment, commands and health checks against the CLI and the settings."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from pipeline.catalog import load_catalog
from pipeline.producers.api import make_app
from pipeline.runtime.settings import Settings
from pipeline.tools.cli import parser

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SEGFLOW = ("worker", "api", "keys")


class _Reads(dict[str, str]):
    """An empty environment that notes every name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.names.add(key)
        return default


def settings_names() -> set[str]:
    """The environment variables `Settings.from_env` reads."""
    env = _Reads()
    Settings.from_env(env)
    return env.names


def catalog_names() -> set[str]:
    """The `${NAME}` variables the shipped catalog reads."""
    text = "".join(path.read_text() for path in (REPO / "catalog").glob("*.yaml"))
    return set(re.findall(r"\$\{([A-Z0-9_]+)", text))


def dockerfile() -> dict[str, list[str]]:
    """Instruction -> its arguments (JSON forms decoded), the last one of each kind."""
    found: dict[str, list[str]] = {}
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        found[instruction] = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    return found


def argv(service: dict[str, Any]) -> list[str]:
    """The `segflow` arguments a service runs (after the image's entrypoint)."""
    entrypoint = service.get("entrypoint", dockerfile()["ENTRYPOINT"])
    assert entrypoint[0] == "segflow", entrypoint
    return [*entrypoint[1:], *service.get("command", dockerfile()["CMD"])]


def container_ports(service: dict[str, Any]) -> set[int]:
    """The container ports a service publishes (short syntax: [[IP:]HOST:]CONTAINER)."""
    return {int(str(port).rsplit(":", 1)[-1]) for port in service.get("ports", [])}


def health_url(service: dict[str, Any]) -> Any:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    (url,) = re.findall(r"urlopen\('([^']+)'", test[3])
    return urlsplit(url)


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in service.get("environment", {}).items()}


def test_the_stack_has_its_services() -> None:
    assert set(SERVICES) == {"kafka", "postgres", "worker", "api", "keys"}
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    for name in SEGFLOW:
        assert SERVICES[name]["build"] == ".", name
    assert SERVICES["keys"]["profiles"] == ["tools"]  # run on demand, never by `up`


def test_kafka_runs_kraft_on_its_volume() -> None:
    env = environment(SERVICES["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "zookeeper" not in json.dumps(env).lower()
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # Segflow creates them, with settings
    (volume,) = SERVICES["kafka"]["volumes"]
    name, path = volume.split(":")
    assert path == env["KAFKA_LOG_DIRS"] and name in COMPOSE["volumes"]
    advertised = dict(
        listener.split("://") for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    for service in SEGFLOW:
        assert environment(SERVICES[service])["SEGFLOW_BROKER"] == advertised["PLAINTEXT"]
    assert int(advertised["EXTERNAL"].rsplit(":", 1)[1]) in container_ports(SERVICES["kafka"])


def test_postgres_is_the_one_segflow_uses() -> None:
    env = environment(SERVICES["postgres"])
    dsn = urlsplit(environment(SERVICES["worker"])["SEGFLOW_POSTGRES"])
    assert (dsn.hostname, dsn.port) == ("postgres", 5432)
    assert (dsn.username, dsn.password) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"])
    assert dsn.path == "/" + env["POSTGRES_DB"]


@pytest.mark.parametrize("service", SEGFLOW)
def test_environment_names_are_real_settings(service: str) -> None:
    known = settings_names() | catalog_names()
    unknown = set(environment(SERVICES[service])) - known
    assert not unknown, f"{service}: not a setting nor a catalog variable: {sorted(unknown)}"
    assert environment(SERVICES[service])["SEGFLOW_POSTGRES"]  # keys, the API and sinks need it


def test_every_process_of_the_pipeline_sees_the_same_catalog_variables() -> None:
    shared = [
        {k: v for k, v in environment(SERVICES[name]).items() if k in catalog_names()}
        for name in SEGFLOW
    ]
    assert shared[0] == shared[1] == shared[2]
    assert "SEGFLOW_PARTITIONS" in shared[0]  # the API's topic check compares partitions too


@pytest.mark.parametrize("service", SEGFLOW)
def test_commands_are_segflow_subcommands(service: str) -> None:
    args = parser().parse_args(argv(SERVICES[service]))
    assert args.command == {"worker": "worker", "api": "api", "keys": "keys"}[service]


@pytest.mark.parametrize("where", ["docker-compose.yml", "docs/deploying.md"])
def test_the_documented_keys_line_parses(where: str) -> None:
    text = (REPO / where).read_text()
    (line,) = re.findall(r"docker compose run --rm keys (create --name [^\n#]+)", text)
    args = parser().parse_args(["keys", *shlex.split(line)])
    catalog = load_catalog(REPO / "catalog", env={})
    assert set(args.collections.split(",")) <= set(catalog.captured())


def test_the_api_listens_where_it_is_published_and_checked() -> None:
    api = SERVICES["api"]
    args = parser().parse_args(argv(api))
    assert args.host == "0.0.0.0"  # its default, 127.0.0.1, is unreachable from outside
    assert args.port in container_ports(api)
    url = health_url(api)
    assert url.port == args.port
    app = make_app(Settings(), load_catalog(REPO / "catalog", env={}), None, None)  # type: ignore[arg-type]
    assert url.path in {route.resource.canonical for route in app.router.routes()}


def test_the_worker_is_checked_where_it_serves_health() -> None:
    worker = SERVICES["worker"]
    settings = Settings.from_env(environment(worker))
    assert settings.metrics_addr is not None
    host, port = settings.metrics_addr
    assert host == "0.0.0.0"
    url = health_url(worker)
    assert url.port == port and port in container_ports(worker)
    assert url.path == "/health"
    assert 'add_get("/health"' in (REPO / "pipeline/runtime/metrics.py").read_text()
    assert settings.data_dir == Path("/data") and "/data" in worker["volumes"]
    assert settings.broker and settings.postgres


def test_services_wait_for_healthy_dependencies() -> None:
    for name in ("worker", "api"):
        depends = SERVICES[name]["depends_on"]
        assert depends == {
            "kafka": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
        }
    assert SERVICES["keys"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("kafka", "postgres", "worker", "api"):
        assert SERVICES[name]["healthcheck"]["test"], name


def test_the_worker_stops_gracefully() -> None:
    worker = SERVICES["worker"]
    assert worker["stop_signal"] == "SIGTERM"  # the worker's handler drains and commits
    assert int(worker["stop_grace_period"].rstrip("s")) > Settings().session_timeout_ms / 1000


def _copied() -> Iterator[str]:
    text = (REPO / "Dockerfile").read_text()
    for match in re.finditer(r"^COPY (.+) \S+$", text, re.MULTILINE):
        yield from match[1].split()


def test_the_dockerfile_builds_what_the_services_run() -> None:
    found = dockerfile()
    assert found["FROM"][0].startswith("python:3.11")  # pyproject: requires-python >= 3.11
    assert found["ENTRYPOINT"] == ["segflow"]
    assert parser().parse_args(found["CMD"]).command == "worker"
    copied = set(_copied())
    for needed in ("pyproject.toml", "README.md", "pipeline", "derivations", "materializations"):
        assert needed in copied, needed
    assert {"catalog", "schemas"} <= copied  # the catalog refers to ../schemas
    env = dict(item.split("=", 1) for item in found["ENV"])
    catalog = REPO / Path(env["SEGFLOW_CATALOG"]).relative_to("/app")
    assert load_catalog(catalog, env={}).collections
    assert env["SEGFLOW_DATA_DIR"] == "/data" and found["VOLUME"] == ["/data"]
    assert {9400, 8080} <= {int(port) for port in found["EXPOSE"]}
    assert found["USER"][0] == "segflow"
