"""The catalog loader: the shipped catalog, interpolation, and golden error reports."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.catalog import Catalog, load_catalog, parse_duration
from pipeline.errors import CatalogError

HERE = Path(__file__).parent
REPO = HERE.parents[1]
FIXTURES = HERE / "catalogs"
THING = (FIXTURES / "schemas" / "thing.schema.yaml").as_posix()


@pytest.fixture(autouse=True)
def transforms(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Put the test transforms module on sys.path; forget it afterwards."""
    monkeypatch.syspath_prepend(str(FIXTURES / "transforms"))
    yield
    sys.modules.pop("segflow_test_transforms", None)


def problems(paths: Path | list[Path], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        load_catalog(paths, env={} if env is None else env)
    return [str(p) for p in caught.value.problems]


def write(tmp_path: Path, text: str, name: str = "catalog.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("THING", THING))
    return path


# --- The shipped catalog -----------------------------------------------------------------------


def test_shipped_catalog_loads_with_defaults() -> None:
    catalog = load_catalog(REPO / "catalog", env={})

    events = catalog.collections["segment/events"]
    assert events.key == ("/event",)
    assert events.partitions == 4
    assert events.dedup_window == 7 * 86400
    assert events.topic == "segment.events"
    assert events.schema.path.resolve() == REPO / "schemas" / "event.schema.yaml"
    assert catalog.collections["segment/memberships"].key == (
        "/segment/vendor",
        "/segment/name",
        "/user",
    )
    assert catalog.collections["segment/toggles"].dedup_window is None

    assert [d.collection for d in catalog.derivations_from("segment/events")] == [
        "segment/memberships",
        "segment/profiles",
        "segment/toggles",
    ]
    assert catalog.derivations_from("segment/toggles") == []
    toggles = catalog.derivations["segment/toggles"]
    assert toggles.shuffle == ("/user",)
    assert toggles.transform == "derivations.segment:Toggles"
    assert toggles.register is not None
    assert toggles.register.key == ("/segment/vendor", "/segment/name", "/user")
    assert catalog.derivations["segment/profiles"].register is None

    postgres = catalog.materializations["postgres"]
    assert (postgres.kind, postgres.enabled) == ("postgres", False)
    assert dict(postgres.config) == {"dsn": "", "schema": "public"}
    assert [(b.source, b.table) for b in postgres.bindings] == [
        ("segment/memberships", "segment_memberships"),
        ("segment/profiles", "segment_profiles"),
        ("segment/toggles", "segment_toggles"),
    ]
    records = catalog.materializations["profile-records"]
    assert (records.kind, records.enabled, dict(records.config)) == (
        "postgres",
        False,
        {"dsn": "", "schema": "public"},
    )
    assert [(b.source, b.table) for b in records.bindings] == [
        ("profile/records", "profile_records")
    ]
    webhook = catalog.materializations["webhook"]
    assert (webhook.kind, webhook.enabled) == ("webhook", False)
    assert [(b.source, b.table) for b in webhook.bindings] == [("segment/toggles", None)]


def test_shipped_catalog_reads_the_environment() -> None:
    env = {
        "SEGFLOW_PARTITIONS": "8",
        "SEGFLOW_DEDUP_WINDOW": "36h",
        "SEGFLOW_POSTGRES": "postgresql://segflow@localhost/segflow",
        "SEGFLOW_POSTGRES_SCHEMA": "tenant_1",
        "SEGFLOW_WEBHOOK_URL": "https://hooks.example.com/segflow",
        "SEGFLOW_WEBHOOK_SECRET": "0123",
    }
    catalog = load_catalog([REPO / "catalog" / "segment.yaml"], env=env)

    assert {c.partitions for c in catalog.collections.values()} == {8}
    assert catalog.collections["segment/events"].dedup_window == 36 * 3600
    postgres = catalog.materializations["postgres"]
    assert postgres.enabled
    assert dict(postgres.config) == {
        "dsn": "postgresql://segflow@localhost/segflow",
        "schema": "tenant_1",
    }
    webhook = catalog.materializations["webhook"]
    assert webhook.enabled
    # A whole-value interpolation feeding a string field stays text: '0123' is not 123.
    assert dict(webhook.config) == {"url": "https://hooks.example.com/segflow", "secret": "0123"}


# --- A valid catalog over two files ------------------------------------------------------------


def test_valid_directory_of_yaml_and_yml_files() -> None:
    catalog = load_catalog(FIXTURES / "valid", env={"THINGS_PORT": "9000"})
    assert isinstance(catalog, Catalog)
    raw = catalog.collections["things/raw"]
    assert (raw.partitions, raw.dedup_window, raw.topic) == (3, 12 * 3600.0, "things.raw")
    assert catalog.collections["things/copies"].partitions == 1
    counts = catalog.derivations["things/counts"]
    assert counts.register is not None
    assert counts.register.key == ("/user", "/kind")
    hook = catalog.materializations["hook"]
    assert dict(hook.config) == {
        "url": "http://localhost:9000/$hook",
        "secret": "",
        "max_batch": "50",
        "max_attempts": "3",
        "timeout": "20.0",
    }
    assert hook.enabled
    assert not catalog.materializations["db"].enabled


# --- Environment interpolation -----------------------------------------------------------------

COLLECTION = """\
    collections:
      things/raw:
        schema: THING
        key: [/id]
        partitions: {partitions}
    materializations:
      hook:
        webhook:
          url: {url}
        bindings:
          - source: things/raw
"""


def load_one(
    tmp_path: Path, env: dict[str, str], partitions: str = "1", url: str = "''"
) -> Catalog:
    path = write(tmp_path, COLLECTION.format(partitions=partitions, url=url))
    return load_catalog(path, env=env)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${N}", {"N": "6"}, 6),
        ("${N:-4}", {}, 4),
        ("${N:-4}", {"N": ""}, 4),
        ("${N:-4}", {"N": "2"}, 2),
        ("'${N}'", {"N": "3"}, 3),
    ],
)
def test_whole_interpolation_is_reread_as_a_scalar(
    tmp_path: Path, text: str, env: dict[str, str], expected: int
) -> None:
    catalog = load_one(tmp_path, env, partitions=text)
    assert catalog.collections["things/raw"].partitions == expected


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${URL:-}", {}, ""),
        ("${URL}", {"URL": ""}, ""),
        ("http://${HOST}:${PORT:-80}/x", {"HOST": "h"}, "http://h:80/x"),
        ("http://h/$${HOST}/$$$$", {}, "http://h/${HOST}/$$"),
        ("http://h/a$b", {}, "http://h/a$b"),
    ],
)
def test_interpolation_in_strings(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    catalog = load_one(tmp_path, env, url=f"'{text}'")
    hook = catalog.materializations["hook"]
    assert hook.config["url"] == expected
    assert hook.enabled == (expected != "")


def test_unset_and_malformed_interpolations_are_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path, COLLECTION.format(partitions="${NOPE}", url="'http://${1X}/${ALSO_NOPE}'")
    )
    assert problems(path) == [
        f"{path}: /collections/things~1raw/partitions: environment variable 'NOPE' is not set",
        f"{path}: /materializations/hook/webhook/url: malformed interpolation in"
        " 'http://${1X}/${ALSO_NOPE}': expected ${NAME} or ${NAME:-default}"
        " (write $$ for a literal $)",
        f"{path}: /materializations/hook/webhook/url: environment variable 'ALSO_NOPE' is not set",
    ]


