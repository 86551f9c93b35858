"""Starting implementations as subprocesses, measuring them (psutil), and stopping them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Launched:
    """One implementation's worker processes (each in its own session)."""

    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]
    cpu: dict[int, float] = field(default_factory=dict)
    """Last seen CPU seconds (user + system) per pid in the process trees."""
    peak_rss: int = 0

    def tree(self) -> list[psutil.Process]:
        out: list[psutil.Process] = []
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(p.pid)
                out.append(root)
                out.extend(root.children(recursive=True))
        return out

    def sample(self) -> None:
        """Add the current RSS of all processes and remember their CPU seconds."""
        rss = 0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error), proc.oneshot():
                rss += proc.memory_info().rss
                t = proc.cpu_times()
                self.cpu[proc.pid] = t.user + t.system
        self.peak_rss = max(self.peak_rss, rss)

    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())

    def exited(self) -> list[int]:
        return [p.returncode for p in self.procs if p.poll() is not None]

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL each process group."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)  # the session we started: it and its children
            if p.poll() is None:
                p.wait(5)

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for log in self.logs:
            with contextlib.suppress(OSError):
                text = log.read_text(errors="replace").splitlines()
                out.extend(text[-lines:])
        return "\n".join(out)


def free_addresses(n: int) -> list[str]:
    """`localhost:port` for n ports free right now, all different (bound together): one per
    process of a peer that forms a cluster of its own."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [f"localhost:{s.getsockname()[1]}" for s in socks]
    finally:
        for s in socks:
            s.close()


def segflow_env(
    broker: str,
    prefix: str,
    data_dir: Path,
    dsn: str,
    schema: str,
    webhook_url: str,
    *,
    alone: bool = False,
) -> dict[str, str]:
    """The environment of one `segflow worker` under the harness (log level: WARNING, or
    `BENCH_SEGFLOW_LOG_LEVEL`); `alone`: the run's only worker (`SEGFLOW_ALONE`)."""
    return {
        "SEGFLOW_ALONE": "1" if alone else "0",
        "SEGFLOW_BROKER": broker,
        "SEGFLOW_TOPIC_PREFIX": prefix,
        "SEGFLOW_DATA_DIR": str(data_dir),
        "SEGFLOW_POSTGRES": dsn,
        "SEGFLOW_POSTGRES_SCHEMA": schema,
        "SEGFLOW_WEBHOOK_URL": webhook_url,
        "SEGFLOW_SESSION_TIMEOUT_MS": "2000",
        "SEGFLOW_LOG_LEVEL": os.environ.get("BENCH_SEGFLOW_LOG_LEVEL", "WARNING"),
        "SEGFLOW_CATALOG": str(ROOT / "catalog"),
        "SEGFLOW_METRICS_ADDR": "127.0.0.1:0",
    }


def launch(module: str, envs: list[dict[str, str]], log_dir: Path) -> Launched:
    """`python -m module` once per environment, from the repository root."""
    import sys

    procs, logs = [], []
    log_dir.mkdir(parents=True, exist_ok=True)
    for i, env in enumerate(envs):
        log = log_dir / f"{module.rsplit('.', 1)[-1]}-{i}.log"
        with log.open("ab") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", *module.split()],
                    env={**os.environ, **env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=ROOT,
                    start_new_session=True,
                )
            )
        logs.append(log)
    return Launched(procs, logs)


def total_cpu(proc: psutil.Process, with_children: bool = True) -> float:
    """CPU seconds of a process, its reaped children (cpu_times children_*), and live children."""
    try:
        t = proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        if with_children:
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    c = child.cpu_times()
                    total += c.user + c.system
        return total
    except psutil.Error:
        return 0.0


def postmaster(data_dir: Path) -> psutil.Process | None:
    """The embedded Postgres' postmaster (first line of postmaster.pid under data_dir)."""
    for pidfile in data_dir.rglob("postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            return psutil.Process(int(pidfile.read_text().splitlines()[0]))
    return None
