"""The `segflow` command as users run it: test files, catalog check, read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.fixtures.events import generate, reference
from tests.fixtures.stack import ROOT, Namespace

pytestmark = pytest.mark.integration

PEER = ROOT / "tests" / "peer" / "estuary-segmentation-tests.flow.yaml"


def segflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.tools.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


@pytest.fixture
def peer_suite(tmp_path: Path) -> Path:
    """The peer suite with Flow's collection names mapped to ours, and nothing else changed."""
    mapped = tmp_path / "peer.flow.yaml"
    mapped.write_text(PEER.read_text().replace("examples/segment/", "segment/"))
    return mapped


def test_peer_suite_and_own_test_files_pass_on_the_embedded_broker(peer_suite: Path) -> None:
    flows = sorted(str(p) for p in (ROOT / "tests" / "flows").glob("*.flow.yaml"))
    result = segflow("test", str(peer_suite), *flows)
    assert result.returncode == 0, result.stdout + result.stderr
    # the peer suite's 3 and our own 10 (semantics, Grouparoo's flow, unique emails, groups)
    assert result.stdout.strip().endswith(f"{3 + 10} passed, 0 failed"), result.stdout


def test_wrong_expectation_fails_with_a_diff(peer_suite: Path, namespace: Namespace) -> None:
    text = peer_suite.read_text()
    # Change a user name in a verify block, as Flow's demo suggests.
    wrong = text.replace(
        "            user: carly\n            last: *ts3",
        "            user: karly\n            last: *ts3",
    )
    assert wrong != text
    peer_suite.write_text(wrong)
    result = segflow("test", str(peer_suite), env=namespace.env())
    assert result.returncode == 1
    out = result.stdout
    assert "FAIL" in out and "Segment membership updates with segmentation events" in out
    assert 'document 2: /user: expected "karly", got "carly"' in out
    assert '"user":"carly"' in out  # the actual documents are shown
    assert out.strip().endswith("2 passed, 1 failed")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("tests:\n  a: [\n", "not valid YAML"),
        (
            "tests:\n  'bad uuid':\n    - ingest:\n        collection: segment/events\n"
            "        documents: [{event: nope, timestamp: '2021-01-01T00:00:00Z', user: u,"
            " segment: {vendor: 1, name: s}}]\n",
            "test 'bad uuid', step 1 (ingest segment/events), document 0: "
            "/event: must be a UUID (32 hexadecimal digits grouped 8-4-4-4-12)",
        ),
        (
            "tests:\n  'typo':\n    - verify:\n        collection: segment/memberhsips\n"
            "        documents: []\n",
            "test 'typo', step 1 (verify): unknown collection 'segment/memberhsips'",
        ),
    ],
    ids=["yaml", "format", "collection"],
)
def test_malformed_test_file_is_named_with_its_test_and_step(
    tmp_path: Path, namespace: Namespace, content: str, expected: str
) -> None:
    path = tmp_path / "broken.flow.yaml"
    path.write_text(content)
    result = segflow("test", str(path), env=namespace.env())
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert expected in result.stderr, result.stderr


def test_catalog_check(tmp_path: Path) -> None:
    ok = segflow("catalog", "check")
    assert ok.returncode == 0, ok.stderr
    assert "catalog ok: 7 collections, 3 derivations, 3 materializations" in ok.stdout
    assert "; 1 destination (0 enabled); 1 import (0 enabled)" in ok.stdout
    assert "profiles: 15 properties, 7 groups (profile/events -> profile/records)" in ok.stdout
    broken = tmp_path / "catalog"
    broken.mkdir()
    text = (
        (ROOT / "catalog" / "segment.yaml")
        .read_text()
        .replace("../schemas/", str(ROOT / "schemas") + "/")
    )
    text = text.replace(
        "key: [/event]\n    partitions: ${SEGFLOW_PARTITIONS:-4}\n\nderivations",
        "key: [/evnt]\n    partitions: 0\n\nderivations",
    )
    text = text.replace(
        "transform: derivations.segment:Profiles", "transfrom: derivations.segment:Profiles"
    )
    (broken / "segment.yaml").write_text(text)
    result = segflow("--catalog", str(broken), "catalog", "check")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "segflow: catalog has 4 problem(s):", result.stderr
    assert any(
        "/collections/segment~1toggles/key/0" in line and "did you mean '/event'?" in line
        for line in lines
    )
    assert any("/collections/segment~1toggles/partitions" in line for line in lines)
    assert any("transfrom" in line and "did you mean 'transform'" in line for line in lines)


