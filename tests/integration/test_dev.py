"""`segflow dev` (what `make run` runs): the whole stack on embedded defaults shows every part
that exists — toggles reaching the demo webhook receiver, profile records being built and merged
in Postgres, and people joining groups (segment_memberships rows of the groups' vendor)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.fixtures.stack import ROOT

pytestmark = pytest.mark.integration

RECORDS = re.compile(
    r"records (\d+) in profile_records \((\d+) people with (\d+) devices, \d+ on several; "
    r"(\d+) anonymous\), \d+ purchases; merged (\d+), identity conflicts \d+"
)
IMPORTED = re.compile(r"import warehouse-users: (\d+) rows read in \d+ runs")
GROUPS = re.compile(r"groups \(segment_memberships, vendor 100\): (.*); (\d+) joins and leaves")


def test_dev_shows_toggles_and_records_being_merged(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SEGFLOW_") or k == "SEGFLOW_LOG_LEVEL"
    }
    env |= {
        "SEGFLOW_DATA_DIR": str(tmp_path / "dev"),
        "SEGFLOW_SESSION_TIMEOUT_MS": "2000",
        "SEGFLOW_CATALOG": str(ROOT / "catalog"),
        "SEGFLOW_METRICS_ADDR": "127.0.0.1:0",
    }
    out = tmp_path / "dev.log"
    with out.open("wb") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "pipeline.tools.cli", "dev", "--rate", "90", "--api-port", "0"],
            env=env,
            cwd=tmp_path,  # where it writes .segflow/dev.env for the other commands
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        merged = None
        while time.monotonic() < deadline and dev.poll() is None:
            found = RECORDS.findall(out.read_text())
            groups = GROUPS.findall(out.read_text())
            joined = groups and int(groups[-1][1]) > 0 and "recent-buyers" in groups[-1][0]
            exported = "\nexport crm " in out.read_text() and IMPORTED.search(out.read_text())
            if found and int(found[-1][4]) > 0 and "toggle " in out.read_text() and joined:
                if not exported:
                    time.sleep(1)
                    continue
                merged = found[-1]
                break
            time.sleep(1)
        if merged is not None:
            second_terminal(tmp_path, {k: v for k, v in env.items() if k != "SEGFLOW_CATALOG"})
    finally:
        dev.send_signal(signal.SIGINT)
        code = dev.wait(60)
    assert not (tmp_path / ".segflow" / "dev.env").exists(), "removed when dev stops"
    text = out.read_text()
    assert merged is not None, text[-3000:]
    records, people, devices, anonymous, _ = map(int, merged)
    # People come from the warehouse import too (a plan each), not only from signed-in devices.
    assert records == people + anonymous and people >= 120 and devices > 0
    imported = IMPORTED.findall(text)
    assert imported and int(imported[-1]) >= 120, "the demo warehouse's rows, a plan per person"
    assert re.search(r"^export crm \S+ create ", text, re.M), "the demo destination's exports"
    assert "ingest/profile/events" in text, "a curl line for a product event"
    assert code == 0, text[-3000:]


def second_terminal(cwd: Path, env: dict[str, str]) -> None:
    """What a user runs in a second terminal, from the same directory, with nothing set: the
    commands find the stack in .segflow/dev.env, say so, and work; the console answers."""
    values = dict(
        line.split("=", 1)
        for line in (cwd / ".segflow" / "dev.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    env = {k: v for k, v in env.items() if k != "SEGFLOW_DATA_DIR"}
    for command in (["read", "segment/profiles"], ["dlq", "list"], ["keys", "list"]):
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.tools.cli", *command],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (command, done.stderr)
        assert "using the stack of `segflow dev`" in done.stderr, (command, done.stderr)
        assert values["SEGFLOW_BROKER"] in done.stderr
        if command[0] == "read":
            assert '"segments"' in done.stdout.splitlines()[0]
        if command[0] == "keys":
            assert "dev-" in done.stdout, "the key segflow dev made"
    with urllib.request.urlopen(values["SEGFLOW_CONSOLE_URL"] + "api/live", timeout=10) as r:
        assert orjson.loads(r.read())["samples"], "the console's live figures"
