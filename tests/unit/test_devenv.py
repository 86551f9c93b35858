"""`.segflow/dev.env`: written by `segflow dev`, read by the other commands (SPEC 11)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.tools import devenv

VALUES = {
    "SEGFLOW_BROKER": "127.0.0.1:9092",
    "SEGFLOW_POSTGRES": "postgresql://postgres:secret@/postgres?host=/tmp/x y",
    "SEGFLOW_API_KEY": "sfk_abc",
}


def test_unset_variables_come_from_the_file_and_the_line_names_the_stack(tmp_path: Path) -> None:
    path = devenv.write(VALUES, tmp_path / ".segflow" / "dev.env")
    env = {"SEGFLOW_API_KEY": "mine"}
    line = devenv.apply(env, path)
    assert env == {**VALUES, "SEGFLOW_API_KEY": "mine"}, "what is set wins"
    assert line is not None and f"pid {os.getpid()}" in line
    assert "broker 127.0.0.1:9092" in line
    assert "secret" not in line, "no password on stderr"


def test_nothing_is_done_when_both_addresses_are_set_or_there_is_no_file(tmp_path: Path) -> None:
    path = devenv.write(VALUES, tmp_path / "dev.env")
    env = {"SEGFLOW_BROKER": "b:1", "SEGFLOW_POSTGRES": "p"}
    assert devenv.apply(env, path) is None
    assert env == {"SEGFLOW_BROKER": "b:1", "SEGFLOW_POSTGRES": "p"}
    assert devenv.apply({}, tmp_path / "missing.env") is None


def test_a_file_whose_writer_is_gone_is_ignored(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = tmp_path / "dev.env"
    devenv.write(VALUES, path)
    path.write_text(
        path.read_text().replace(f"SEGFLOW_DEV_PID={os.getpid()}", f"SEGFLOW_DEV_PID={gone}")
    )
    env: dict[str, str] = {}
    line = devenv.apply(env, path)
    assert env == {}
    assert line is not None and "is gone" in line


def test_only_the_writer_removes_the_file(tmp_path: Path) -> None:
    path = devenv.write(VALUES, tmp_path / "dev.env")
    path.write_text(path.read_text().replace(f"SEGFLOW_DEV_PID={os.getpid()}", "SEGFLOW_DEV_PID=1"))
    devenv.remove(path)
    assert path.exists(), "a newer segflow dev's file stays"
    devenv.write(VALUES, path)
    devenv.remove(path)
    assert not path.exists()


def test_the_file_is_shell_syntax(tmp_path: Path) -> None:
    path = devenv.write(VALUES, tmp_path / "dev.env")
    out = subprocess.run(
        ["bash", "-c", f'set -a; . "{path}"; printf %s "$SEGFLOW_POSTGRES"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == VALUES["SEGFLOW_POSTGRES"]