# --- Golden error report -----------------------------------------------------------------------


def test_every_problem_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    # The golden report: one line per problem, in order (grouped by file).
    expected = (FIXTURES / "broken.expected").read_text().splitlines()
    assert problems(Path("broken")) == expected


def test_catalog_error_message_lists_every_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    with pytest.raises(CatalogError) as caught:
        load_catalog(Path("broken"), env={"THINGS_UNSET_DSN": ""})
    lines = str(caught.value).splitlines()
    assert lines[0] == "catalog has 33 problem(s):"
    assert lines[1] == (
        "  broken/a.yaml: /collections/things~1raw/key/0: collection 'things/raw':"
        " key '/idd' does not exist in schema (did you mean '/id'?)"
    )


# --- Suggestions -------------------------------------------------------------------------------


def test_key_suggestion_from_the_shipped_schema(tmp_path: Path) -> None:
    schema = (REPO / "schemas" / "toggle.schema.yaml").as_posix()
    path = write(
        tmp_path,
        f"""\
        collections:
          segment/toggles:
            schema: {schema}
            key: [/evnt, /segment/vendr, /nothing_like_it]
        """,
    )
    assert problems(path) == [
        f"{path}: /collections/segment~1toggles/key/0: collection 'segment/toggles':"
        " key '/evnt' does not exist in schema (did you mean '/event'?)",
        f"{path}: /collections/segment~1toggles/key/1: collection 'segment/toggles':"
        " key '/segment/vendr' does not exist in schema (did you mean '/segment/vendor'?)",
        f"{path}: /collections/segment~1toggles/key/2: collection 'segment/toggles':"
        " key '/nothing_like_it' does not exist in schema",
    ]


