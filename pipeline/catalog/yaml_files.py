"""Reading YAML: a loader that rejects duplicate keys, error positions, the files to read."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import Problem

_MERGE_TAG = "tag:yaml.org,2002:merge"


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a repeated mapping key instead of keeping the last one silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            if (key_node.tag, key_node.value) in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key '{key_node.value}'",
                    key_node.start_mark,
                )
            seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep)


def yaml_error(error: yaml.YAMLError) -> str:
    """The error with its line and column (1-based), as a user finds it in an editor."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    return str(error)


def catalog_files(paths: Sequence[Path] | Path, problems: list[Problem]) -> list[Path]:
    """The files to read: each path, or every *.yaml / *.yml in a directory, each once."""
    files: list[Path] = []
    for path in [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]:
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
            )
            if not found:
                problems.append(Problem(str(path), "", "directory has no *.yaml or *.yml files"))
            files += found
        else:
            files.append(path)
    # The same file named twice (directly and through its directory) is read once.
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    return list(unique.values())
