"""Load the catalog: YAML files that declare collections, derivations and materializations.

`load_catalog` interpolates environment variables, then checks everything it can and raises one
`CatalogError` carrying every problem (file, JSON pointer inside it, reason), never just the first.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import math
import os
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlparse

import yaml
from jsonschema.exceptions import SchemaError
from referencing.exceptions import Unresolvable, Unretrievable

from pipeline.documents import pointers
from pipeline.documents.schema import Schema, load_schema
from pipeline.errors import CatalogError, Problem

# --- The specs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CollectionSpec:
    """A collection: its documents' schema, key, partition count and redelivery window."""

    name: str
    schema: Schema
    key: tuple[str, ...]
    partitions: int
    dedup_window: float | None

    @property
    def topic(self) -> str:
        """The topic name without namespace prefix: 'segment/events' -> 'segment.events'."""
        return self.name.replace("/", ".")


@dataclass(frozen=True)
class RegisterSpec:
    """Per-key state of a derivation, reduced by the register schema's annotations."""

    schema: Schema
    key: tuple[str, ...]


@dataclass(frozen=True)
class DerivationSpec:
    """How `collection` is derived from `source` by the `transform` ('module:attribute')."""

    collection: str
    source: str
    shuffle: tuple[str, ...]
    register: RegisterSpec | None
    transform: str


@dataclass(frozen=True)
class BindingSpec:
    """One collection written by a materialization (to `table` for Postgres)."""

    source: str
    table: str | None


@dataclass(frozen=True)
class MaterializationSpec:
    """A sink. `config` holds strings: durations as seconds ('20.0'), integers as digits."""

    name: str
    kind: str
    config: Mapping[str, str]
    bindings: tuple[BindingSpec, ...]
    enabled: bool


@dataclass(frozen=True)
class Catalog:
    """Everything the catalog declares, checked."""

    collections: Mapping[str, CollectionSpec]
    derivations: Mapping[str, DerivationSpec]
    materializations: Mapping[str, MaterializationSpec]

    def derivations_from(self, source: str) -> list[DerivationSpec]:
        """The derivations reading `source`, in declaration order."""
        return [d for d in self.derivations.values() if d.source == source]


