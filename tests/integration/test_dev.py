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
from pathlib import Path

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
    env |= {"SEGFLOW_DATA_DIR": str(tmp_path / "dev"), "SEGFLOW_SESSION_TIMEOUT_MS": "2000"}
    out = tmp_path / "dev.log"
    with out.open("wb") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "pipeline.tools.cli", "dev", "--rate", "90", "--api-port", "0"],
            env=env,
            cwd=ROOT,
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
    finally:
        dev.send_signal(signal.SIGINT)
        code = dev.wait(60)
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
