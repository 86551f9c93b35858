"""Temporary catalogs for the groups benchmarks: the shipped catalog with another `groups:` section.

`catalog_with_groups(directory, groups)` copies `catalog/*.yaml` into `directory/catalog`, links
`directory/schemas` to the repository's (the catalog names its schemas `../schemas/...`), and
replaces the `groups:` block of `profiles.yaml` (everything from the comment above `groups:` to
the next top-level key) by `groups` written as YAML flow mappings (JSON), or drops it when
`groups` is empty. Text, not a YAML round trip, so `${NAME:-default}` values stay as written.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson

from bench.harness.procs import ROOT

Groups = dict[str, dict[str, Any]]


def shipped_groups_block() -> str:
    """The `groups:` block of the shipped catalog, as written."""
    lines = (ROOT / "catalog" / "profiles.yaml").read_text().splitlines(keepends=True)
    start, end = _block(lines)
    return "".join(lines[start:end])


def catalog_with_groups(directory: Path, groups: Groups | None) -> Path:
    """A catalog directory like the shipped one with `groups` (None: the shipped ones)."""
    target = directory / "catalog"
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "catalog").glob("*.yaml")):
        shutil.copy(path, target / path.name)
    schemas = directory / "schemas"
    if not schemas.exists():
        schemas.symlink_to(ROOT / "schemas")
    if groups is None:
        return target
    profiles = target / "profiles.yaml"
    lines = profiles.read_text().splitlines(keepends=True)
    start, end = _block(lines)
    block = []
    if groups:
        block.append("  groups:\n")
        block += [f"    {name}: {orjson.dumps(group).decode()}\n" for name, group in groups.items()]
    profiles.write_text("".join([*lines[:start], *block, "\n", *lines[end:]]))
    return target


def _block(lines: list[str]) -> tuple[int, int]:
    """Line range of the `  groups:` block with the comment lines just above it."""
    start = next(i for i, line in enumerate(lines) if line.rstrip() == "  groups:")
    while start > 0 and lines[start - 1].startswith("  #"):
        start -= 1
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith("  ")):
        end += 1
    while lines[end - 1].strip() == "":
        end -= 1
    return start, end


def shipped_groups() -> Groups:
    """The shipped catalog's groups, parsed."""
    import yaml

    text = (ROOT / "catalog" / "profiles.yaml").read_text()
    groups: Groups = yaml.safe_load(text)["profiles"]["groups"]
    return groups


def fifty_groups() -> Groups:
    """The shipped 7 groups and 43 more over the shipped properties, 50 in all: number
    comparisons, `in`/`notIn`, text operators on email and country, exists/notExists, operators
    on the `pages` array, relative rules on the dates (6 relative groups with the shipped 3) and
    a few groups of several rules."""

    def rule(prop: str, op: str, value: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {"property": prop, "op": op}
        if value is not None:
            out["value"] = value
        return out

    def one(prop: str, op: str, value: Any = None) -> dict[str, Any]:
        return {"rules": [rule(prop, op, value)]}

    extra: Groups = {
        # numbers
        "ltv-over-100": one("ltv", "gt", 100),
        "ltv-over-1000": one("ltv", "gt", 1000),
        "ltv-50-200": one("ltv", "between", [50, 200]),
        "one-purchase": one("purchases", "eq", 1),
        "repeat-buyers": one("purchases", "gte", 2),
        "loyal-buyers": one("purchases", "gte", 5),
        "non-buyers": one("purchases", "eq", 0),
        "big-basket": one("averageOrder", "gt", 150),
        "small-basket": one("averageOrder", "lt", 50),
        "big-order": one("largestOrder", "gte", 280),
        "visits-10": one("visits", "gte", 10),
        "visits-few": one("visits", "lt", 3),
        "visits-3-8": one("visits", "between", [3, 8]),
        # in / notIn
        "benelux-fr": one("country", "in", ["FR", "BE", "LU"]),
        "not-us": one("country", "notIn", ["US"]),
        "buyers-1-2": one("purchases", "in", [1, 2]),
        "visits-1-3": one("visits", "in", [1, 2, 3]),
        # text operators
        "example-emails": one("email", "endsWith", "@example.com"),
        "u0-emails": one("email", "like", "u0%"),
        "example-ilike": one("email", "iLike", "%EXAMPLE%"),
        "email-000": one("email", "contains", "000"),
        "email-u1": one("email", "startsWith", "u1"),
        "not-gmail": one("email", "notLike", "%@gmail.com"),
        "us": one("country", "eq", "US"),
        "country-d": one("country", "like", "D_"),
        "not-de": one("country", "ne", "DE"),
        # exists / notExists
        "has-email": one("email", "exists"),
        "no-email": one("email", "notExists"),
        "no-phone": one("phone", "notExists"),
        "has-name": one("firstName", "exists"),
        "ever-bought": one("lastPurchaseAt", "exists"),
        "never-carted": one("lastCartAt", "notExists"),
        # the pages array
        "pricing-viewers": one("pages", "eq", "/pricing"),
        "docs-or-blog": one("pages", "in", ["/docs", "/blog"]),
        "docs-readers": one("pages", "contains", "doc"),
        "account-pages": one("pages", "startsWith", "/acc"),
        "never-about": one("pages", "notIn", ["/about"]),
        "deep-visitors": one("pages", "ne", "/"),
        # relative rules
        "new-visitors": one("firstSeenAt", "inTheLast", "7d"),
        "recent-carters": one("lastCartAt", "inTheLast", "1h"),
        "active-high-value": {
            "rules": [rule("ltv", "gt", 100), rule("lastPurchaseAt", "inTheLast", "30d")]
        },
        # several rules
        "german-big": {
            "rules": [rule("country", "in", ["DE", "AT", "CH"]), rule("ltv", "gt", 200)]
        },
        "engaged": {
            "match": "any",
            "rules": [rule("visits", "gte", 8), rule("purchases", "gte", 3)],
        },
    }
    groups = {**shipped_groups(), **extra}
    assert len(groups) == 50, len(groups)
    return groups
