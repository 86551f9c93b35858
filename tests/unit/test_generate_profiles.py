"""`segflow generate --profiles`: valid, reproducible product events that link devices."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from derivations.profiles.model import EventSource
from pipeline.catalog import load_catalog
from pipeline.documents.validation import Validator
from pipeline.producers.product_events import ProductEventGenerator, ProductMix
from tests.fixtures.profiles import reference_records

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(ROOT / "catalog", env={})


def test_every_event_is_valid_and_seeds_repeat() -> None:
    events = ProductEventGenerator(ProductMix(users=300), seed=7).take(5000)
    validator = Validator(CATALOG.collections["profile/events"].schema)
    assert [e for e in events if validator.errors(e)] == []
    assert events == ProductEventGenerator(ProductMix(users=300), seed=7).take(5000)
    assert events != ProductEventGenerator(ProductMix(users=300), seed=8).take(5000)
    assert len({e["id"] for e in events}) == len(events)
    stamps = [e["occurredAt"] for e in events]
    assert stamps == sorted(stamps)


def test_devices_link_to_one_person_and_some_people_have_several() -> None:
    events = ProductEventGenerator(ProductMix(users=500), seed=1).take(20_000)
    owners: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if "userId" in e and "anonymousId" in e:
            owners[e["anonymousId"]].add(e["userId"])
    assert all(len(users) == 1 for users in owners.values())
    devices: dict[str, set[str]] = defaultdict(set)
    for device, (user,) in owners.items():
        devices[user].add(device)
    several = sum(len(d) > 1 for d in devices.values()) / len(devices)
    assert 0.1 < several < 0.3, several  # devices_ratio 0.2, less the devices not yet signed in
    kinds = Counter(e["type"] for e in events)
    assert {"pageview", "signin", "identify", "addToCart", "purchase"} <= set(kinds)
    anonymous = sum("userId" not in e for e in events) / len(events)
    assert 0.15 < anonymous < 0.5, anonymous
    server = sum("anonymousId" not in e for e in events) / len(events)
    assert 0.05 < server < 0.3, server


def test_the_shipped_properties_get_values() -> None:
    events = ProductEventGenerator(ProductMix(users=200), seed=3).take(8000)
    records = reference_records(CATALOG, events)
    identified = [r for r in records if "userId" in r]
    filled = Counter(name for r in identified for name in r["properties"])
    for name, prop in CATALOG.profiles.properties.items() if CATALOG.profiles else ():
        if isinstance(prop.source, EventSource):  # the others come from imports
            assert filled[name] > 0, name
    assert any("phone" in r.get("invalid", {}) for r in identified), "a few bad phone numbers"
    assert any(r["id"].startswith("anon:") for r in records), "visitors who never sign in"


@pytest.mark.parametrize(("devices", "anonymous"), [(0.0, 0.0), (0.2, 0.1), (0.5, 0.3)])
def test_shares_of_people_follow_the_ratios(devices: float, anonymous: float) -> None:
    mix = ProductMix(users=400, devices_ratio=devices, anonymous_ratio=anonymous)
    events = ProductEventGenerator(mix, seed=2).take(40_000)
    linked: dict[str, set[str]] = defaultdict(set)  # userId -> its signed-in devices
    seen: set[str] = set()  # every device
    for e in events:
        if "anonymousId" in e:
            seen.add(e["anonymousId"])
            if "userId" in e:
                linked[e["userId"]].add(e["anonymousId"])
    several = sum(len(d) > 1 for d in linked.values()) / len(linked)
    assert several == pytest.approx(devices, abs=0.06)
    signed_in = set().union(*linked.values())
    # A person's devices are dev-<person>-<n>: a person who never signs in links none of them.
    people = {d.rsplit("-", 1)[0] for d in seen}
    never = {p for p in people if not any(d.rsplit("-", 1)[0] == p for d in signed_in)}
    assert len(never) / len(people) == pytest.approx(anonymous, abs=0.05)


def test_repeats_are_exact_resends() -> None:
    events = ProductEventGenerator(ProductMix(users=300, repeat_ratio=0.1), seed=5).take(20_000)
    first: dict[str, bytes] = {}
    repeats = 0
    for e in events:
        body = orjson.dumps(e)
        if e["id"] in first:
            repeats += 1
            assert body == first[e["id"]]  # same id, same everything
        else:
            first[e["id"]] = body
    assert repeats / len(events) == pytest.approx(0.1, abs=0.02)
