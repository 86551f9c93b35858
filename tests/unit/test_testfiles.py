"""`segflow test` files: loading and its error messages, and the subset comparison."""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pipeline.catalog import Catalog, load_catalog
from pipeline.errors import SegflowError, TestFileError
from pipeline.tools.testing import compare, load_test_file, mismatches

ROOT = Path(__file__).resolve().parents[2]
PEER = ROOT / "tests" / "peer" / "estuary-segmentation-tests.flow.yaml"

EVENT = "11111111-2222-3333-4444-000000000000"


@functools.cache
def catalog() -> Catalog:
    return load_catalog(ROOT / "catalog", env={})


def write(tmp_path: Path, text: str, name: str = "suite.flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(path: Path) -> str:
    with pytest.raises(TestFileError) as caught:
        load_test_file(path, catalog())
    assert isinstance(caught.value, SegflowError)
    return str(caught.value)


# --- Loading -----------------------------------------------------------------------------------


def test_peer_suite_loads(tmp_path: Path) -> None:
    path = tmp_path / "peer.flow.yaml"
    path.write_text(PEER.read_text().replace("examples/segment/", "segment/"))
    cases = load_test_file(path, catalog())
    assert [c.name for c in cases] == [
        "Segment membership updates with segmentation events",
        "User profiles update with segmentation events",
        "Segment toggles reflect events that are novel updates of a user / segment status",
    ]
    assert [[(s.kind, s.collection) for s in c.steps] for c in cases] == [
        [
            ("ingest", "segment/events"),
            ("verify", "segment/memberships"),
            ("ingest", "segment/events"),
            ("verify", "segment/memberships"),
        ],
        [
            ("ingest", "segment/events"),
            ("verify", "segment/profiles"),
            ("ingest", "segment/events"),
            ("verify", "segment/profiles"),
        ],
        [
            ("ingest", "segment/events"),
            ("verify", "segment/toggles"),
            ("ingest", "segment/events"),
            ("verify", "segment/toggles"),
            ("ingest", "segment/events"),
            ("verify", "segment/toggles"),
        ],
    ]
    assert [len(s.documents) for s in cases[2].steps] == [4, 0, 3, 2, 1, 3]
    assert all(c.file == path for c in cases)
    # YAML anchors are resolved into plain documents.
    assert cases[0].steps[0].documents[1]["segment"] == {"vendor": 32, "name": "trains"}


def test_import_is_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        import: [does-not-exist.flow.yaml]
        tests:
          only:
            - ingest:
                collection: segment/events
                documents:
                  - {{event: {EVENT}, timestamp: "2021-01-16T12:34:56Z", user: a,
                      segment: {{vendor: 1, name: s}}}}
            - verify: {{collection: segment/toggles, documents: []}}
        """,
    )
    [case] = load_test_file(path, catalog())
    assert case.name == "only"
    assert [s.kind for s in case.steps] == ["ingest", "verify"]


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "tests:\n  broken: [\n")
    message = load_error(path)
    assert str(path) in message
    assert "YAML" in message


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.flow.yaml"
    message = load_error(path)
    assert str(path) in message


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[]\n", id="not-a-mapping"),
        pytest.param("import: []\n", id="no-tests"),
        pytest.param("tests: [a, b]\n", id="tests-not-a-mapping"),
        pytest.param("tests: {}\nextra: 1\n", id="unknown-top-level-key"),
    ],
)
def test_bad_top_level_names_the_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert load_error(path).startswith(f"{path}: ")


STEP_ERRORS = [
    pytest.param(
        """\
        tests:
          "My test":
            - verify: {collection: segment/toggles, documents: []}
            - verify: {collection: segment/nope, documents: []}
        """,
        ["test 'My test', step 2", "unknown collection 'segment/nope'", "segment/toggles"],
        id="unknown-collection",
    ),
    pytest.param(
        f"""\
        tests:
          "My test":
            - ingest:
                collection: segment/events
                documents:
                  - {{event: {EVENT}, timestamp: "2021-01-16T12:34:56Z", user: a,
                      segment: {{vendor: 1, name: s}}}}
                  - {{event: not-a-uuid, timestamp: "2021-01-16T12:34:56Z", user: a,
                      segment: {{vendor: 1, name: s}}}}
        """,
        ["test 'My test', step 1", "document 1", "/event", "must be a UUID"],
        id="ingest-document-bad-uuid",
    ),
    pytest.param(
        f"""\
        tests:
          "My test":
            - verify: {{collection: segment/toggles, documents: []}}
            - ingest:
                collection: segment/events
                documents:
                  - {{event: {EVENT}, timestamp: "2021-01-16T12:34:56Z", user: a,
                      segment: {{vendor: 0, name: s}}}}
        """,
        ["test 'My test', step 2", "document 0", "/segment/vendor", "from 1 to 2147483647"],
        id="ingest-document-nested-path",
    ),
    pytest.param(
        """\
        tests:
          "My test":
            - ingest: {collection: segment/events, documents: []}
              verify: {collection: segment/toggles, documents: []}
        """,
        ["test 'My test', step 1", "exactly one of 'ingest', 'verify', 'clock' or 'advance'"],
        id="ingest-and-verify",
    ),
    pytest.param(
        """\
        tests:
          "My test":
            - clock: "2024-05-01 10:00"
        """,
        ["test 'My test', step 1", "(clock)", "RFC 3339", '"2024-05-01 10:00"'],
        id="clock-not-rfc3339",
    ),
    pytest.param(
        """\
        tests:
          "My test":
            - clock: "2024-05-01T00:00:00Z"
            - advance: 3 days
        """,
        ["test 'My test', step 2", "(advance)", "'3 days' is not a duration", "'3d'"],
        id="advance-not-a-duration",
    ),
    pytest.param(
        """\
        tests:
          "My test":
            - ingest: {collection: segment/memberships, documents: []}
        """,
        ["test 'My test', step 1", "derived collection"],
        id="ingest-into-derived",
    ),
    pytest.param(
        """\
        tests:
          "My test":
            - verify: {collection: segment/toggles, documents: {}}
        """,
        ["test 'My test', step 1", "'documents' must be a list"],
        id="documents-not-a-list",
    ),
    pytest.param(
        """\
        tests:
          "My test": []
        """,
        ["test 'My test'", "non-empty list of steps"],
        id="no-steps",
    ),
]


@pytest.mark.parametrize(("text", "fragments"), STEP_ERRORS)
def test_step_errors_name_file_test_and_step(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = write(tmp_path, text)
    message = load_error(path)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_every_problem_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        tests:
          first:
            - verify: {collection: segment/nope, documents: []}
          second:
            - verify: {collection: segment/toggles, documents: []}
            - ingest: {collection: segment/events, documents: [{event: x}]}
        """,
    )
    lines = load_error(path).splitlines()
    assert any("test 'first', step 1" in line for line in lines)
    assert any("test 'second', step 2" in line and "document 0" in line for line in lines)
    assert all(line.startswith(f"{path}: ") for line in lines)


