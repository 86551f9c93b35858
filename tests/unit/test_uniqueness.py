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
    seniority_of,
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
    at = "2024-05-0{}T10:00:00Z".format
    docs = [
        {"id": "u1", "properties": {"email": "a@x.io", "ltv": 3}, "createdAt": at(9)},
        {
            "id": "u2",
            "properties": {"email": "a@x.io"},
            "invalid": {"phone": "'1' is not ..."},
            "createdAt": at(2),
        },
        {"id": "u3", "properties": {"email": "b@x.io"}, "createdAt": at(1)},
        {"id": "u0", "properties": {"email": "a@x.io"}, "createdAt": at(2)},
    ]
    got = reference(docs, ["email"])
    assert got == [
        {
            "id": "u1",
            "properties": {"ltv": 3},
            "invalid": {"email": "duplicate of record u0"},
            "createdAt": at(9),
        },
        {
            "id": "u2",
            "properties": {},
            "invalid": {"phone": "'1' is not ...", "email": "duplicate of record u0"},
            "createdAt": at(2),
        },
        {"id": "u3", "properties": {"email": "b@x.io"}, "createdAt": at(1)},
        {"id": "u0", "properties": {"email": "a@x.io"}, "createdAt": at(2)},
    ]
    assert list(got[0]) == ["id", "properties", "invalid", "createdAt"]


def test_seniority_is_the_instant_whatever_the_offset() -> None:
    assert seniority_of("2024-05-01T12:00:00+02:00") == seniority_of("2024-05-01T10:00:00Z")
    assert seniority_of("2024-05-01T10:00:00.5Z") > seniority_of("2024-05-01T10:00:00Z")
