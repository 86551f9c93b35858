"""`${NAME}`, `${NAME:-default}` and `$$` in catalog string values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.catalog.places import Place

_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
_WHOLE_INTERPOLATION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")


class EnvText(str):
    """A scalar that was one whole `${...}`: integer fields re-read it as a YAML scalar.

    String fields keep the text as is, so a secret like '007' is not turned into the number 7.
    """


class _Broken:
    """Stands in for a value whose interpolation failed; that was reported, so checks skip it."""


BROKEN: Any = _Broken()


def interpolate(value: Any, place: Place, env: Mapping[str, str]) -> Any:
    """Substitute `${NAME}`, `${NAME:-default}` and `$$` in every string value (not keys)."""
    if isinstance(value, dict):
        return {k: interpolate(v, place.at(str(k)), env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, place.at(i), env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value
    errors: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, default = match[1], match[2]
        if name is None:
            errors.append(
                f"malformed interpolation in '{value}': expected ${{NAME}} or ${{NAME:-default}}"
                " (write $$ for a literal $)"
            )
            return ""
        # Like the shell's `:-`, the default also replaces a variable that is set but empty.
        if env.get(name, "") == "" and default is not None:
            return default
        if name not in env:
            errors.append(f"environment variable '{name}' is not set")
            return ""
        return env[name]

    result = _INTERPOLATION.sub(substitute, value)
    for message in errors:
        place.report(message)
    if errors:
        return BROKEN
    return EnvText(result) if _WHOLE_INTERPOLATION.fullmatch(value) else result
