"""The groups test catalog and its test files (SPEC 8.4, 8.7), run by `segflow test` as users do.

`tests/flows/catalogs/groups/` declares a property of every type and groups using every operator
on every type it fits; its `flows/*.flow.yaml` check each rule alone, boundaries, relative rules
across the test clock, all/any and a manual group across a merge. The test files live one
directory down because `--catalog DIR` reads every *.yaml in DIR as catalog.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import yaml

from tests.fixtures.stack import ROOT
from tests.integration.test_cli import segflow

pytestmark = pytest.mark.integration

CATALOG = ROOT / "tests" / "flows" / "catalogs" / "groups"
FLOWS = sorted(CATALOG.glob("flows/*.flow.yaml"))
# operators 10, changes 4, relative 7, manual 2
TESTS = 24


def env(broker: str, tmp_path: Path) -> dict[str, str]:
    """The session's broker and a topic prefix of this test's own."""
    return {
        **os.environ,
        "SEGFLOW_BROKER": broker,
        "SEGFLOW_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}.",
        "SEGFLOW_DATA_DIR": str(tmp_path / "data"),
    }


def test_the_groups_catalog_checks() -> None:
    result = segflow("--catalog", str(CATALOG), "catalog", "check")
    assert result.returncode == 0, result.stderr
    assert "profiles: 11 properties, 102 groups" in result.stdout, result.stdout


def test_every_group_test_file_passes(broker: str, tmp_path: Path) -> None:
    assert [p.name for p in FLOWS] == [
        "changes.flow.yaml",
        "manual.flow.yaml",
        "operators.flow.yaml",
        "relative.flow.yaml",
    ]
    declared = sum(len(yaml.safe_load(p.read_text())["tests"]) for p in FLOWS)
    assert declared == TESTS
    result = segflow("--catalog", str(CATALOG), "test", *map(str, FLOWS), env=env(broker, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout, result.stdout
    assert result.stdout.strip().endswith(f"{TESTS} passed, 0 failed"), result.stdout


def test_a_wrong_group_expectation_fails_with_a_diff(broker: str, tmp_path: Path) -> None:
    tests = yaml.safe_load((CATALOG / "flows" / "operators.flow.yaml").read_text())["tests"]
    arrays = next(name for name in tests if name.startswith("array:"))
    missing = next(name for name in tests if name.startswith("missing values"))
    verify = tests[arrays][1]["verify"]["documents"]
    t2 = next(doc for doc in verify if doc["id"] == "t2")
    assert t2["groups"] == ["tags-exists", "tags-in", "tags-notilike"]
    # As if notLike held for [gold, spam], whose spam is like s%.
    t2["groups"] = ["tags-exists", "tags-in", "tags-notlike"]
    wrong = tmp_path / "wrong.flow.yaml"
    wrong.write_text(yaml.safe_dump({"tests": {arrays: tests[arrays], missing: tests[missing]}}))

    result = segflow("--catalog", str(CATALOG), "test", str(wrong), env=env(broker, tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert f"FAIL {wrong}: {arrays}" in out, out
    assert f"ok   {wrong}: {missing}" in out, out
    assert 'document 1: /groups/2: expected "tags-notlike", got "tags-notilike"' in out, out
    assert out.strip().endswith("1 passed, 1 failed"), out