def test_unknown_keys_suggest_or_list_what_is_allowed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        collection: {}
        collections:
          things/raw:
            schema: THING
            kye: [/id]
            colour: blue
        """,
    )
    assert problems(path) == [
        f"{path}: /collection: unknown key 'collection' (did you mean 'collections'?)",
        f"{path}: /collections/things~1raw/kye: collection 'things/raw': unknown key 'kye'"
        " (did you mean 'key'?)",
        f"{path}: /collections/things~1raw/colour: collection 'things/raw': unknown key 'colour'"
        " (expected one of schema, key, partitions, dedup, topic)",
        f"{path}: /collections/things~1raw: collection 'things/raw': missing required key 'key'",
    ]


def test_transform_attribute_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        collections:
          things/raw: {schema: THING, key: [/id]}
          things/copies: {schema: THING, key: [/id]}
        derivations:
          things/copies:
            source: things/raw
            shuffle: [/id]
            transform: segflow_test_transforms:Coppy
        """,
    )
    assert problems(path) == [
        f"{path}: /derivations/things~1copies/transform: derivation 'things/copies':"
        " transform 'segflow_test_transforms:Coppy': 'segflow_test_transforms' has no"
        " attribute 'Coppy' (did you mean 'Copy'?)",
    ]


# --- Files that cannot be read -----------------------------------------------------------------


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    good = write(tmp_path, "collections:\n  things/raw: {schema: THING, key: [/id]}\n", "a.yaml")
    bad = write(tmp_path, "collections:\n  things/raw:\n    key: [/id\n", "b.yaml")
    assert problems([good, bad]) == [
        f"{bad}: /: invalid YAML at line 4, column 1: expected ',' or ']', but got '<stream end>'",
    ]


def test_duplicate_yaml_keys_are_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        collections:
          things/raw: {schema: THING, key: [/id]}
          things/raw: {schema: THING, key: [/user]}
        """,
    )
    assert problems(path) == [
        f"{path}: /: invalid YAML at line 3, column 3: found duplicate key 'things/raw'",
    ]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- collections\n")
    assert problems(path) == [
        f"{path}: /: the top level of a catalog file must be a mapping, not a list",
    ]


def test_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert problems([tmp_path / "nope.yaml", tmp_path / "empty"]) == [
        f"{tmp_path / 'nope.yaml'}: /: cannot read the catalog file (No such file or directory)",
        f"{tmp_path / 'empty'}: /: directory has no *.yaml or *.yml files",
    ]


def test_missing_schema_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        collections:
          things/raw:
            schema: schemas/missing.yaml
            key: [/id]
        """,
    )
    assert problems(path) == [
        f"{path}: /collections/things~1raw/schema: collection 'things/raw':"
        " schema 'schemas/missing.yaml' cannot be read (No such file or directory)",
    ]


def test_empty_file_declares_nothing(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, "# nothing yet\n"), env={})
    assert (catalog.collections, catalog.derivations, catalog.materializations) == ({}, {}, {})


# --- Reduce annotations ------------------------------------------------------------------------


def test_reduce_annotation_problems_are_reported_in_the_schema_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def check_annotations(schema: object) -> list[tuple[str, str]]:
        return [("/properties/id/reduce", "unknown strategy 'lastWriteWin'")]

    monkeypatch.setattr("pipeline.documents.reduce.check_annotations", check_annotations)
    path = write(
        tmp_path,
        """\
        collections:
          things/raw: {schema: THING, key: [/id]}
          things/copies: {schema: THING, key: [/id]}
        """,
    )
    # Once per schema file, however many collections use it.
    assert problems(path) == [
        f"{THING}: /properties/id/reduce: unknown strategy 'lastWriteWin'",
    ]


