"""Summaries of the runs: medians, ratios, targets; the terminal table, docs/benchmarks.md and
its chart docs/benchmarks.png."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import orjson

TARGET_EVENTS_PER_S = 50_000
TARGET_VS_QUIX = 1.3
TARGET_VS_FAUST = 10.0
TARGET_VS_BEST_PEER = 2.0
TARGET_P99_MS = 500.0
TARGET_READY_S = 1.5
"""Start-up of one worker until the first event is visible in Postgres (freshness phase)."""
TARGET_BIG_DROP = 0.15
"""The 1M-event rate within this share of the 200k-event rate (cost per event flat)."""
PEERS = {"quix": "Quix Streams", "naive-faust": "naive Faust", "bytewax": "Bytewax"}
TARGET_RSS_MIB = 1024.0
TARGET_RSS_USERS = 1_000_000


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(
    runs: list[dict[str, Any]],
    *,
    impls: list[tuple[str, str, str]],
    machine: dict[str, Any],
    workload: dict[str, Any],
    started: str,
    duration_s: float,
    memory: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`memory`: the result of `python -m bench.memory` (peak RSS with 1M users), if any;
    `baseline`: the summary of a 200k-event run of the same workload, for a 1M-event run."""
    summary: dict[str, Any] = {}
    for impl_id, label, family in impls:
        thr = [r for r in runs if r["impl"] == impl_id and r["phase"] == "throughput"]
        ok = [r for r in thr if r["status"] == "OK"]
        fresh = [r for r in runs if r["impl"] == impl_id and r["phase"] == "freshness"]
        fresh_ok = [r for r in fresh if r["status"] in ("OK", "BEHIND")]
        summary[impl_id] = {
            "label": label,
            "family": family,
            "runs": len(thr),
            "valid": len(ok),
            "statuses": [r["status"] for r in thr],
            "events_per_s": _median([r["events_per_s"] for r in ok]),
            "events_per_s_range": [
                min(r["events_per_s"] for r in ok),
                max(r["events_per_s"] for r in ok),
            ]
            if ok
            else None,
            "seconds": _median([r["seconds"] for r in ok]),
            "peak_rss_mib": _median([r["peak_rss_mib"] for r in ok]),
            "cpu_s": {
                part: _median([r["cpu_s"][part] for r in ok])
                for part in ("workers", "broker", "postgres")
            }
            if ok
            else None,
            "freshness": {
                "status": fresh[-1]["status"] if fresh else None,
                "p50_ms": _median([r["p50_ms"] for r in fresh_ok if r["p50_ms"] is not None]),
                "p99_ms": _median([r["p99_ms"] for r in fresh_ok if r["p99_ms"] is not None])
                if all(r["p99_ms"] is not None for r in fresh_ok)
                else None,
                "unseen": sum(r.get("unseen", 0) for r in fresh_ok),
                "rate": _median([r["achieved_rate"] for r in fresh_ok]),
                "ready_s": _median([r["ready_s"] for r in fresh if r.get("ready_s") is not None]),
            }
            if fresh
            else None,
            "errors": sorted({r["error"] for r in [*thr, *fresh] if r.get("error")}),
        }
    return {
        "started": started,
        "duration_s": duration_s,
        "machine": machine,
        "workload": workload,
        "summary": summary,
        "ratios": ratios(summary),
        "targets": targets(summary, workload, memory, baseline),
        "memory": memory,
        "runs": runs,
    }


