"""The named queries analysts and the tests run against the tables (`docs/queries.sql`).

Apart from the sink: reading them needs no connection, and the sink never runs them.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import SegflowError


def load_queries(path: str | Path) -> dict[str, str]:
    """The named queries of a file like docs/queries.sql: `-- name: <slug>` starts each one.

    Comment lines are dropped and so is the final semicolon; placeholders stay `%(name)s`.
    """
    queries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("-- name:"):
            name = stripped.removeprefix("-- name:").strip()
            if not name or name in queries:
                what = "an empty name" if not name else f"a second query named '{name}'"
                raise SegflowError(f"{path}: line {number}: {what}")
            current = queries[name] = []
        elif stripped.startswith("--") or not stripped:
            continue
        elif current is None:
            raise SegflowError(f"{path}: line {number}: SQL before the first '-- name:' line")
        else:
            current.append(line.rstrip())
    result = {
        name: "\n".join(lines).strip().removesuffix(";").strip() for name, lines in queries.items()
    }
    empty = [name for name, text in result.items() if not text]
    if empty:
        raise SegflowError(f"{path}: query '{empty[0]}' has no SQL")
    return result
