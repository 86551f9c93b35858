"""The Prometheus text a worker serves: histogram buckets and label escaping."""

from __future__ import annotations

from pipeline.figures import Histogram
from pipeline.runtime.metrics import Exposition


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    hist = Histogram((1.0, 2.0, 4.0))
    for value in (0.5, 1.0, 1.5, 4.0, 9.0):
        hist.observe(value)
    assert hist.cumulative() == [("1", 2), ("2", 3), ("4", 4), ("+Inf", 5)]
    assert (hist.count, hist.sum) == (5, 16.0)


def test_exposition_declares_each_family_once_with_its_samples() -> None:
    out = Exposition()
    out.family("lag", "gauge", "Records behind.", [({"topic": "a"}, 3), ({"topic": "b"}, 0.5)])
    hist = Histogram((0.1,))
    hist.observe(0.05)
    out.histograms("write_seconds", "Durations.", [({"sink": "pg"}, hist)])
    assert out.text().splitlines() == [
        "# HELP segflow_lag Records behind.",
        "# TYPE segflow_lag gauge",
        'segflow_lag{topic="a"} 3',
        'segflow_lag{topic="b"} 0.5',
        "# HELP segflow_write_seconds Durations.",
        "# TYPE segflow_write_seconds histogram",
        'segflow_write_seconds_bucket{sink="pg",le="0.1"} 1',
        'segflow_write_seconds_bucket{sink="pg",le="+Inf"} 1',
        'segflow_write_seconds_sum{sink="pg"} 0.05',
        'segflow_write_seconds_count{sink="pg"} 1',
    ]


def test_label_values_are_escaped() -> None:
    out = Exposition()
    out.family("x", "counter", "X.", [({"name": 'a "quoted" \\ name'}, 1)])
    assert out.text().splitlines()[-1] == 'segflow_x{name="a \\"quoted\\" \\\\ name"} 1'
