"""The packages import downward only (the order in `pipeline/__init__.py`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = [
    ("pipeline.errors", "pipeline.figures"),
    ("pipeline.documents", "derivations.profiles"),
    ("pipeline.catalog",),
    ("derivations", "materializations"),
    ("pipeline.runtime",),
    ("pipeline.producers",),
    ("pipeline.tools",),
]


def layer(module: str) -> int | None:
    for number, packages in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in packages):
            return number
    return None


def imports(path: Path) -> list[tuple[int, str]]:
    """Every Segflow module `path` imports (also inside functions and TYPE_CHECKING), by line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found += [(node.lineno, max(names, key=lambda n: layer(n) or -1))]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, name) for line, name in found if layer(name) is not None]


def test_every_module_imports_only_its_layer_and_those_below() -> None:
    upward = []
    for package in ("pipeline", "derivations", "materializations"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(
                ".__init__"
            )
            own = layer(module)
            assert own is not None or module == "pipeline", f"{module} is in no layer"
            for line, name in imports(path):
                if own is not None and layer(name) > own:  # type: ignore[operator]
                    upward.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {name}")
    assert upward == []


def test_no_module_is_over_450_lines() -> None:
    long = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for package in ("pipeline", "derivations", "materializations")
        for path in sorted((ROOT / package).rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > 450
    ]
    assert long == []