# --- Durations ---------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str | int | float) -> float:
    """Seconds in '7d', '12h', '30m', '45s', '500ms' or a plain number of seconds."""
    if isinstance(text, bool):
        raise ValueError(f"a duration is a number or text like '30s', not {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    elif isinstance(text, str) and (match := _DURATION.fullmatch(text.strip())):
        seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    else:
        raise ValueError(
            f"invalid duration {text!r}: expected seconds or e.g. '500ms', '45s', '30m', '12h'"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {text!r}: must be a finite number >= 0")
    return seconds


# --- Reading files -----------------------------------------------------------------------------

_TOP_KEYS = ("collections", "derivations", "materializations", "import")
_SECTIONS = {
    "collections": "collection",
    "derivations": "derivation",
    "materializations": "materialization",
}
_COLLECTION_KEYS = ("schema", "key", "partitions", "dedup")
_DERIVATION_KEYS = ("source", "shuffle", "register", "transform")
_REGISTER_KEYS = ("schema", "key")
_MATERIALIZATION_KEYS = ("postgres", "webhook", "bindings")
_POSTGRES_KEYS = ("dsn", "schema")
_WEBHOOK_KEYS = ("url", "secret", "max_batch", "timeout", "max_attempts")
_BINDING_KEYS = ("source", "table")

_COLLECTION_NAME = re.compile(r"[a-z0-9_.-]+(/[a-z0-9_.-]+)*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
_WHOLE_INTERPOLATION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(yaml.SafeLoader):
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


class _EnvText(str):
    """A scalar that was one whole `${...}`: integer fields re-read it as a YAML scalar.

    String fields keep the text as is, so a secret like '007' is not turned into the number 7.
    """


class _Broken:
    """Stands in for a value whose interpolation failed; that was reported, so checks skip it."""


_BROKEN: Any = _Broken()


def _yaml_error(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    return str(error)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return "a mapping" if value else "an empty mapping"


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _listing(values: Sequence[str]) -> str:
    return "[" + ", ".join(values) + "]"


@dataclass
class _File:
    """One catalog file and the problem list its findings go to."""

    path: Path
    problems: list[Problem]

    def report(self, pointer: str, message: str) -> None:
        self.problems.append(Problem(str(self.path), pointer, message))


@dataclass(frozen=True)
class _Place:
    """A location in a catalog file, and what lives there ("collection 'segment/events'")."""

    file: _File
    pointer: str
    label: str

    def at(self, *tokens: str | int) -> _Place:
        return _Place(self.file, self.pointer + pointers.join(*tokens), self.label)

    def report(self, message: str) -> None:
        self.file.report(self.pointer, f"{self.label}: {message}" if self.label else message)


@dataclass(frozen=True)
class _Entry:
    """One named block under a section, not yet checked."""

    place: _Place
    name: str
    body: Any


def _interpolate(value: Any, place: _Place, env: Mapping[str, str]) -> Any:
    """Substitute `${NAME}`, `${NAME:-default}` and `$$` in every string value (not keys)."""
    if isinstance(value, dict):
        return {k: _interpolate(v, place.at(str(k)), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, place.at(i), env) for i, v in enumerate(value)]
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
        return _BROKEN
    return _EnvText(result) if _WHOLE_INTERPOLATION.fullmatch(value) else result


# --- Reading typed values ----------------------------------------------------------------------


def _mapping(place: _Place, value: Any, allowed: Sequence[str], what: str) -> dict[str, Any] | None:
    """`value` as a mapping with only `allowed` keys; reports anything else."""
    if value is _BROKEN:
        return None
    if not isinstance(value, dict):
        place.report(f"{what} must be a mapping, not {_kind(value)}")
        return None
    for key in value:
        if key not in allowed:
            expected = "expected one of " + ", ".join(a for a in allowed if a != "import")
            place.at(str(key)).report(
                f"unknown key '{key}'" + (_suggest(str(key), allowed) or f" ({expected})")
            )
    return value


def _required(place: _Place, body: Mapping[str, Any], key: str) -> Any:
    if key not in body:
        place.report(f"missing required key '{key}'")
        return _BROKEN
    return body[key]


def _string(place: _Place, value: Any, what: str) -> str | None:
    if value is _BROKEN:
        return None
    if not isinstance(value, str):
        place.report(f"{what} must be a string, not {_kind(value)}")
        return None
    return str(value)


def _identifier(place: _Place, value: Any, what: str) -> str | None:
    text = _string(place, value, what)
    if text is not None and not _IDENTIFIER.fullmatch(text):
        place.report(
            f"{what} '{text}' is not a valid SQL identifier (expected [A-Za-z_][A-Za-z0-9_]*)"
        )
        return None
    return text


def _integer(place: _Place, value: Any, what: str) -> int | None:
    """An integer >= 1; a whole `${...}` is re-read as a YAML scalar first."""
    if value is _BROKEN:
        return None
    if isinstance(value, _EnvText) and value:
        with contextlib.suppress(yaml.YAMLError):
            value = yaml.safe_load(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        place.report(f"{what} must be an integer >= 1, not {_kind(value)}")
        return None
    return value


def _duration(place: _Place, value: Any, what: str) -> float | None:
    """A positive duration ('30s', '7d', or seconds)."""
    if value is _BROKEN:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        place.report(
            f"{what} must be a positive duration like '500ms', '45s', '30m', '12h', '7d'"
            f" or a number of seconds, not {_kind(value)}"
        )
        return None
    return seconds


def _pointers(
    place: _Place, value: Any, what: str, schema: Schema | None, where: str
) -> tuple[str, ...] | None:
    """A non-empty list of JSON pointers, each declared by `schema` (skipped when it is None)."""
    if value is _BROKEN:
        return None
    if not isinstance(value, list) or not value:
        place.report(
            f"{what} must be a non-empty list of JSON pointers like [/user], not {_kind(value)}"
        )
        return None
    result: list[str] = []
    for i, item in enumerate(value):
        if item is _BROKEN:
            continue
        if not isinstance(item, str) or not item.startswith("/"):
            place.at(i).report(
                f"{what} entry must be a JSON pointer like '/user', not {_kind(item)}"
            )
            continue
        if schema is not None and not schema.has_location(item):
            suggestion = _suggest(item, schema.property_names(""))
            place.at(i).report(f"{what} '{item}' does not exist in {where}{suggestion}")
            continue
        result.append(str(item))
    return tuple(result) if len(result) == len(value) else None


# --- Schemas -----------------------------------------------------------------------------------

# Keywords whose values are data, not subschemas: a "$ref" inside them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples", "reduce"})


def _unresolved_ref(schema: Schema) -> str | None:
    """Follow every `$ref`, also into other files: a description of the first that fails."""
    seen: set[tuple[str, str]] = set()

    def walk(node: Any, base: str, at: str) -> str | None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                if (found := walk(item, base, f"{at}/{i}")) is not None:
                    return found
            return None
        if not isinstance(node, dict) or (base, at) in seen:
            return None
        seen.add((base, at))
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                target, target_base = schema.resolve(ref, base)
            except (Unresolvable, Unretrievable):
                where = at or "/"
                if base != schema.uri:
                    where += " of " + Path(unquote(urlparse(base).path)).name
                return f"has a $ref '{ref}' at {where} that cannot be resolved"
            fragment = ref.partition("#")[2]
            if (found := walk(target, target_base, fragment)) is not None:
                return found
        for key, child in node.items():
            if key in _DATA_KEYWORDS:
                continue
            if (found := walk(child, base, at + "/" + pointers.escape(str(key)))) is not None:
                return found
        return None

    return walk(schema.contents, schema.uri, "")


def _annotation_problems(schema: Schema, shown: str) -> list[Problem]:
    """Problems with the schema's `reduce` annotations, located in the schema file."""
    from pipeline.documents.reduce import check_annotations

    return [Problem(shown, pointer, message) for pointer, message in check_annotations(schema)]


def _load_schema(path: Path, shown: str) -> Schema | str:
    """The schema at `path`, or why it is unusable."""
    try:
        schema = load_schema(path)
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    except yaml.YAMLError as error:
        return f"is not valid YAML ({_yaml_error(error)})"
    except SchemaError as error:
        where = pointers.join(*error.absolute_path)
        return f"is not a valid 2020-12 JSON Schema at {where or '/'}: {error.message}"
    unresolved = _unresolved_ref(schema)
    return schema if unresolved is None else unresolved


# --- The loader --------------------------------------------------------------------------------


@dataclass
class _Loader:
    env: Mapping[str, str]
    problems: list[Problem] = field(default_factory=list)
    entries: dict[str, dict[str, _Entry]] = field(
        default_factory=lambda: {section: {} for section in _SECTIONS}
    )
    schemas: dict[Path, Schema | str] = field(default_factory=dict)
    shuffles: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    collection_schemas: dict[str, Schema] = field(default_factory=dict)

    def read(self, path: Path) -> None:
        """Parse one file, interpolate it, and file its entries by section."""
        file = _File(path, self.problems)
        try:
            document = yaml.load(path.read_bytes(), Loader=_UniqueKeyLoader)
        except OSError as error:
            file.report("", f"cannot read the catalog file ({error.strerror or error})")
            return
        except yaml.YAMLError as error:
            file.report("", f"invalid YAML at {_yaml_error(error)}")
            return
        if document is None:
            return  # an empty file declares nothing
        top = _Place(file, "", "")
        if _mapping(top, document, _TOP_KEYS, "the top level of a catalog file") is None:
            return
        for section, kind in _SECTIONS.items():
            if section not in document or document[section] is None:
                continue
            blocks = _interpolate(document[section], top.at(section), self.env)
            if blocks is _BROKEN:
                continue
            if not isinstance(blocks, dict):
                top.at(section).report(f"'{section}' must be a mapping of name to {kind}")
                continue
            for name, body in blocks.items():
                place = _Place(file, pointers.join(section, str(name)), f"{kind} '{name}'")
                self._add(section, _Entry(place, str(name), body))

    def _add(self, section: str, entry: _Entry) -> None:
        first = self.entries[section].get(entry.name)
        if first is None:
            self.entries[section][entry.name] = entry
        elif first.place.file.path == entry.place.file.path:
            entry.place.report("declared twice in this file")
        else:
            entry.place.report(
                f"declared in both {first.place.file.path} and {entry.place.file.path}"
            )

    def schema(self, place: _Place, ref: Any) -> Schema | None:
        """Load the schema `ref` (relative to the catalog file), reporting at `place`."""
        text = _string(place, ref, "schema")
        if text is None:
            return None
        path = place.file.path.parent / text
        resolved = path.resolve()
        if resolved not in self.schemas:
            shown = os.path.normpath(path)
            loaded = self.schemas[resolved] = _load_schema(path, shown)
            if isinstance(loaded, Schema):
                self.problems += _annotation_problems(loaded, shown)
        loaded = self.schemas[resolved]
        if isinstance(loaded, str):
            place.report(f"schema '{text}' {loaded}")
            return None
        return loaded

    # -- collections --

    def collection(self, entry: _Entry, derived: bool) -> CollectionSpec | None:
        place = entry.place
        if not _COLLECTION_NAME.fullmatch(entry.name):
            place.report(
                "invalid name: expected lowercase parts of [a-z0-9_.-] separated by '/',"
                " like 'segment/events'"
            )
        body = _mapping(place, entry.body, _COLLECTION_KEYS, "a collection")
        if body is None:
            return None
        schema = self.schema(place.at("schema"), _required(place, body, "schema"))
        if schema is not None:
            self.collection_schemas[entry.name] = schema
        key = _pointers(place.at("key"), _required(place, body, "key"), "key", schema, "schema")
        partitions = _integer(place.at("partitions"), body.get("partitions", 1), "partitions")
        dedup: float | None = None
        if "dedup" in body:
            if derived:
                place.at("dedup").report(
                    "dedup is only allowed on captured collections, and this one is derived"
                )
            elif (dedup := _duration(place.at("dedup"), body["dedup"], "dedup")) is None:
                return None
        if schema is None or key is None or partitions is None:
            return None
        return CollectionSpec(entry.name, schema, key, partitions, dedup)

    # -- derivations --

    def derivation(
        self, entry: _Entry, collections: Mapping[str, CollectionSpec | None]
    ) -> DerivationSpec | None:
        place, name = entry.place, entry.name
        if name not in collections:
            place.report(
                f"no collection '{name}' is declared to publish into{_suggest(name, collections)}"
            )
        body = _mapping(place, entry.body, _DERIVATION_KEYS, "a derivation")
        if body is None:
            return None
        source = _string(place.at("source"), _required(place, body, "source"), "source")
        source_schema: Schema | None = None
        if source is not None and source not in collections:
            place.at("source").report(
                f"source '{source}' is not a declared collection{_suggest(source, collections)}"
            )
            source = None
        elif source == name:
            place.at("source").report(
                "source must be another collection, not the derivation itself"
            )
            source = None
        elif source is not None:
            # The source's schema serves even when its own block has other problems.
            source_schema = self.collection_schemas.get(source)
        where = f"schema of source '{source}'"
        shuffle = _pointers(
            place.at("shuffle"), _required(place, body, "shuffle"), "shuffle", source_schema, where
        )
        if source is not None and shuffle is not None:
            self.shuffles.append((name, source, shuffle))
        register = self.register(place.at("register"), body, shuffle, source_schema, where)
        transform = self.transform(place, body, has_register="register" in body)
        if source is None or shuffle is None or transform is None:
            return None
        if "register" in body and register is None:
            return None
        return DerivationSpec(name, source, shuffle, register, transform)

    def register(
        self,
        place: _Place,
        body: Mapping[str, Any],
        shuffle: tuple[str, ...] | None,
        source_schema: Schema | None,
        where: str,
    ) -> RegisterSpec | None:
        if "register" not in body:
            return None
        register = _mapping(place, body["register"], _REGISTER_KEYS, "register")
        if register is None:
            return None
        schema = self.schema(place.at("schema"), _required(place, register, "schema"))
        key = _pointers(
            place.at("key"), _required(place, register, "key"), "register key", source_schema, where
        )
        if key is not None and shuffle is not None:
            for pointer in shuffle:
                if pointer not in key:
                    place.at("key").report(
                        f"register key {_listing(key)} must include shuffle pointer '{pointer}'"
                        " (a register must not span partitions)"
                    )
                    key = None
                    break
        return None if schema is None or key is None else RegisterSpec(schema, key)

    def transform(self, place: _Place, body: Mapping[str, Any], has_register: bool) -> str | None:
        at = place.at("transform")
        text = _string(at, _required(place, body, "transform"), "transform")
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
                    + _suggest(part, names)
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

    def check_shuffles(self) -> None:
        """Every derivation of one source shuffles it the same way: one shuffle per source."""
        first: dict[str, tuple[str, tuple[str, ...]]] = {}
        for name, source, shuffle in self.shuffles:
            reference, expected = first.setdefault(source, (name, shuffle))
            if shuffle != expected:
                self.entries["derivations"][name].place.at("shuffle").report(
                    f"shuffle {_listing(shuffle)} differs from {_listing(expected)}"
                    f" of derivation '{reference}', which reads the same source '{source}'"
                    " (one shuffle per source)"
                )

    # -- materializations --

    def materialization(
        self, entry: _Entry, collections: Mapping[str, Any]
    ) -> MaterializationSpec | None:
        place = entry.place
        body = _mapping(place, entry.body, _MATERIALIZATION_KEYS, "a materialization")
        if body is None:
            return None
        kinds = [k for k in ("postgres", "webhook") if k in body]
        kind = kinds[0] if len(kinds) == 1 else None
        config: dict[str, str] | None = None
        if kind is None:
            place.report(
                "needs exactly one endpoint, 'postgres' or 'webhook', "
                + ("not both" if kinds else "found none")
            )
        elif kind == "postgres":
            config = self.postgres(place.at(kind), body[kind])
        else:
            config = self.webhook(place.at(kind), body[kind])
        bindings = self.bindings(place, _required(place, body, "bindings"), kind, collections)
        if kind is None or config is None or bindings is None:
            return None
        enabled = config["dsn" if kind == "postgres" else "url"] != ""
        return MaterializationSpec(entry.name, kind, MappingProxyType(config), bindings, enabled)

    def postgres(self, place: _Place, value: Any) -> dict[str, str] | None:
        body = _mapping(place, value, _POSTGRES_KEYS, "postgres")
        if body is None:
            return None
        dsn = _string(place.at("dsn"), _required(place, body, "dsn"), "postgres dsn")
        schema = _identifier(place.at("schema"), body.get("schema", "public"), "postgres schema")
        return None if dsn is None or schema is None else {"dsn": dsn, "schema": schema}

    def webhook(self, place: _Place, value: Any) -> dict[str, str] | None:
        body = _mapping(place, value, _WEBHOOK_KEYS, "webhook")
        if body is None:
            return None
        ok = True
        config: dict[str, str] = {}
        url = _string(place.at("url"), _required(place, body, "url"), "webhook url")
        if url and not url.startswith(("http://", "https://")):
            place.at("url").report(f"webhook url '{url}' must start with http:// or https://")
            ok = False
        secret = _string(place.at("secret"), body.get("secret", ""), "webhook secret")
        if url is None or secret is None:
            ok = False
        else:
            config.update(url=url, secret=secret)
        for name in ("max_batch", "max_attempts"):
            if name in body:
                number = _integer(place.at(name), body[name], name)
                ok = ok and number is not None
                config[name] = str(number)
        if "timeout" in body:
            seconds = _duration(place.at("timeout"), body["timeout"], "timeout")
            ok = ok and seconds is not None
            config["timeout"] = str(seconds)
        return config if ok else None

    def bindings(
        self, place: _Place, value: Any, kind: str | None, collections: Mapping[str, Any]
    ) -> tuple[BindingSpec, ...] | None:
        at = place.at("bindings")
        if value is _BROKEN:
            return None
        if not isinstance(value, list) or not value:
            at.report(f"bindings must be a non-empty list of {{source, table}}, not {_kind(value)}")
            return None
        result: list[BindingSpec] = []
        for i, item in enumerate(value):
            binding = _mapping(at.at(i), item, _BINDING_KEYS, "a binding")
            if binding is None:
                continue
            source = _string(at.at(i, "source"), _required(at.at(i), binding, "source"), "source")
            if source is not None and source not in collections:
                at.at(i, "source").report(
                    f"source '{source}' is not a declared collection{_suggest(source, collections)}"
                )
                source = None
            table: str | None = None
            if kind == "postgres":
                table = _identifier(
                    at.at(i, "table"), _required(at.at(i), binding, "table"), "table"
                )
                if table is None:
                    continue
            elif kind == "webhook" and "table" in binding:
                at.at(i, "table").report("a webhook binding has no 'table'")
                continue
            if source is not None:
                result.append(BindingSpec(source, table))
        return tuple(result) if len(result) == len(value) else None

    # -- everything --

    def build(self) -> Catalog:
        derived = set(self.entries["derivations"])
        checked = {
            name: self.collection(entry, name in derived)
            for name, entry in self.entries["collections"].items()
        }
        # Valid or not, a declared collection may be referenced: only its own block is reported.
        derivations = {
            name: self.derivation(entry, checked)
            for name, entry in self.entries["derivations"].items()
        }
        valid_derivations = {k: v for k, v in derivations.items() if v is not None}
        self.check_shuffles()
        materializations = {
            name: self.materialization(entry, checked)
            for name, entry in self.entries["materializations"].items()
        }
        return Catalog(
            MappingProxyType({k: v for k, v in checked.items() if v is not None}),
            MappingProxyType(valid_derivations),
            MappingProxyType({k: v for k, v in materializations.items() if v is not None}),
        )


def _catalog_files(paths: Sequence[Path] | Path, problems: list[Problem]) -> list[Path]:
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


def load_catalog(paths: Sequence[Path] | Path, env: Mapping[str, str] | None = None) -> Catalog:
    """Load and check catalog files (or every *.yaml / *.yml in a directory).

    `env` (default: os.environ) feeds `${NAME}` and `${NAME:-default}`. Raises CatalogError
    listing every problem found.
    """
    loader = _Loader(os.environ if env is None else env)
    files = _catalog_files(paths, loader.problems)
    for path in files:
        loader.read(path)
    catalog = loader.build()
    if loader.problems:
        # Grouped by catalog file in reading order, then schema files; within one, as found.
        order = {str(path): i for i, path in enumerate(files)}
        problems = sorted(loader.problems, key=lambda problem: order.get(problem.file, len(order)))
        raise CatalogError(problems)
    return catalog