# --- Comparing documents -----------------------------------------------------------------------

MISMATCHES: list[Any] = [
    # (expected, actual, mismatch messages)
    pytest.param({}, {"a": 1}, [], id="empty-object-matches-any-object"),
    pytest.param({"a": 1}, {"a": 1, "b": 2}, [], id="extra-actual-properties-ok"),
    pytest.param(
        {"a": {"b": 1}}, {"a": {"b": 1, "c": 2}, "d": 3}, [], id="extra-properties-nested-ok"
    ),
    pytest.param({"a": 1}, {}, ["/a: expected 1, but it is absent"], id="absent"),
    pytest.param({"a": None}, {}, ["/a: expected null, but it is absent"], id="null-vs-absent"),
    pytest.param({"a": None}, {"a": None}, [], id="null-equal"),
    pytest.param(
        {"previous": {"event": "x"}},
        {"previous": {"event": "y", "user": "u"}},
        ['/previous/event: expected "x", got "y"'],
        id="nested-pointer",
    ),
    pytest.param(
        {"a/b": 1, "m~n": 1}, {"a/b": 2, "m~n": 1}, ["/a~1b: expected 1, got 2"], id="esc"
    ),
    pytest.param([1, 2], [1, 2], [], id="array-equal"),
    pytest.param([1, 2], [1, 2, 3], ["/: expected 2 item(s), got 3: [1,2,3]"], id="array-longer"),
    pytest.param([], [1], ["/: expected 0 item(s), got 1: [1]"], id="empty-array-is-not-subset"),
    pytest.param([2, 1], [1, 2], ["/0: expected 2, got 1", "/1: expected 1, got 2"], id="order"),
    pytest.param(
        {"segments": [{"segment": {"name": "a"}}, {"last": "t"}]},
        {"segments": [{"segment": {"name": "a", "vendor": 1}}, {"last": "u", "member": True}]},
        ['/segments/1/last: expected "t", got "u"'],
        id="array-elements-are-subsets",
    ),
    pytest.param(
        {"segments": [{}]},
        {"segments": [{}, {}]},
        ["/segments: expected 1 item(s), got 2: [{},{}]"],
        id="nested-array-length",
    ),
    pytest.param(True, 1, ["/: expected true, got 1"], id="true-vs-1"),
    pytest.param(1, True, ["/: expected 1, got true"], id="1-vs-true"),
    pytest.param(False, 0, ["/: expected false, got 0"], id="false-vs-0"),
    pytest.param({"remove": True}, {"remove": 1}, ["/remove: expected true, got 1"], id="bool-in"),
    pytest.param(1, 1.0, [], id="1-vs-1.0"),
    pytest.param(1.0, 1, [], id="1.0-vs-1"),
    pytest.param(1, 2.0, ["/: expected 1, got 2.0"], id="number-differs"),
    pytest.param("1", 1, ['/: expected "1", got 1'], id="string-vs-number"),
    pytest.param(None, False, ["/: expected null, got false"], id="null-vs-false"),
    pytest.param({"a": 1}, [1], ["/: expected an object, got [1]"], id="object-vs-array"),
    pytest.param({"a": [1]}, {"a": {"0": 1}}, ['/a: expected an array, got {"0":1}'], id="arr-obj"),
    pytest.param({"a": {"b": 1}}, {"a": 1}, ["/a: expected an object, got 1"], id="obj-vs-scalar"),
]


