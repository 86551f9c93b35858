"""`merge`: objects merged property by property, arrays item by item or by `key`.

Each property and item is reduced with the reducer its own subschema compiles to, so a merge is
where the schema's nesting becomes the reducer's nesting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.documents.pointers import MISSING
from pipeline.documents.reduce.failure import Failure, kind
from pipeline.documents.reduce.order import first, sort_key_function
from pipeline.documents.reduce.strategies import last_write_wins

if TYPE_CHECKING:
    from pipeline.documents.reduce.compile import Compiler, Reducer, Subschema


def build_merge(compiler: Compiler, subs: list[Subschema], key: list[str] | None) -> Reducer:
    """The `merge` reducer of a location: objects by name, arrays by index or by `key`."""
    declared, other = compiler.object_plan(subs)
    # None marks lastWriteWins, so the common case costs no call.
    props: dict[str, Reducer | None] = {
        name: None if r is last_write_wins else r for name, r in declared.items()
    }
    prefix, items = compiler.array_plan(subs)
    merge_array = _keyed_merge(items, key) if key is not None else _indexed_merge(prefix, items)
    missing = MISSING
    unknown: Any = object()

    def merge(lhs: Any, rhs: Any) -> Any:
        if isinstance(lhs, dict) and isinstance(rhs, dict):
            out = dict(lhs)
            name = ""
            try:
                for name, right in rhs.items():
                    left = out.get(name, missing)
                    if left is missing:
                        out[name] = right
                        continue
                    reducer = props.get(name, unknown)
                    if reducer is unknown:
                        reducer = other(name)
                        reducer = None if reducer is last_write_wins else reducer
                    out[name] = right if reducer is None else reducer(left, right)
            except Failure as failure:
                failure.tokens.append(name)
                raise
            return out
        if isinstance(lhs, list) and isinstance(rhs, list):
            return merge_array(lhs, rhs)
        raise Failure(
            lhs, rhs, f"merge needs two objects or two arrays, not {kind(lhs)} and {kind(rhs)}"
        )

    return merge


def _indexed_merge(prefix: list[Reducer], items: Reducer) -> Reducer:
    def merge_array(lhs: list[Any], rhs: list[Any]) -> list[Any]:
        out = list(rhs) if len(rhs) > len(lhs) else list(lhs)
        index = 0
        try:
            for index in range(min(len(lhs), len(rhs))):
                reducer = prefix[index] if index < len(prefix) else items
                out[index] = reducer(lhs[index], rhs[index])
        except Failure as failure:
            failure.tokens.append(str(index))
            raise
        return out

    return merge_array


def _keyed_merge(items: Reducer, key: list[str]) -> Reducer:
    sort_key = sort_key_function(key)
    no_key: Any = object()

    def merge_array(lhs: list[Any], rhs: list[Any]) -> list[Any]:
        pairs = [(sort_key(item), item) for item in lhs]
        pairs += [(sort_key(item), item) for item in rhs]
        pairs.sort(key=first)  # stable: lhs before rhs, each side in its order
        out: list[Any] = []
        previous = no_key
        try:
            for k, item in pairs:
                if k == previous:
                    out[-1] = items(out[-1], item)
                else:
                    out.append(item)
                    previous = k
        except Failure as failure:
            failure.tokens.append(str(len(out) - 1))  # the entry's index in the result
            raise
        return out

    return merge_array