def _best_segflow(summary: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    candidates = [
        (k, v) for k, v in summary.items() if v["family"] == "segflow" and v["events_per_s"]
    ]
    return max(candidates, key=lambda kv: kv[1]["events_per_s"]) if candidates else None


def _family(summary: dict[str, Any], family: str) -> dict[str, Any] | None:
    for v in summary.values():
        if v["family"] == family:
            return v
    return None


def ratios(summary: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in summary.items():
        if v["family"] != "segflow" or not v["events_per_s"]:
            continue
        for peer in PEERS:
            other = _family(summary, peer)
            if other and other["events_per_s"]:
                out[f"{k}/{peer}"] = round(v["events_per_s"] / other["events_per_s"], 2)
    return out


def targets(
    summary: dict[str, Any],
    workload: dict[str, Any],
    memory: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    best = _best_segflow(summary)
    name, seg = best if best else (None, None)
    rows: list[dict[str, Any]] = []

    def add(target: str, value: str, met: bool | None, note: str = "") -> None:
        rows.append({"target": target, "value": value, "met": met, "note": note})

    eps = seg["events_per_s"] if seg else None
    add(
        f"≥ {TARGET_EVENTS_PER_S:,} events/s",
        f"{eps:,.0f} events/s ({name})" if eps else "no valid Segflow run",
        eps >= TARGET_EVENTS_PER_S if eps else None,
    )
    for peer, factor, label in (
        ("quix", TARGET_VS_QUIX, "Quix Streams"),
        ("naive-faust", TARGET_VS_FAUST, "naive Faust"),
    ):
        other = _family(summary, peer)
        timeout = workload.get("timeout_s")
        if eps and other and other["events_per_s"]:
            ratio = eps / other["events_per_s"]
            add(f"≥ {factor:g}x {label}", f"{ratio:.2f}x ({name})", ratio >= factor)
        elif eps and other and other["runs"] and timeout and set(other["statuses"]) == {"TIMEOUT"}:
            # Every run timed out: the peer did less than events/timeout, a lower bound.
            bound = eps / (workload["events"] / timeout)
            add(
                f"≥ {factor:g}x {label}",
                f"> {bound:.1f}x ({name}; {label} did not finish within {timeout:.0f} s)",
                bound >= factor,
            )
        else:
            add(f"≥ {factor:g}x {label}", "not measured", None, "no valid run of " + label)
    peers = [(PEERS[p], v) for p in PEERS if (v := _family(summary, p)) and v["events_per_s"]]
    if eps and peers:
        label, strongest = max(peers, key=lambda lv: lv[1]["events_per_s"])
        ratio = eps / strongest["events_per_s"]
        add(
            f"≥ {TARGET_VS_BEST_PEER:g}x the best peer",
            f"{ratio:.2f}x ({name} / {strongest['label']})",
            ratio >= TARGET_VS_BEST_PEER,
        )
    if baseline and workload["events"] >= 1_000_000:
        for k, v in summary.items():
            base = baseline.get(k)
            if v["family"] != "segflow" or not v["events_per_s"] or not base:
                continue
            if not base.get("events_per_s"):
                continue
            drop = 1 - v["events_per_s"] / base["events_per_s"]
            add(
                f"1M-event rate within {TARGET_BIG_DROP:.0%} of 200k ({v['label']})",
                f"{v['events_per_s']:,.0f} vs {base['events_per_s']:,.0f} events/s ({-drop:+.0%})",
                drop <= TARGET_BIG_DROP,
            )
    alone = summary.get("segflow-1p", {}).get("freshness") or {}
    if alone.get("ready_s") is not None:
        add(
            f"start-up to the first event in Postgres ≤ {TARGET_READY_S:g} s (one worker)",
            f"{alone['ready_s']:.2f} s",
            alone["ready_s"] <= TARGET_READY_S,
        )
    fresh = [
        (k, v["freshness"])
        for k, v in summary.items()
        if v["family"] == "segflow" and v["freshness"] and v["freshness"]["status"]
    ]
    if fresh:
        k, f = min(
            fresh, key=lambda kv: kv[1]["p99_ms"] if kv[1]["p99_ms"] is not None else float("inf")
        )
        p99 = f["p99_ms"]
        add(
            f"p99 freshness ≤ {TARGET_P99_MS / 1000:g} s at "
            f"{workload.get('freshness_rate') or 0:,.0f} events/s",
            f"{p99:,.0f} ms ({k})" if p99 is not None else f"fell behind ({k})",
            p99 is not None and p99 <= TARGET_P99_MS,
        )
    else:
        add(f"p99 freshness ≤ {TARGET_P99_MS / 1000:g} s at 10,000 events/s", "not measured", None)
    if memory:
        add(
            "RSS ≤ 1 GiB with 1M users in state",
            f"{memory['peak_rss_mib']:,.0f} MiB with {memory['users_in_state']:,} users"
            " (python -m bench.memory)",
            memory["users_in_state"] >= TARGET_RSS_USERS
            and memory["peak_rss_mib"] <= TARGET_RSS_MIB,
        )
        return rows
    users = workload["expected_rows"]["profiles"]
    rss = [
        v["peak_rss_mib"]
        for v in summary.values()
        if v["family"] == "segflow" and v["peak_rss_mib"]
    ]
    if rss:
        worst = max(rss)
        if users >= TARGET_RSS_USERS:
            add("RSS ≤ 1 GiB with 1M users in state", f"{worst:,.0f} MiB", worst <= TARGET_RSS_MIB)
        else:
            add(
                "RSS ≤ 1 GiB with 1M users in state",
                f"{worst:,.0f} MiB with {users:,} users",
                None,
                f"not measured at 1M users (this workload has {users:,}; "
                "try --users 1000000 --big)",
            )
    else:
        add("RSS ≤ 1 GiB with 1M users in state", "not measured", None)
    return rows


# --- Rendering ---------------------------------------------------------------------------------


def _num(value: float | None, fmt: str = ",.0f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{fmt}}{suffix}"


def _met(met: bool | None) -> str:
    return {True: "met", False: "not met", None: "not measured"}[met]


def _rows(results: dict[str, Any]) -> list[list[str]]:
    out = []
    for v in results["summary"].values():
        f = v["freshness"] or {}
        cpu = v["cpu_s"]
        if f.get("status") == "BEHIND":
            p99 = f"fell behind ({f['unseen']} unseen)"
        elif f.get("status") in (None, "OK"):
            p99 = _num(f.get("p99_ms"), ",.0f", " ms")
        else:
            p99 = f["status"]
        out.append(
            [
                v["label"],
                f"{v['valid']}/{v['runs']}"
                + (
                    ""
                    if v["valid"] == v["runs"]
                    else f" ({', '.join(s for s in v['statuses'] if s != 'OK')})"
                ),
                _num(v["events_per_s"]),
                _num(v["seconds"], ".1f", " s"),
                _num(v["peak_rss_mib"], ",.0f", " MiB"),
                f"{cpu['workers']:.1f} / {cpu['broker']:.1f} / {cpu['postgres']:.1f}"
                if cpu
                else "—",
                _num(f.get("p50_ms"), ",.0f", " ms")
                if f.get("status") in ("OK", "BEHIND")
                else (f.get("status") or "—"),
                p99,
            ]
        )
    return out


HEADER = [
    "implementation",
    "valid runs",
    "events/s (median)",
    "time",
    "peak RSS",
    "CPU s workers / broker / Postgres",
    "freshness p50",
    "freshness p99",
]


def terminal_table(results: dict[str, Any]) -> str:
    rows = [HEADER, *_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if results["ratios"]:
        lines.append("")
        lines.append("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in results["ratios"].items()))
    lines.append("")
    for t in results["targets"]:
        lines.append(f"target {t['target']}: {t['value']} — {_met(t['met'])}")
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    labels = [v["label"].replace(" (", "\n(") for v in summary.values()]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    eps = [v["events_per_s"] or 0 for v in summary.values()]
    colors = ["#2b6cb0" if v["family"] == "segflow" else "#a0aec0" for v in summary.values()]
    bars = ax1.bar(labels, eps, color=colors)
    for bar, v in zip(bars, summary.values(), strict=True):
        text = (
            f"{v['events_per_s']:,.0f}"
            if v["events_per_s"]
            else ", ".join(sorted(set(v["statuses"]))) or "not run"
        )
        ax1.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax1.axhline(TARGET_EVENTS_PER_S, color="#c53030", linestyle="--", linewidth=1)
    ax1.annotate("target 50k/s", (0, TARGET_EVENTS_PER_S), color="#c53030", fontsize=8, va="bottom")
    ax1.set_title(f"Throughput, {results['workload']['events']:,} events (median of valid runs)")
    ax1.set_ylabel("events/s")
    ax1.tick_params(axis="x", labelsize=8)

    x = range(len(summary))
    width = 0.38
    p50 = [((v["freshness"] or {}).get("p50_ms") or 0) for v in summary.values()]
    p99 = [((v["freshness"] or {}).get("p99_ms") or 0) for v in summary.values()]
    ax2.bar([i - width / 2 for i in x], p50, width, label="p50", color="#48bb78")
    b99 = ax2.bar([i + width / 2 for i in x], p99, width, label="p99", color="#dd6b20")
    for bar, v in zip(b99, summary.values(), strict=True):
        f = v["freshness"] or {}
        if f.get("p99_ms") is None:
            ax2.text(
                bar.get_x(),
                0.02,
                "fell behind" if f.get("status") == "BEHIND" else (f.get("status") or "not run"),
                transform=ax2.get_xaxis_transform(),
                fontsize=8,
                ha="center",
                va="bottom",
            )
    ax2.axhline(TARGET_P99_MS, color="#c53030", linestyle="--", linewidth=1)
    ax2.set_xticks(list(x), labels, fontsize=8)
    ax2.set_ylabel("ms (event acknowledged → row visible)")
    rate = results["workload"].get("freshness_rate")
    ax2.set_title(f"Freshness at {rate:,.0f} events/s" if rate else "Freshness (not measured)")
    if any(p99):
        ax2.set_yscale("log")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_docs(results: dict[str, Any], md: Path, png: Path) -> None:
    chart(results, png)
    m, w = results["machine"], results["workload"]
    versions = (m.get("packages") or {}).items()
    libraries = ", ".join(f"{k} {v}" for k, v in versions if v) or "not recorded"
    table = [HEADER, *_rows(results)]
    md_table = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(HEADER)]
    md_table += ["| " + " | ".join(r) + " |" for r in table[1:]]
    ratio_lines = [
        f"- {results['summary'][k.split('/')[0]]['label']} / {PEERS[k.split('/')[1]]}: **{v:.2f}x**"
        for k, v in results["ratios"].items()
    ] or ["- not available (no valid runs of both sides)"]
    target_lines = [
        "| target | measured | |",
        "|---|---|---|",
        *[
            f"| {t['target']} | {t['value']} | {_met(t['met'])}"
            f"{' — ' + t['note'] if t['note'] else ''} |"
            for t in results["targets"]
        ],
    ]
    failures = [
        f"- {r['impl']} {r['phase']}"
        + (f" rep {r['rep'] + 1}" if "rep" in r else "")
        + f": **{r['status']}** {r.get('error', '')}".rstrip()
        for r in results["runs"]
        if r["status"] not in ("OK",)
    ]
    rows = w["expected_rows"]
    profiles = _profiles_section(md.parent.parent / "bench" / "profiles.json")
    text = f"""# Benchmarks

_Generated by `python -m bench.run` on {results["started"]} ({results["duration_s"]:.0f} s);
do not edit by hand — the next run rewrites this file, `docs/benchmarks.png` and
`bench/results.json`._

**How to reproduce:** `make bench` (the demo mix at 200k events and the toggle-heavy mix;
`BIG=1` adds the demo mix at 1M events); or `python -m bench.run --help` for `--workload`,
`--only`, `--reps`, `--skip-freshness`, `--events`. This file: workload **{w.get("name", "demo")}**,
{w["events"]:,} events.
The memory target comes from `python -m bench.memory` (`bench/memory.json`). Where the time goes,
what this round changed and what stands before the unmet targets:
[performance.md](performance.md).

Machine: {m["cores"]} cores ({m["cpu"] or "unknown CPU"}), {m["memory_gib"]} GiB memory,
Python {m["python"]}, {m["platform"]}. Broker, Postgres, the implementation and the harness all
share this machine; load average when the benchmark started: {m.get("load_avg_at_start")}
(other work on the machine makes figures noisy).
Libraries: {libraries}.

## Results

{chr(10).join(md_table)}

![Throughput and freshness](benchmarks.png)

Ratios of median throughput:

{chr(10).join(ratio_lines)}

## Targets

{chr(10).join(target_lines)}

{profiles}

## Workload

- Workload `{w.get("name", "demo")}` from the demo's generator
  (`pipeline.producers.generate.EventGenerator`, seed 1): {w["users"]:,} users,
  {w["segments"]} segments with Zipf popularity (exponent {w["skew"]}), {w["remove_ratio"]:.0%}
  removes, {w["repeat_ratio"]:.0%} redeliveries of recent events; {w["partitions"]} partitions,
  keyed by user (Segflow's partitioner).
- {w["events"]:,} events pre-produced into a fresh topic before each run; expected result
  (from the spec's sequential reference, `tests.fixtures.events.reference`):
  {rows["memberships"]:,} memberships, {rows["profiles"]:,} profiles, {rows["toggles"]:,} toggles.
- Implementations: Segflow (`segflow worker`, 1 process with `--alone` and 2 processes in a
  consumer group), naive Faust (`bench/peers/naive_faust.py`), Quix Streams
  (`bench/peers/quix.py`), Bytewax (`bench/peers/bytewax.py`, 2 processes). All on the same embedded
  Tansu broker and embedded Postgres, writing the same three tables and POSTing toggles to the
  harness's webhook receiver. Runs are interleaved, {w["reps"]} repetition(s); figures are
  medians of valid runs.

## Method

- **Throughput**: events / seconds from starting the worker process(es) until the three tables
  hold the reference's row counts and the webhook receiver has every toggle (polled every
  100 ms), confirmed by a row-by-row check: every run's memberships (vendor, segment, user,
  member, value, first, last), profiles (user, document) and toggles (event, previous event,
  remove) are compared with the reference. A run whose rows differ is **WRONG** and not counted;
  one not done within the time limit is **TIMEOUT**.
- **Freshness**: a separate run per implementation on an empty topic; once a warm-up probe is
  visible, {w.get("freshness_seconds") or 0:.0f} s of workload at a steady
  {w.get("freshness_rate") or 0:,.0f} events/s (batches every 10 ms) plus 20 probe events/s
  for unique users; freshness = first time the probe's membership row is visible in Postgres
  (polled every 15 ms) - time the broker acknowledged the probe. Probes not visible 30 s after
  the last send count as infinitely late (**fell behind**).
- **Peak RSS**: sum over the implementation's processes and their children, sampled every
  100 ms. **CPU seconds** (user + system) during the throughput run: worker processes, the
  broker process, Postgres (postmaster and all backends).

## Runs that did not count

{chr(10).join(failures) if failures else "- none"}
"""
    md.write_text(text)


PROFILE_TARGET = 15_000


def _profiles_section(path: Path) -> str:
    """The profile layer's figure (`python -m bench.profiles`, run by `make bench` first)."""
    if not path.exists():
        return "## Profile layer\n\n- not measured: run `python -m bench.profiles`"
    p = orjson.loads(path.read_bytes())
    met = "met" if p["events_per_second"] >= PROFILE_TARGET else "not met"
    return f"""## Profile layer (product events -> records in Postgres)

`python -m bench.profiles` on {p["date"]} ({p["machine"]}): {p["events"]:,} product events
(about 30% anonymous, 20% of people on two devices, {p["sign_ins"]:,} sign-ins linking devices)
into {p["records"]:,} records with the shipped catalog's 13 properties, one worker process, from
its launch until `profile_records` equals the reference row by row: **{p["events_per_second"]:,}
events/s** ({p["seconds"]} s; {p["events_per_second_from_first_row"]:,} events/s from the first
row), worker CPU {p["worker_cpu_us_per_event"]} µs per event. Target ≥ {PROFILE_TARGET:,}
events/s: {met}. Where the time goes: [performance.md](performance.md)."""
