"""JSON pointers (RFC 6901): parse, read from documents, and build key tuples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

MISSING: Any = object()
"""Returned by `get` when a location does not exist in a document."""


def parse(pointer: str) -> tuple[str, ...]:
    """Split '/a/b~1c' into ('a', 'b/c'). The empty pointer is the whole document."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer {pointer!r} must be empty or start with '/'")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/"))


def escape(token: str) -> str:
    """Escape one reference token for use in a pointer."""
    return token.replace("~", "~0").replace("/", "~1")


def join(*tokens: str | int) -> str:
    """Build a pointer from reference tokens."""
    return "".join("/" + escape(str(t)) for t in tokens)


def get(document: Any, tokens: Sequence[str]) -> Any:
    """Read the value at `tokens`, or MISSING."""
    value = document
    for token in tokens:
        if isinstance(value, dict):
            value = value.get(token, MISSING)
            if value is MISSING:
                return MISSING
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return MISSING
    return value


def value_getter(tokens: Sequence[str]) -> Callable[[Any], Any]:
    """`get` for one parsed pointer, unrolled for the short pointers keys use (hot path)."""
    missing = MISSING
    if len(tokens) == 1:
        (a,) = tokens
        return lambda doc: doc.get(a, missing) if type(doc) is dict else missing
    if len(tokens) == 2:
        a, b = tokens

        def get_two(doc: Any) -> Any:
            value = doc.get(a, missing) if type(doc) is dict else missing
            return value.get(b, missing) if type(value) is dict else missing

        return get_two
    frozen = tuple(tokens)
    return lambda doc: get(doc, frozen)


def key_getter(pointers: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    """A function that extracts the tuple of values at `pointers` (MISSING where absent)."""
    getters = [value_getter(parse(p)) for p in pointers]
    if len(getters) == 1:
        (g1,) = getters
        return lambda doc: (g1(doc),)
    if len(getters) == 2:
        g1, g2 = getters
        return lambda doc: (g1(doc), g2(doc))
    if len(getters) == 3:
        g1, g2, g3 = getters
        return lambda doc: (g1(doc), g2(doc), g3(doc))
    return lambda doc: tuple(g(doc) for g in getters)


def encode_key(values: tuple[Any, ...]) -> bytes:
    """Key bytes for state, changelog and topics: the JSON array of the key's values."""
    return orjson.dumps([None if v is MISSING else v for v in values])


def first_present_encoder(pointers: Sequence[str]) -> Callable[[Any], bytes]:
    """`encode_key` of the text of the first value present at `pointers` (an integer as its
    decimal digits, so 42 and "42" are one key), or of null when none is."""
    getters = [value_getter(parse(p)) for p in pointers]

    def first(doc: Any) -> bytes:
        for getter in getters:
            value = getter(doc)
            if value is not None and value is not MISSING:
                return orjson.dumps([value if isinstance(value, str) else str(value)])
        return b"[null]"

    return first


def key_encoder(pointers: Sequence[str]) -> Callable[[Any], bytes]:
    """`encode_key` of the values at `pointers`: fast when every value is present (hot path)."""
    getter = key_getter(pointers)

    def slow(doc: Any) -> bytes:
        return encode_key(getter(doc))

    paths = [parse(p) for p in pointers]
    if not paths or any(not 1 <= len(path) <= 2 for path in paths):
        return slow
    dumps = orjson.dumps
    # A missing name raises KeyError; a value that is not an object, TypeError. Either way the
    # slow path answers (with null where a value is missing), as `key_getter` would.
    if len(paths) == 1 and len(paths[0]) == 1:
        ((a,),) = paths

        def one(doc: Any) -> bytes:
            try:
                return dumps([doc[a]])
            except (KeyError, TypeError):
                return slow(doc)

        return one
    lookups = [(path[0], path[1] if len(path) == 2 else None) for path in paths]

    def many(doc: Any) -> bytes:
        try:
            return dumps([doc[a] if b is None else doc[a][b] for a, b in lookups])
        except (KeyError, TypeError):
            return slow(doc)

    return many
