"""The unique-value index (SPEC 8.3 `unique`): the holder depends on who claims, never on the
order claims and releases arrive in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from derivations.profiles.uniqueness import (
    Entry,
    claim,
    holder,
    index_key,
    reference,
    release,
    to_tell,
)

records = st.sampled_from(["anon:d1", "anon:d2", "u1", "u2", "u3"])
seniorities = st.lists(st.integers(0, 3), min_size=1, max_size=3)
operations = st.lists(st.tuples(records, st.one_of(st.none(), seniorities)), max_size=12)


def run(ops: list[tuple[str, list[int] | None]]) -> Entry:
    entry: Entry = {}
    for record, seniority in ops:
        entry = release(entry, record) if seniority is None else claim(entry, record, seniority)
    return entry


@given(ops=operations, data=st.data())
def test_the_holder_is_the_senior_claimant_whatever_the_order(ops, data) -> None:  # type: ignore[no-untyped-def]
    # A record's last operation decides whether (and how) it claims; shuffle the records.
    last: dict[str, list[int] | None] = {}
    for record, seniority in ops:
        last[record] = seniority
    final = [(r, s) for r, s in last.items()]
    shuffled = data.draw(st.permutations(final))
    assert run(final) == run(shuffled)
    claimants = {r: s for r, s in final if s is not None}
    expected = min(claimants, key=lambda r: (claimants[r], r)) if claimants else None
    assert holder(run(shuffled)) == expected


def test_claimants_are_told_when_the_holder_changes() -> None:
    first = claim({}, "u2", [5])
    assert to_tell({}, first) == ["u2"]
    second = claim(first, "u3", [7])
    assert to_tell(first, second) == ["u3"]  # u2 still holds: only the newcomer is told
    senior = claim(second, "u1", [1])
    assert to_tell(second, senior) == ["u1", "u2", "u3"]  # a new holder: everybody is told
    assert to_tell(senior, release(senior, "u1")) == ["u2", "u3"]
    assert to_tell(senior, claim(senior, "u1", [1])) == []


def test_index_keys_keep_types_apart() -> None:
    assert index_key("code", 3) != index_key("code", "3")
    assert index_key("email", "a@x.io") == 'email\x00"a@x.io"'


def test_reference_keeps_the_value_with_the_senior_record() -> None:
    docs = [
        {"id": "u1", "properties": {"email": "a@x.io", "ltv": 3}},
        {"id": "u2", "properties": {"email": "a@x.io"}, "invalid": {"phone": "'1' is not ..."}},
        {"id": "u3", "properties": {"email": "b@x.io"}},
    ]
    got = reference(docs, ["email"], {"u1": [9], "u2": [2], "u3": [1]})
    assert got == [
        {"id": "u1", "properties": {"ltv": 3}, "invalid": {"email": "duplicate of record u2"}},
        {"id": "u2", "properties": {"email": "a@x.io"}, "invalid": {"phone": "'1' is not ..."}},
        {"id": "u3", "properties": {"email": "b@x.io"}},
    ]
