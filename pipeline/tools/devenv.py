"""`.segflow/dev.env`: where `segflow dev` tells the other commands what it started (SPEC 11).

`segflow dev` writes the file in the directory it runs from and removes it when it stops;
`segflow read`, `dlq`, `keys`, `explain`, `groups`, `test` and the producers run from the same
directory take `SEGFLOW_BROKER`, `SEGFLOW_POSTGRES` and the rest from it when they are unset,
and say so on stderr.

Decisions where the spec is silent:
- A variable set in the environment always wins; the file only fills in what is unset.
- The file names the process that wrote it; a file whose process is gone (a `segflow dev`
  killed with SIGKILL) is ignored with a line saying so, rather than sending commands to a
  broker that no longer exists.
- `segflow worker` does not read it: a second worker joining the demo's would stop the demo's
  worker, which runs alone (`--alone`).
- Shell syntax (`KEY='value'` lines), so `set -a; . .segflow/dev.env` works in a shell too.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from pipeline.runtime.settings import without_credentials

PATH = Path(".segflow", "dev.env")
SHOWN = ("SEGFLOW_BROKER", "SEGFLOW_POSTGRES")
"""What the line saying which stack was found names."""


def write(values: Mapping[str, str], path: Path = PATH) -> Path:
    """Write the stack's addresses (and this process's id) for the other commands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Written by `segflow dev` (removed when it stops); other segflow commands run from",
        "# this directory use these when the variables are unset.",
        f"SEGFLOW_DEV_PID={os.getpid()}",
        *(f"{k}={shlex.quote(v)}" for k, v in values.items()),
    ]
    temporary = path.with_suffix(".tmp")
    temporary.write_text("\n".join(lines) + "\n")
    temporary.replace(path)
    return path


def remove(path: Path = PATH) -> None:
    """Remove the file if this process wrote it (not a newer `segflow dev`'s)."""
    values = read(path)
    if values is not None and values.get("SEGFLOW_DEV_PID") == str(os.getpid()):
        path.unlink(missing_ok=True)


def read(path: Path = PATH) -> dict[str, str] | None:
    """The file's variables, or None when there is no file."""
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    values = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        parts = shlex.split(raw) or [""]
        values[key.strip()] = parts[0]
    return values


def _alive(pid: str | None) -> bool:
    if pid is None or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def apply(env: MutableMapping[str, str], path: Path = PATH) -> str | None:
    """Fill the unset variables of `env` from a live `segflow dev`'s file; returns the line to
    print (which stack was used, or why the file was not), or None when nothing was done."""
    if all(env.get(name) for name in SHOWN):
        return None
    values = read(path)
    if values is None:
        return None
    pid = values.pop("SEGFLOW_DEV_PID", None)
    if not _alive(pid):
        return f"segflow: ignoring {path}: the `segflow dev` that wrote it (pid {pid}) is gone"
    taken = {k: v for k, v in values.items() if k.startswith("SEGFLOW_") and not env.get(k)}
    if not taken:
        return None
    env.update(taken)
    shown = ", ".join(
        f"{k.removeprefix('SEGFLOW_').lower()} {without_credentials(taken[k])}"
        for k in SHOWN
        if k in taken
    )
    return f"segflow: using the stack of `segflow dev` (pid {pid}) from {path}: {shown}"


def announce(line: str | None) -> None:
    if line is not None:
        print(line, file=sys.stderr, flush=True)
