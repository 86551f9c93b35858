"""`set`: a value is an update to a set (add, intersect, remove), and reducing composes updates.

Members are identified by name (object sets) or by `key` (array sets); a member that is added
twice is deep-merged with the reducer of `add`'s items or properties, compiled from the schema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.documents.reduce.failure import Failure
from pipeline.documents.reduce.order import first, sort_key_function

if TYPE_CHECKING:
    from pipeline.documents.reduce.compile import Compiler, Reducer, Subschema

_SET_MEMBERS = frozenset({"add", "intersect", "remove"})

Members = dict[Any, Any]
"""A set's members by identity (a sort key for arrays, the name for objects)."""


def build_set(compiler: Compiler, subs: list[Subschema], key: list[str] | None) -> Reducer:
    """Flow's `set`: a value is an update {intersect?|remove?, add?} to a set, as a function.

    `{remove: R, add: A}` maps a set S to (S - R) + A and `{intersect: I, add: A}` maps it to
    (S & I) + A, where + adds members and deep-merges the value of a member S already has (with
    the reducer of `add`'s items, or of `add`'s property for object sets). Reducing two updates
    composes the functions, which is associative:

        lhs remove R1    then rhs remove R2    -> remove R1 | R2,   add (A1 - R2) + A2
        lhs intersect I1 then rhs remove R2    -> intersect I1 - R2, add (A1 - R2) + A2
        lhs remove R1    then rhs intersect I2 -> intersect I2 - R1, add (A1 & I2) + A2
        lhs intersect I1 then rhs intersect I2 -> intersect I1 & I2, add (A1 & I2) + A2
        rhs with only add                      -> lhs's remove/intersect, add A1 + A2

    `remove` and `intersect` only name members: their values are never merged and the earliest
    surviving one is kept. A member appears in the result iff it appears in an input (`add` if
    any input has one, `intersect` if any has one, else `remove` if any has one). Array members
    are identified by `key` (or by the whole item), kept sorted and unique.
    """
    add_subs = compiler.expand(compiler.property_location(subs, "add"))
    declared, other = compiler.object_plan(add_subs)
    _, items = compiler.array_plan(add_subs)
    sort_key = sort_key_function(key)
    keyed = key is not None

    def combine(member: Any, lhs: Any, rhs: Any, is_array: bool) -> Any:
        if is_array:
            return items(lhs, rhs) if keyed else lhs
        reducer = declared.get(member) or other(member)
        try:
            return reducer(lhs, rhs)
        except Failure as failure:
            failure.tokens.append(member)
            raise

    def members(value: Any, name: str, is_array: bool, merge: bool) -> Members:
        if is_array:
            if not isinstance(value, list):
                raise Failure(value, None, f"set member '{name}' must be an array like the others")
            found: Members = {}
            for item in value:
                k = sort_key(item)
                if k not in found:
                    found[k] = item
                elif merge:
                    found[k] = combine(k, found[k], item, True)
            return found
        if not isinstance(value, dict):
            raise Failure(value, None, f"set member '{name}' must be an object like the others")
        return value

    def parse(value: Any, is_array: bool | None) -> tuple[dict[str, Members], bool | None]:
        if not isinstance(value, dict) or not value.keys() <= _SET_MEMBERS:
            raise Failure(value, None, "a set is an object with only add, intersect and remove")
        if "intersect" in value and "remove" in value:
            raise Failure(value, None, "a set may not have both intersect and remove")
        parsed: dict[str, Members] = {}
        for name, member in value.items():
            if is_array is None:
                is_array = isinstance(member, list)
            try:
                parsed[name] = members(member, name, is_array, name == "add")
            except Failure as failure:
                failure.tokens.append(name)
                raise
        return parsed, is_array

    def add(left: Members, right: Members, is_array: bool) -> Members:
        out = dict(left)
        for k, v in right.items():
            out[k] = combine(k, out[k], v, is_array) if k in out else v
        return out

    def reduce_set(lhs: Any, rhs: Any) -> Any:
        try:
            left, is_array = parse(lhs, None)
            right, is_array = parse(rhs, is_array)
        except Failure as failure:
            failure.lhs, failure.rhs = lhs, rhs
            raise
        a1, a2 = left.get("add"), right.get("add")
        out: dict[str, Members] = {}
        if "intersect" in right:
            i2 = right["intersect"]
            if "intersect" in left:
                out["intersect"] = {k: v for k, v in left["intersect"].items() if k in i2}
            elif "remove" in left:
                out["intersect"] = {k: v for k, v in i2.items() if k not in left["remove"]}
            else:
                out["intersect"] = i2
            if a1 is not None:
                a1 = {k: v for k, v in a1.items() if k in i2}
        elif "remove" in right:
            r2 = right["remove"]
            if "intersect" in left:
                out["intersect"] = {k: v for k, v in left["intersect"].items() if k not in r2}
            elif "remove" in left:
                out["remove"] = dict(left["remove"])
                for k, v in r2.items():
                    out["remove"].setdefault(k, v)
            else:
                out["remove"] = r2
            if a1 is not None:
                a1 = {k: v for k, v in a1.items() if k not in r2}
        else:
            out.update((name, m) for name, m in left.items() if name != "add")
        if a1 is not None or a2 is not None:
            try:
                out["add"] = add(a1 or {}, a2 or {}, bool(is_array))
            except Failure as failure:
                failure.tokens.append("add")
                raise
        if not is_array:
            return out
        return {name: [v for _, v in sorted(m.items(), key=first)] for name, m in out.items()}

    return reduce_set
