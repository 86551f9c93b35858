"""The fast check of product events (profile/events): it takes ordinary events, and it never
accepts one jsonschema rejects, whatever is changed in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.documents.fastcheck import compile_check
from pipeline.documents.schema import load_schema
from tests.fixtures.profiles import product_events

SCHEMAS = Path(__file__).parents[2] / "schemas"
EVENT = load_schema(SCHEMAS / "profile-event.schema.yaml")
VALIDATOR = EVENT.validator()
FAST = compile_check(EVENT)
SAMPLE = product_events(300, seed=3)


def test_product_event_and_record_schemas_compile() -> None:
    assert FAST is not None
    assert compile_check(load_schema(SCHEMAS / "profile-record.schema.yaml")) is not None


def test_product_events_take_the_fast_path() -> None:
    assert FAST is not None
    for doc in SAMPLE:
        assert VALIDATOR.is_valid(doc) and FAST(doc), doc


odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.sampled_from(["anon:x", "\x00", "", "a" * 201, "x" * 10_001, "2024-05-01T10:00:00"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.sampled_from([1, "\x00", [None], {"a": {}}])),
    st.just(list(range(1001))),
    st.just({str(i): i for i in range(1001)}),
)
fields = st.sampled_from(
    ["id", "type", "userId", "anonymousId", "occurredAt", "data", "extra", "data.path"]
)


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    doc: dict[str, Any] = {**draw(st.sampled_from(SAMPLE))}
    for _ in range(draw(st.integers(1, 3))):
        name = draw(fields)
        if draw(st.booleans()):
            if name == "data.path":
                data = doc.get("data")
                doc["data"] = {**(data if isinstance(data, dict) else {}), "path": draw(odd_values)}
            else:
                doc[name] = draw(odd_values)
        else:
            doc.pop(name.split(".")[0], None)
    return doc


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=mutated())
def test_the_fast_check_never_accepts_what_jsonschema_rejects(doc: Any) -> None:
    assert FAST is not None
    if FAST(doc):
        assert VALIDATOR.is_valid(doc), doc


def test_an_event_without_user_or_device_is_rejected_by_both() -> None:
    assert FAST is not None
    doc = {k: v for k, v in SAMPLE[0].items() if k not in ("userId", "anonymousId")}
    assert not FAST(doc) and not VALIDATOR.is_valid(doc)