# --- Durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7d", 604800.0),
        ("12h", 43200.0),
        ("30m", 1800.0),
        ("45s", 45.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        (" 10 s ", 10.0),
        ("30", 30.0),
        (30, 30.0),
        (0.25, 0.25),
        ("0", 0.0),
    ],
)
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "7 days", "-5s", "1h30m", "5w", True, float("inf")])
def test_parse_duration_rejects(text: str | int | float) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_every_problem_of_profiles_is_reported_with_its_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The `profiles:` section in `segflow catalog check` (SPEC 8.3, 8.4): golden report."""
    monkeypatch.chdir(FIXTURES)
    expected = (FIXTURES / "broken-profiles.expected").read_text().splitlines()
    assert problems(Path("broken-profiles")) == expected


def test_the_shipped_catalog_declares_the_profile_stages() -> None:
    catalog = load_catalog(REPO / "catalog", env={})
    assert catalog.profiles is not None
    stages = {d.source: (d.collection, d.transform) for d in catalog.derivations.values()}
    assert stages["profile/events"] == ("profile/records.identified", "segflow:profiles-identity")
    assert stages["profile/records.identified"] == ("profile/records", "segflow:profiles-records")
    # email is unique: the index stage answers into the records stage's source
    assert stages["profile/records.claims"] == (
        "profile/records.identified",
        "segflow:profiles-unique",
    )
    assert catalog.collections["profile/records.claims"].key == ("/k",)
    # manual memberships go to the identity stage, keyed like product events
    assert stages["profile/group-members"] == (
        "profile/records.identified",
        "segflow:profiles-members",
    )
    assert "profile/group-members" not in catalog.derivations, "it stays captured"


def test_producers_are_sent_to_the_captured_collection_behind_every_stage() -> None:
    catalog = load_catalog(REPO / "catalog", env={})
    for derived in ("profile/records", "profile/records.identified", "profile/records.claims"):
        assert catalog.captured_source(derived) == "profile/events"
    assert catalog.captured_source("segment/toggles") == "segment/events"
    assert catalog.captured_source("segment/events") == "segment/events"


def test_a_records_collection_of_any_name_is_materialized_as_records(tmp_path: Path) -> None:
    from materializations.postgres.shapes import GENERIC, RECORDS, shape_of

    schemas = REPO / "schemas"
    path = tmp_path / "people.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            collections:
              people/events: {{schema: {schemas}/profile-event.schema.yaml, key: [/id]}}
              people/records: {{schema: {schemas}/profile-record.schema.yaml, key: [/id]}}
              profile/records: {{schema: {schemas}/profile-record.schema.yaml, key: [/id]}}
            profiles:
              events: people/events
              records: people/records
              properties: {{}}
            materializations:
              tables:
                postgres: {{dsn: "postgresql://x/y", schema: public}}
                bindings:
                  - {{source: people/records, table: people}}
                  - {{source: profile/records, table: not_the_records}}
            """
        )
    )
    bindings = load_catalog(path, env={}).materializations["tables"].bindings
    assert [shape_of(b) for b in bindings] == [RECORDS, GENERIC]


def test_profiles_need_their_collections(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("profiles:\n  properties: {}\n")
    assert problems(path) == [
        f"{path}: /profiles: events: 'profile/events' (the default) is not a declared"
        " collection; declare it, or name yours with 'events:'",
        f"{path}: /profiles: records: 'profile/records' (the default) is not a declared"
        " collection; declare it, or name yours with 'records:'",
    ]


def test_groups_need_the_segment_events_and_manual_groups_the_members(tmp_path: Path) -> None:
    schemas = REPO / "schemas"
    base = f"""\
        collections:
          profile/events: {{schema: {schemas}/profile-event.schema.yaml, key: [/id]}}
          profile/records: {{schema: {schemas}/profile-record.schema.yaml, key: [/id]}}
          SEGMENTS
        profiles:
          groupVendor: 9
          properties: {{n: {{type: integer, from: {{events: "*", aggregate: count}}}}}}
          groups:
            busy: {{rules: [{{property: n, op: gte, value: 3}}]}}
            vip: {{manual: true}}
        """
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(base.replace("SEGMENTS", "")))
    members = (
        f"{path}: /profiles/groups/vip: manual groups take their members from"
        " 'profile/group-members' (SPEC 8.4): declare it as a captured collection"
        " (catalog/profiles.yaml has it), or name yours with 'groupMembers:'"
    )
    assert problems(path) == [  # both at once
        f"{path}: /profiles/groups: groups flow into 'segment/events' as segments of vendor"
        " groupVendor (SPEC 8.4): declare it as a captured collection (catalog/segment.yaml"
        " has it)",
        members,
    ]
    segments = f"segment/events: {{schema: {schemas}/event.schema.yaml, key: [/event]}}"
    path.write_text(textwrap.dedent(base.replace("SEGMENTS", segments)))
    assert problems(path) == [members]
