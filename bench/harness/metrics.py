"""A worker's `/metrics` (Prometheus text) as numbers, for the benchmarks."""

from __future__ import annotations

import urllib.request


def parse_metrics(text: str) -> dict[str, float]:
    """Each sample by its full name, labels included (`name{label="v"}`)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def total(figures: dict[str, float], name: str) -> float:
    """A metric summed over its labels."""
    return sum(v for k, v in figures.items() if k.partition("{")[0] == name)


def scrape(url: str, timeout: float = 10.0) -> dict[str, float]:
    """GET `url` (a worker's /metrics), parsed."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse_metrics(response.read().decode())