@pytest.mark.parametrize(("expected", "actual", "messages"), MISMATCHES)
def test_mismatches(expected: Any, actual: Any, messages: list[str]) -> None:
    assert mismatches(expected, actual) == messages


COMPARES: list[Any] = [
    pytest.param([], [], [], id="both-empty"),
    pytest.param([{"a": 1}], [{"a": 1, "b": 2}], [], id="subset"),
    pytest.param(
        [{"a": 1}],
        [],
        ["expected 1 document(s), got 0", "actual documents, in key order:", "  (none)"],
        id="missing-document",
    ),
    pytest.param(
        [],
        [{"a": 1}, {"a": 2}],
        [
            "expected 0 document(s), got 2",
            "actual documents, in key order:",
            '  {"a":1}',
            '  {"a":2}',
        ],
        id="extra-documents",
    ),
    pytest.param(
        [{"a": 1}, {"a": 3}],
        [{"a": 1}, {"a": 2}],
        [
            "document 1: /a: expected 3, got 2",
            "actual documents, in key order:",
            '  {"a":1}',
            '  {"a":2}',
        ],
        id="document-differs",
    ),
    pytest.param(
        [{"a": 2}],
        [{"a": 1}, {"a": 2}],
        [
            "expected 1 document(s), got 2",
            "document 0: /a: expected 2, got 1",
            "actual documents, in key order:",
            '  {"a":1}',
            '  {"a":2}',
        ],
        id="count-and-content",
    ),
]


@pytest.mark.parametrize(("expected", "actual", "messages"), COMPARES)
def test_compare(expected: list[Any], actual: list[Any], messages: list[str]) -> None:
    assert compare(expected, actual) == messages
