"""Checking a derivation's `transform: 'module:attribute'`: importable, with the right methods."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pipeline.catalog.places import Place
from pipeline.catalog.readers import required, string, suggest


def check_transform(place: Place, body: Mapping[str, Any], has_register: bool) -> str | None:
    """The transform's 'module:attribute' if it imports and fits the register, else None."""
    at = place.at("transform")
    text = string(at, required(place, body, "transform"), "transform")
    if text is None:
        return None
    module_name, _, attribute = text.partition(":")
    if not module_name or not attribute:
        at.report(
            f"transform '{text}' must be 'module:attribute', like 'derivations.segment:Toggles'"
        )
        return None
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        at.report(f"transform '{text}': cannot import module '{module_name}' ({error})")
        return None
    except Exception as error:
        # User code runs on import: report whatever it raises instead of stopping the check.
        at.report(f"transform '{text}': importing '{module_name}' raised {error!r}")
        return None
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(target) if not n.startswith("_")]
            at.report(
                f"transform '{text}': '{module_name}' has no attribute '{part}'"
                + suggest(part, names)
            )
            return None
        target = getattr(target, part)
    ok = True
    if not callable(getattr(target, "publish", None)):
        at.report(f"transform '{text}' has no callable 'publish'")
        ok = False
    has_update = hasattr(target, "update")
    if has_update and not callable(target.update):
        at.report(f"transform '{text}' has an 'update' that is not callable")
        ok = False
    if has_update and not has_register:
        place.report(f"transform '{text}' defines 'update', so 'register' is required")
        ok = False
    if has_register and not has_update:
        at.report(f"'register' is set, so transform '{text}' must define 'update'")
        ok = False
    return text if ok else None
