"""`python -m bench.dedup_window`: dedup state stays bounded (issue 20, item 1).

One `segflow worker` (the segmentation derivations; no sinks) with a 60 s dedup window on the
embedded broker, fed by `segflow generate` at a steady rate of unique events with wall-clock
record timestamps for several windows. Every 10 s: the worker's RSS, RocksDB's estimate of its
state keys and bytes (`segflow_state_keys`, `segflow_state_bytes`), the dedup entries forgotten
(`segflow_dedup_expired_total`) and the events in. The state should stop growing about one
window and its grace (10 s) after the start: from then on each new id replaces a forgotten one
(the per-user documents are bounded by `--users` from the first minute).

Writes `bench/dedup_window.json` and `docs/dedup-window.md` (not run by `make bench`).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench.harness.metrics import scrape, total
from pipeline.tools.embedded import start_broker

ROOT = Path(__file__).resolve().parents[1]
METRICS = re.compile(r"health and metrics on (http://\S+)/health")


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="segflow-dedup-"))
    broker = start_broker(tmp / "broker")
    env = {
        **os.environ,
        "SEGFLOW_BROKER": broker.bootstrap,
        "SEGFLOW_DATA_DIR": str(tmp / "data"),
        "SEGFLOW_CATALOG": str(ROOT / "catalog"),
        "SEGFLOW_DEDUP_WINDOW": f"{args.window}s",
        "SEGFLOW_METRICS_ADDR": "127.0.0.1:0",
        "SEGFLOW_ALONE": "1",
    }
    log = tmp / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline.tools.cli", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    samples: list[dict[str, Any]] = []
    generator = None
    try:
        deadline = time.monotonic() + 60
        while not METRICS.search(log.read_text()):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit(f"the worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        (url,) = METRICS.findall(log.read_text())
        generator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.tools.cli",
                "generate",
                "--rate",
                str(args.rate),
                "--duration",
                str(args.duration),
                "--users",
                str(args.users),
                "--segments",
                "20",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = psutil.Process(worker.pid)
        started = time.monotonic()
        while generator.poll() is None or not samples or samples[-1]["t"] < args.duration:
            time.sleep(10 - (time.monotonic() - started) % 10)
            f = scrape(url + "/metrics")
            sample = {
                "t": round(time.monotonic() - started),
                "events_in": int(total(f, "segflow_events_in_total")),
                "state_keys": int(total(f, "segflow_state_keys")),
                "state_mb": round(total(f, "segflow_state_bytes") / 1e6, 1),
                "expired": int(total(f, "segflow_dedup_expired_total")),
                "rss_mb": round(process.memory_info().rss / 1e6, 1),
            }
            samples.append(sample)
            print(orjson.dumps(sample).decode(), flush=True)
    finally:
        if generator is not None and generator.poll() is None:
            generator.kill()
        worker.terminate()
        worker.wait(60)
        broker.stop()
    return {
        "date": time.strftime("%Y-%m-%d"),
        "window_s": args.window,
        "rate": args.rate,
        "duration_s": args.duration,
        "users": args.users,
        "samples": samples,
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        "# Dedup state over several windows",
        "",
        f"`python -m bench.dedup_window` on {result['date']}: one worker, a "
        f"{result['window_s']} s dedup window, {result['rate']:g} unique events/s of "
        f"{result['users']:,} users for {result['duration_s']} s (embedded broker, 2 cores).",
        "State keys and bytes are RocksDB's estimates summed over the worker's partitions.",
        "",
        "| t (s) | events in | state keys | state MB | dedup entries forgotten | worker RSS MB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result["samples"]:
        lines.append(
            f"| {s['t']} | {s['events_in']:,} | {s['state_keys']:,} | {s['state_mb']} |"
            f" {s['expired']:,} | {s['rss_mb']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=60, help="dedup window, seconds")
    parser.add_argument("--rate", type=float, default=2000, help="events/s")
    parser.add_argument("--duration", type=int, default=200, help="seconds of traffic")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "dedup_window.json")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "dedup-window.md")
    args = parser.parse_args()
    result = run(args)
    args.results.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    args.docs.write_text(report(result))
    print(f"wrote {args.results} and {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
