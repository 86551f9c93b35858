"""Topic settings per kind: what the catalog's collections ask of their topics, the `topic:`
block's checks, and how an existing topic is judged against them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.catalog import Catalog, load_catalog
from pipeline.catalog.topics import FOREVER, topic_policy
from pipeline.errors import CatalogError
from pipeline.runtime.topic_check import contradictions
from pipeline.runtime.topics import Names, pipeline_topics

HERE = Path(__file__).parent
REPO = HERE.parents[1]
FIXTURES = HERE / "catalogs"
THING = (FIXTURES / "schemas" / "thing.schema.yaml").as_posix()
DAY_MS = str(86400 * 1000)
WEEK = {
    "cleanup.policy": "delete",
    "retention.ms": str(7 * 86400 * 1000),
    "retention.bytes": "-1",
    "segment.ms": DAY_MS,  # rolled daily: the segment being written is never cleaned
}
COMPACT = {"cleanup.policy": "compact", "segment.ms": DAY_MS}


@pytest.fixture(autouse=True)
def transforms(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(FIXTURES / "transforms"))
    yield
    sys.modules.pop("segflow_test_transforms", None)


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    return load_catalog(REPO / "catalog", env={})


def catalog_of(tmp_path: Path, raw: str = "", copies: str = "", counts: str = "") -> Path:
    """A catalog of `things/raw` (captured, dedup 1d), its copies (one per raw document) and
    counts (by user), each with the `topic:` block given, if any."""

    def topic(block: str) -> str:
        return f"\n    topic: {block}" if block else ""

    path = tmp_path / "catalog.yaml"
    path.write_text(
        f"""\
collections:
  things/raw:
    schema: {THING}
    key: [/id]
    dedup: 1d{topic(raw)}
  things/copies:
    schema: {THING}
    key: [/id]{topic(copies)}
  things/counts:
    schema: {THING}
    key: [/user]{topic(counts)}
derivations:
  things/copies: {{source: things/raw, shuffle: [/user], transform: segflow_test_transforms:Copy}}
  things/counts: {{source: things/raw, shuffle: [/user], transform: segflow_test_transforms:Copy}}
