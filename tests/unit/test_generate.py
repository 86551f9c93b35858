"""The event generator: reproducible, valid, and shaped like the options say."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from pipeline.documents.schema import load_schema
from pipeline.documents.validation import Validator
from pipeline.producers.generate import EventGenerator, Mix, vendor_of

ROOT = Path(__file__).resolve().parents[2]


def serialized(gen: EventGenerator, n: int) -> list[bytes]:
    return [orjson.dumps(e) for e in gen.take(n)]


def test_same_seed_gives_the_same_events_byte_for_byte() -> None:
    mix = Mix(repeat_ratio=0.1, timezones=True)
    first = serialized(EventGenerator(mix, seed=42, rate=2000), 5000)
    again = serialized(EventGenerator(mix, seed=42, rate=2000), 5000)
    assert first == again


def test_different_seeds_give_different_events() -> None:
    a = serialized(EventGenerator(seed=1), 100)
    b = serialized(EventGenerator(seed=2), 100)
    assert not set(a) & set(b)


def test_seeded_timestamps_follow_a_simulated_clock() -> None:
    events = EventGenerator(seed=3, rate=10).take(31)
    assert events[0]["timestamp"] == "2024-01-01T00:00:00Z"
    assert events[10]["timestamp"] == "2024-01-01T00:00:01Z"
    assert events[30]["timestamp"] == "2024-01-01T00:00:03Z"


def test_every_event_is_valid() -> None:
    validator = Validator(load_schema(ROOT / "schemas" / "event.schema.yaml"))
    mix = Mix(repeat_ratio=0.2, timezones=True, value_ratio=0.7)
    for event in EventGenerator(mix, seed=5).take(5000):
        assert validator.problems(event) == [], event


@pytest.mark.parametrize("skew", [0.0, 1.1, 2.0])
def test_segment_popularity_follows_zipf(skew: float) -> None:
    n, segments = 50_000, 100
    events = EventGenerator(Mix(segments=segments, skew=skew), seed=9).take(n)
    counts = Counter(e["segment"]["name"] for e in events)
    harmonic = sum(1 / k**skew for k in range(1, segments + 1))
    for rank in (1, 2, 10):
        expected = n / rank**skew / harmonic
        assert counts[f"seg-{rank - 1}"] == pytest.approx(expected, rel=0.1), rank
    assert set(counts) <= {f"seg-{k}" for k in range(segments)}


def test_users_stay_within_the_cardinality() -> None:
    events = EventGenerator(Mix(users=50), seed=4).take(5000)
    users = {e["user"] for e in events}
    assert users == {f"usr-{i:06d}" for i in range(50)}


def test_remove_and_value_ratios() -> None:
    n = 20_000
    events = EventGenerator(Mix(remove_ratio=0.3, value_ratio=0.5), seed=11).take(n)
    removes = sum(1 for e in events if e.get("remove"))
    valued = sum(1 for e in events if "value" in e)
    assert removes / n == pytest.approx(0.3, abs=0.02)
    assert valued / (n - removes) == pytest.approx(0.5, abs=0.02)
    assert not any("value" in e and "remove" in e for e in events)


def test_repeats_are_exact_resends_of_earlier_events() -> None:
    n = 20_000
    events = EventGenerator(Mix(repeat_ratio=0.25), seed=13).take(n)
    seen: dict[str, bytes] = {}
    repeats = 0
    for e in events:
        body = orjson.dumps(e)
        if e["event"] in seen:
            repeats += 1
            assert body == seen[e["event"]]  # same id, same everything
        else:
            seen[e["event"]] = body
    assert repeats / n == pytest.approx(0.25, abs=0.02)


def test_no_repeats_by_default() -> None:
    events = EventGenerator(seed=17).take(10_000)
    assert len({e["event"] for e in events}) == len(events)


def test_vendor_is_a_function_of_the_segment() -> None:
    events = EventGenerator(Mix(vendors=8), seed=19).take(10_000)
    owners: dict[str, set[int]] = {}
    for e in events:
        owners.setdefault(e["segment"]["name"], set()).add(e["segment"]["vendor"])
    assert all(len(v) == 1 for v in owners.values())
    assert {v for (v,) in owners.values()} <= set(range(1, 9))
    assert len({v for (v,) in owners.values()}) > 4  # spread over the vendors
    assert vendor_of(7, 8) == owners["seg-7"].pop()


def test_mutating_an_event_does_not_change_later_repeats() -> None:
    gen = EventGenerator(Mix(repeat_ratio=0.5), seed=23)
    first = gen.take(1)[0]
    original = orjson.dumps(first)
    first["segment"]["name"] = "changed"
    first["user"] = "changed"
    later = [e for e in gen.take(200) if e["event"] == first["event"]]
    assert later and all(orjson.dumps(e) == original for e in later)
