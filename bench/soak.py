"""`python -m bench.soak`: the dev-sized stack for a long run (issue 20, item 3).

`segflow dev --rate R` (the whole demo: embedded broker and Postgres, a worker alone with every
materialization and destination, the demo receiver, the ingestion API, segment events at R/s and
product events at R/3) in a directory of its own, for `--minutes`. Every minute: CPU (cores) and
RSS of the dev process, the broker and Postgres; events in per second; lag (records, all loops);
derive batch time (mean, and the 99th percentile's bucket bound); freshness as the age of the
newest row of `segment_memberships` (its `last` is the newest event's timestamp, set by the
generator when it makes the event). The addresses come from the `.segflow/dev.env` that
`segflow dev` writes.

Writes `bench/soak.json` and `docs/soak.md` (with a chart). Not run by `make bench`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import psycopg

from bench.harness.metrics import scrape, total
from bench.harness.procs import postmaster, total_cpu
from pipeline.tools import devenv

ROOT = Path(__file__).resolve().parents[1]


def p99_bound(before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    """The bucket bound holding the 99th percentile of a histogram's observations between two
    scrapes (None: no observation)."""
    prefix = f'{name}_bucket{{le="'
    buckets = sorted(
        (float(k[len(prefix) : -2].replace("+Inf", "inf")), v - before.get(k, 0))
        for k, v in after.items()
        if k.startswith(prefix)
    )
    observed = buckets[-1][1] if buckets else 0
    if not observed:
        return None
    return next(bound for bound, n in buckets if n >= 0.99 * observed)


def grown(before: dict[str, float], after: dict[str, float], name: str) -> float:
    """How much a counter grew between two scrapes (summed over its labels)."""
    return total(after, name) - total(before, name)


def rss_mb(proc: psutil.Process | None, with_children: bool = False) -> float:
    """RSS of a process (and its live children), in MB."""
    if proc is None:
        return 0.0
    rss = 0
    for p in [proc, *(proc.children(recursive=True) if with_children else ())]:
        with contextlib.suppress(psutil.Error):
            rss += p.memory_info().rss
    return rss / 1e6


def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="segflow-soak-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGFLOW_")}
    env |= {"SEGFLOW_CATALOG": str(ROOT / "catalog"), "SEGFLOW_METRICS_ADDR": "127.0.0.1:0"}
    log = home / "dev.log"
    with log.open("wb") as out:
        dev = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.tools.cli",
                "dev",
                "--rate",
                str(args.rate),
                "--api-port",
                "0",
            ],
            cwd=home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    samples: list[dict[str, Any]] = []
    try:
        values = None
        deadline = time.monotonic() + 90
        while values is None or "SEGFLOW_METRICS_URL" not in values:
            if time.monotonic() > deadline or dev.poll() is not None:
                raise SystemExit(f"segflow dev did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
            values = devenv.read(home / devenv.PATH)
        metrics, dsn = values["SEGFLOW_METRICS_URL"], values["SEGFLOW_POSTGRES"]
        root = psutil.Process(dev.pid)
        (broker,) = [p for p in root.children(recursive=True) if "tansu" in " ".join(p.cmdline())]
        # Postgres daemonizes (not our descendant): found by its data directory.
        postgres = postmaster(home / ".segflow" / "postgres")
        measured = {
            "dev": (lambda: total_cpu(root, with_children=False), lambda: rss_mb(root)),
            "broker": (lambda: total_cpu(broker), lambda: rss_mb(broker)),
            "postgres": (
                lambda: total_cpu(postgres) if postgres is not None else 0.0,
                lambda: rss_mb(postgres, with_children=True),
            ),
        }
        before = {name: cpu() for name, (cpu, _) in measured.items()}
        figures, at, started = scrape(metrics), time.monotonic(), time.monotonic()
        for minute in range(1, args.minutes + 1):
            time.sleep(max(0.0, started + 60 * minute - time.monotonic()))
            now, after = time.monotonic(), scrape(metrics)
            sample: dict[str, Any] = {"minute": minute}
            for name, (cpu, rss) in measured.items():
                spent = cpu()
                sample[f"{name}_cores"] = round((spent - before[name]) / (now - at), 3)
                sample[f"{name}_rss_mb"] = round(rss(), 1)
                before[name] = spent

            count = grown(figures, after, "segflow_derive_batch_seconds_count")
            spent = grown(figures, after, "segflow_derive_batch_seconds_sum")
            sample |= {
                "events_per_s": round(
                    grown(figures, after, "segflow_events_in_total") / (now - at)
                ),
                "lag": int(total(after, "segflow_consumer_lag")),
                "batches": int(count),
                "batch_mean_ms": round(1000 * spent / count, 1) if count else None,
                "batch_p99_le_s": p99_bound(figures, after, "segflow_derive_batch_seconds"),
                "freshness_s": freshness(dsn),
            }
            figures, at = after, now
            samples.append(sample)
            print(orjson.dumps(sample).decode(), flush=True)
            if dev.poll() is not None:
                raise SystemExit(f"segflow dev stopped:\n{log.read_text()[-3000:]}")
    finally:
        dev.send_signal(2)  # SIGINT, as Ctrl-C
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            dev.kill()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "rate": args.rate,
        "minutes": args.minutes,
        "samples": samples,
    }


def freshness(dsn: str) -> float | None:
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                'select extract(epoch from now() - max("last")) from segment_memberships'
                " where vendor < 100"  # the generator's segments, not the groups'
            ).fetchone()
    except psycopg.Error:
        return None
    return None if row is None or row[0] is None else round(float(row[0]), 2)


COLUMNS = [
    ("minute", "min"),
    ("events_per_s", "events/s"),
    ("dev_cores", "dev cores"),
    ("dev_rss_mb", "dev RSS MB"),
    ("broker_cores", "broker cores"),
    ("broker_rss_mb", "broker RSS MB"),
    ("postgres_cores", "Postgres cores"),
    ("lag", "lag"),
    ("batch_mean_ms", "batch ms (mean)"),
    ("batch_p99_le_s", "batch p99 ≤ s"),
    ("freshness_s", "freshness s"),
]


def report(result: dict[str, Any], chart: Path | None) -> str:
    lines = [
        "# Soak: the dev-sized stack for a long run",
        "",
        f"`python -m bench.soak` on {result['date']}: `segflow dev --rate {result['rate']:g}`"
        f" for {result['minutes']} minutes on this 2-core machine (segment events at"
        f" {result['rate']:g}/s, product events at a third of it; every materialization and"
        " destination; the demo receiver and ingestion API in the same process). One row per"
        " minute; CPU in cores (1.0 = one core busy); freshness is the age of the newest"
        " `segment_memberships` row when sampled.",
        "",
    ]
    if chart is not None:
        lines += [f"![soak]({chart.name})", ""]
    lines += [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---:|" * len(COLUMNS),
    ]
    for s in result["samples"]:
        lines.append("| " + " | ".join(_cell(s.get(key)) for key, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer() and value > 100:
        return f"{int(value):,}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    minutes = [s["minute"] for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for key, label in (
        ("dev_cores", "dev"),
        ("broker_cores", "broker"),
        ("postgres_cores", "Postgres"),
    ):
        axes[0].plot(minutes, [s[key] for s in samples], label=label)
    axes[0].set_ylabel("CPU (cores)")
    axes[0].legend()
    for key, label in (("dev_rss_mb", "dev"), ("broker_rss_mb", "broker")):
        axes[1].plot(minutes, [s[key] for s in samples], label=label)
    axes[1].set_ylabel("RSS (MB)")
    axes[1].legend()
    axes[2].plot(minutes, [s["freshness_s"] or 0 for s in samples], label="freshness (s)")
    axes[2].plot(
        minutes, [(s["batch_mean_ms"] or 0) / 1000 for s in samples], label="batch mean (s)"
    )
    axes[2].set_ylabel("seconds")
    axes[2].set_xlabel("minute")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "soak.json")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "soak.md")
    args = parser.parse_args()
    result = run(args)
    args.results.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    chart = args.docs.with_suffix(".png")
    plot(result, chart)
    args.docs.write_text(report(result, chart))
    print(f"wrote {args.results}, {args.docs} and {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