async def test_read_prints_current_documents(namespace: Namespace, tmp_path: Path) -> None:
    events = generate(300, seed=9)
    worker = namespace.worker(tmp_path / "worker.log")
    try:
        await namespace.produce("segment/events", events, partition_of=lambda d: 0)
        await namespace.processed()
    finally:
        worker.terminate()
        worker.wait(30)
    result = segflow("read", "segment/memberships", env=namespace.env())
    assert result.returncode == 0, result.stderr
    docs = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert docs == reference(events)["segment/memberships"]


def test_keys_through_the_command(postgres: str, pg_schema: str) -> None:
    import os

    env = {**os.environ, "SEGFLOW_POSTGRES": postgres, "SEGFLOW_POSTGRES_SCHEMA": pg_schema}
    created = segflow(
        "keys", "create", "--name", "shop", "--collections", "segment/events", env=env
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("sfk_")
    listed = segflow("keys", "list", env=env)
    assert "shop" in listed.stdout and key not in listed.stdout + listed.stderr
    again = segflow("keys", "create", "--name", "shop", "--collections", "segment/events", env=env)
    assert again.returncode == 2 and "already exists" in again.stderr
    wrong = segflow("keys", "create", "--name", "x", "--collections", "segment/evnts", env=env)
    assert wrong.returncode == 2 and "segment/evnts" in wrong.stderr
    assert segflow("keys", "revoke", "shop", env=env).returncode == 0


SHOP_CATALOG = """\
collections:
  profile/events:
    schema: {schemas}/profile-event.schema.yaml
    key: [/id]
    partitions: 2
  profile/records:
    schema: {schemas}/profile-record.schema.yaml
    key: [/id]
    partitions: 2
profiles:
  events: profile/events
  records: profile/records
  properties:
    spend: {{type: float, from: {{events: [order], path: /data/amount, aggregate: sum}}}}
    orders: {{type: integer, from: {{events: [order], aggregate: count}}}}
    plan: {{type: string, from: {{events: [subscribe], path: /data/plan, aggregate: latest}}}}
"""
SHOP_TEST = """\
tests:
  "a shop's own properties":
    - ingest:
        collection: profile/events
        documents:
          - {id: 10000000-0000-0000-0000-000000000001, type: order, anonymousId: d1,
             occurredAt: "2024-05-01T10:00:00Z", data: {amount: 12.5}}
          - {id: 10000000-0000-0000-0000-000000000002, type: subscribe, userId: u1,
             anonymousId: d1, occurredAt: "2024-05-01T10:01:00Z", data: {plan: pro}}
          - {id: 10000000-0000-0000-0000-000000000003, type: order, userId: u1,
             occurredAt: "2024-05-01T10:02:00Z", data: {amount: "7.5"}}
    - verify:
        collection: profile/records
        documents:
          - {id: u1, anonymousIds: [d1], properties: {SPEND, orders: 2, plan: pro}}
"""


def test_a_test_file_runs_against_another_catalog(tmp_path: Path) -> None:
    """`segflow --catalog DIR test FILE` (SPEC 8.7): the catalog's own properties decide."""
    catalog = tmp_path / "shop"
    catalog.mkdir()
    (catalog / "shop.yaml").write_text(SHOP_CATALOG.format(schemas=ROOT / "schemas"))
    good, wrong = tmp_path / "shop.flow.yaml", tmp_path / "wrong.flow.yaml"
    good.write_text(SHOP_TEST.replace("SPEND", "spend: 20.0"))
    wrong.write_text(SHOP_TEST.replace("SPEND", "spend: 12.5"))

    passed = segflow("--catalog", str(catalog), "test", str(good))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.strip().endswith("1 passed, 0 failed"), passed.stdout

    failed = segflow("--catalog", str(catalog), "test", str(wrong))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "/properties/spend: expected 12.5, got 20.0" in failed.stdout, failed.stdout

    # The shipped catalog has none of these properties: the same file fails against it.
    shipped = segflow("test", str(good))
    assert shipped.returncode == 1, shipped.stdout + shipped.stderr