"""
    )
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        load_catalog(path, env={})
    return [str(p) for p in caught.value.problems]


# --- Per kind ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("collection", "cleanup", "retention"),
    [
        ("segment/events", "delete", 7 * 86400.0),  # captured
        ("profile/events", "delete", 7 * 86400.0),
        ("profile/group-members", "delete", 7 * 86400.0),
        ("segment/toggles", "delete", 7 * 86400.0),  # one toggle per event
        ("segment/memberships", "compact", None),  # derived by key
        ("segment/profiles", "compact", None),
        ("profile/records", "compact", None),
        ("profile/records.identified", "delete", 7 * 86400.0),  # read by the records stage
        ("profile/records.claims", "delete", 7 * 86400.0),
        ("profile/records.forwarded", "delete", 7 * 86400.0),
    ],
)
def test_the_shipped_collections_by_kind(
    shipped: Catalog, collection: str, cleanup: str, retention: float | None
) -> None:
    policy = topic_policy(shipped, collection)
    assert (policy.cleanup, policy.retention) == (cleanup, retention)


def test_the_shipped_pipeline_topics(shipped: Catalog) -> None:
    topics = pipeline_topics(shipped, Names("p."))
    week, compact = WEEK, COMPACT
    month = {**WEEK, "retention.ms": str(30 * 86400 * 1000)}
    assert topics["p.segment.events"] == (4, week)
    assert topics["p.segment.toggles"] == (4, week)
    assert topics["p.segment.memberships"] == (4, compact)
    assert topics["p.profile.records"] == (4, compact)
    # a shuffle keeps its records as long as its source: they carry the source's timestamps
    assert topics["p.segflow.segment.events.shuffle"] == (4, week)
    assert topics["p.segflow.segment.events.changelog"] == (4, compact)
    assert topics["p.segflow.profile.records.identified.changelog"] == (4, compact)
    assert topics["p.segment.events.dead-letter"] == (1, month)
    assert topics["p.segflow.postgres.dead-letter"] == (1, month)
    assert topics["p.segflow.destination.crm.dead-letter"] == (1, month)
    kinds = {config.get("cleanup.policy") for _, config in topics.values()}
    assert kinds == {"compact", "delete"}  # nothing is created to be kept forever


def test_retention_follows_a_longer_dedup_window() -> None:
    catalog = load_catalog(REPO / "catalog" / "segment.yaml", env={"SEGFLOW_DEDUP_WINDOW": "14d"})
    assert topic_policy(catalog, "segment/events").retention == 14 * 86400.0
    assert topic_policy(catalog, "segment/toggles").retention == 7 * 86400.0
    shuffle = pipeline_topics(catalog, Names())["segflow.segment.events.shuffle"]
    assert shuffle[1]["retention.ms"] == str(14 * 86400 * 1000)


# --- The `topic:` block ------------------------------------------------------------------------


def test_topic_blocks_override_the_defaults(tmp_path: Path) -> None:
    path = catalog_of(
        tmp_path,
        raw="{retention: 36h}",
        copies="{cleanup: compact}",
        counts="{cleanup: delete, retention: forever}",
    )
    catalog = load_catalog(path, env={})
    assert topic_policy(catalog, "things/raw").retention == 36 * 3600.0
    assert topic_policy(catalog, "things/copies").cleanup == "compact"
    assert topic_policy(catalog, "things/counts").retention == FOREVER
    topics = pipeline_topics(catalog, Names())
    assert topics["things.counts"][1]["retention.ms"] == "-1"
    assert topics["things.raw"][1]["retention.ms"] == str(36 * 3600 * 1000)


def test_without_topic_blocks(tmp_path: Path) -> None:
    catalog = load_catalog(catalog_of(tmp_path), env={})
    assert topic_policy(catalog, "things/raw").retention == 7 * 86400.0
    assert topic_policy(catalog, "things/copies").cleanup == "delete"  # key [/id] = its source's
    assert topic_policy(catalog, "things/counts").cleanup == "compact"


def test_topic_block_errors(tmp_path: Path) -> None:
    path = catalog_of(
        tmp_path,
        raw="{retention: 12h}",
        copies="{cleanup: squash, retain: 2d}",
        counts="{retention: soon}",
    )
    raw = "/collections/things~1raw/topic"
    copies = "/collections/things~1copies/topic"
    counts = "/collections/things~1counts/topic"
    assert problems(path) == [
        f"{path}: {raw}/retention: collection 'things/raw': topic retention 12h is shorter than"
        " the dedup window 1d: keep the events at least as long as a redelivery of them is"
        " recognised",
        f"{path}: {copies}/retain: collection 'things/copies': unknown key 'retain' (expected"
        " one of cleanup, retention)",
        f"{path}: {copies}/cleanup: collection 'things/copies': topic cleanup must be 'compact'"
        " or 'delete', not 'squash'",
        f"{path}: {counts}/retention: collection 'things/counts': topic retention (or"
        " 'forever') must be a positive duration like '500ms', '45s', '30m', '12h', '7d' or a"
        " number of seconds, not 'soon'",
    ]


def test_topic_blocks_that_contradict_their_collection(tmp_path: Path) -> None:
    path = catalog_of(tmp_path, raw="{cleanup: compact}", counts="{retention: 30d}")
    assert problems(path) == [
        f"{path}: /collections/things~1raw/topic/cleanup: collection 'things/raw': topic cleanup"
        " 'compact' would keep only the last record of each key, and this collection is"
        " captured: producers' events, which share record keys (they are keyed by user);"
        " expected 'delete'",
        f"{path}: /collections/things~1counts/topic/retention: collection 'things/counts': topic"
        " retention applies to cleanup 'delete' only, and this collection's topic is compacted"
        " (derived by key: each document replaces the last one of its key): remove retention,"
        " or set cleanup: delete",
    ]


def test_topic_must_be_a_mapping(tmp_path: Path) -> None:
    path = catalog_of(tmp_path, raw="7d")
    assert problems(path) == [
        f"{path}: /collections/things~1raw/topic: collection 'things/raw': topic must be a"
        " mapping, not '7d'",
    ]


# --- An existing topic against its settings ----------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "partitions", "configs", "problem"),
    [
        ((4, COMPACT), 4, {"cleanup.policy": "compact"}, None),
        ((4, COMPACT), 4, {"cleanup.policy": "compact,delete"}, None),
        ((4, WEEK), 4, {"retention.ms": WEEK["retention.ms"]}, None),  # delete is the default
        (
            (4, COMPACT),
            4,
            {"retention.ms": "-1"},  # as the embedded broker describes one created without it
            "topic 't': cleanup.policy is 'delete', expected 'compact' (each key's last record"
            " is what readers restore or materialize)",
        ),
        (
            (4, WEEK),
            4,
            {"cleanup.policy": "compact"},
            "topic 't': cleanup.policy is 'compact', expected 'delete' (its records share keys:"
            " compaction would drop some before they are read)",
        ),
        (
            (4, WEEK),
            2,
            None,  # configs not described: partitions are still checked
            "topic 't': has 2 partition(s), expected 4 (the catalog's partitions)",
        ),
        ((4, COMPACT), 8, None, None),
    ],
)
def test_contradictions(
    expected: tuple[int, dict[str, str]],
    partitions: int,
    configs: dict[str, str] | None,
    problem: str | None,
) -> None:
    found, _ = contradictions("t", expected, partitions, configs)
    assert found == ([] if problem is None else [problem])


def test_a_different_retention_is_a_warning_only() -> None:
    found, warnings = contradictions("t", (4, WEEK), 4, {"retention.ms": "-1"})
    assert found == []
    assert warnings == [
        "topic 't': retention.ms is -1, the pipeline would create it with 604800000"
    ]
