"""Property types (SPEC 8.3) and how a raw JSON value becomes a property value, or is rejected.

`normalise(type, raw)` returns the value to store or an `Invalid` carrying the reason the record
shows in `invalid`, worded like `'abc' is not a float`. Stored values are plain JSON:

- `string`: a string, as given. An integer or float becomes its JSON text (a `userId` may be an
  integer, and `/userId` is a valid path); `true`/`false` likewise. At most 1,000 characters, no
  U+0000 and no lone surrogates (Postgres cannot store them).
- `integer`: a whole number in the signed 64-bit range (Postgres `bigint`, orjson). 3.0 and "3.0"
  are 3: JSON producers such as JavaScript cannot tell them apart; 3.5 is not an integer.
- `float`: a finite number; integers become floats, -0.0 becomes 0.0 (so min/max cannot depend on
  the order of equal values). NaN and infinities are rejected.
- Numbers in strings fit both: optional surrounding spaces, a sign, digits with an optional
  fraction and exponent ("12.5", " -3 ", "1e3", ".5"); not "1,000", "0x10", "NaN" or "inf".
- `boolean`: true/false, or the strings "true"/"false" in any case. Numbers are not booleans, and
  booleans are not numbers.
- `date`: an RFC 3339 date-time with an offset, kept as the text given and compared as an exact
  instant (see `instants`). A bare date ("2024-05-01") or an epoch number is rejected: the type is
  a point in time, and guessing a time zone would be wrong somewhere. Year 0000 and offsets
  beyond +-15:59 are rejected too, so analysts can cast every stored date to timestamptz.
- `email`: trimmed; `local@domain` with a dotted domain of letters, digits and hyphens (any
  script); the domain lower-cased, the local part kept as given (RFC 5321 lets it be case
  sensitive). A pragmatic check, not RFC 5322: quoted local parts are rejected.
- `url`: trimmed; `scheme://host...` with no spaces or control characters; scheme and host
  lower-cased (they are case-insensitive), the rest kept.
- `phoneNumber`: spaces, dashes, dots and parentheses removed, a leading international prefix `00`
  read as `+`; then it must be E.164: `+` and 8 to 15 digits, the first not 0. A number without a
  country code is rejected rather than guessed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from .instants import Instant, parse_instant

Value = str | int | float | bool
"""A stored property value (one element, for array properties)."""

TYPES = ("string", "integer", "float", "boolean", "date", "email", "url", "phoneNumber")
NUMBER_TYPES = frozenset({"integer", "float"})
TEXT_TYPES = frozenset({"string", "email", "url", "phoneNumber"})
MAX_TEXT = 1000
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_LABEL = re.compile(r"[^\W_](?:(?:[^\W_]|-)*[^\W_])?")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*", re.ASCII)
_PHONE_NOISE = str.maketrans("", "", " -.()")
_E164 = re.compile(r"\+[1-9][0-9]{7,14}", re.ASCII)
_LARGE_OFFSET = re.compile(r"[+-](1[6-9]|2\d):\d\d$")
_SHOWN = 60


@dataclass(frozen=True)
class Invalid:
    """A raw value that does not fit its property's type, and why."""

    reason: str


def normalise(kind: str, raw: Any) -> Value | Invalid:
    """`raw` (decoded JSON) as a value of type `kind`, or why it is not one."""
    return _NORMALISERS[kind](raw)


def normaliser(kind: str) -> Callable[[Any], Value | Invalid]:
    """`normalise` for one type, looked up once."""
    return _NORMALISERS[kind]


def article(kind: str) -> str:
    """'a float', 'an integer', 'a url': how messages name a type."""
    return f"an {kind}" if kind in ("integer", "email") else f"a {kind}"


def show(raw: Any) -> str:
    """A raw value as messages quote it: strings in single quotes, the rest as JSON; shortened."""
    if isinstance(raw, str):
        text = raw if len(raw) <= _SHOWN else raw[:_SHOWN] + "..."
        return f"'{text}'"
    if isinstance(raw, float) and not _finite(raw):
        return "NaN" if raw != raw else ("-Infinity" if raw < 0 else "Infinity")
    try:
        text = orjson.dumps(raw).decode()
    except TypeError:
        text = repr(raw)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _invalid(kind: str, raw: Any, why: str = "") -> Invalid:
    return Invalid(f"{show(raw)} is not {article(kind)}" + (f" ({why})" if why else ""))


def _text_problem(raw: str) -> str:
    """Why a string cannot be stored at all, or ''."""
    if len(raw) > MAX_TEXT:
        return f"{len(raw):,} characters, at most {MAX_TEXT:,}"
    if "\x00" in raw:
        return "contains U+0000"
    try:
        raw.encode()
    except UnicodeEncodeError:
        return "contains a lone surrogate"
    return ""


def _string(raw: Any) -> Value | Invalid:
    if isinstance(raw, str):
        problem = _text_problem(raw)
        return _invalid("string", raw, problem) if problem else raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)  # as JSON writes it, at any size (orjson stops at 64 bits)
    if isinstance(raw, bool) or (isinstance(raw, float) and _finite(raw)):
        return orjson.dumps(raw).decode()
    return _invalid("string", raw)


def _finite(number: float) -> bool:
    return number - number == 0.0


def _number_text(raw: str) -> Decimal | None:
    stripped = raw.strip()
    return Decimal(stripped) if _NUMBER_TEXT.fullmatch(stripped) else None


def _integer(raw: Any) -> Value | Invalid:
    if isinstance(raw, bool):
        return _invalid("integer", raw)
    if isinstance(raw, int):
        exact: Decimal | None = Decimal(raw)
    elif isinstance(raw, float):
        exact = Decimal(raw) if _finite(raw) else None
    elif isinstance(raw, str) and len(raw) <= MAX_TEXT:
        exact = _number_text(raw)
    else:
        exact = None
    if exact is None or exact != exact.to_integral_value():
        return _invalid("integer", raw)
    if not INT_MIN <= exact <= INT_MAX:
        return _invalid("integer", raw, "outside the 64-bit range")
    return int(exact)


def _float(raw: Any) -> Value | Invalid:
    if isinstance(raw, bool):
        return _invalid("float", raw)
    number: float | None = None
    try:
        if isinstance(raw, int | float):
            number = float(raw)
        elif isinstance(raw, str) and len(raw) <= MAX_TEXT and _NUMBER_TEXT.fullmatch(raw.strip()):
            number = float(raw.strip())
    except OverflowError:
        return _invalid("float", raw, "out of range")
    if number is None:
        return _invalid("float", raw)
    if not _finite(number):
        return _invalid("float", raw, "out of range" if isinstance(raw, str) else "")
    return number + 0.0


def _boolean(raw: Any) -> Value | Invalid:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return _invalid("boolean", raw)


def _date(raw: Any) -> Value | Invalid:
    if not isinstance(raw, str) or len(raw) > MAX_TEXT or parse_instant(raw) is None:
        return _invalid("date", raw, "expected RFC 3339 like 2024-05-01T10:00:00Z")
    if raw.startswith("0000") or _LARGE_OFFSET.search(raw):
        return _invalid("date", raw, "Postgres timestamptz takes years from 1, offsets to 15:59")
    return raw


def _email(raw: Any) -> Value | Invalid:
    if not isinstance(raw, str) or _text_problem(raw):
        return _invalid("email", raw)
    local, at, domain = raw.strip().rpartition("@")
    labels = domain.split(".")
    if (
        not at
        or not 1 <= len(local) <= 64
        or len(domain) > 253
        or any(ch.isspace() or ch in '@"' or not ch.isprintable() for ch in local)
        or len(labels) < 2
        or not all(len(label) <= 63 and _LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        return _invalid("email", raw)
    return f"{local}@{domain.lower()}"


def _url(raw: Any) -> Value | Invalid:
    if not isinstance(raw, str) or _text_problem(raw):
        return _invalid("url", raw)
    scheme, sep, rest = raw.strip().partition("://")
    authority, slash, tail = _split_authority(rest)
    userinfo, at, host = authority.rpartition("@")
    if (
        not sep
        or not _SCHEME.fullmatch(scheme)
        or not host
        or host.startswith(":")
        or any(ch.isspace() or not ch.isprintable() for ch in rest)
    ):
        return _invalid("url", raw, "expected scheme://host, like https://example.com/")
    return f"{scheme.lower()}://{userinfo}{at}{host.lower()}{slash}{tail}"


def _split_authority(rest: str) -> tuple[str, str, str]:
    """('user@host:port', the character that ends it, what follows)."""
    for index, ch in enumerate(rest):
        if ch in "/?#":
            return rest[:index], ch, rest[index + 1 :]
    return rest, "", ""


def _phone(raw: Any) -> Value | Invalid:
    if not isinstance(raw, str) or len(raw) > MAX_TEXT:
        return _invalid("phoneNumber", raw)
    number = raw.translate(_PHONE_NOISE)
    if number.startswith("00"):
        number = "+" + number[2:]
    if not _E164.fullmatch(number):
        return _invalid("phoneNumber", raw, "expected + and 8 to 15 digits, like +14155550123")
    return number


_NORMALISERS: dict[str, Callable[[Any], Value | Invalid]] = {
    "string": _string,
    "integer": _integer,
    "float": _float,
    "boolean": _boolean,
    "date": _date,
    "email": _email,
    "url": _url,
    "phoneNumber": _phone,
}


@functools.lru_cache(maxsize=8192)
def instant_of(value: Value) -> Instant:
    """The instant of a stored `date` value (already checked by `normalise`). Cached: group
    rules read the same few values of a record many times."""
    instant = parse_instant(str(value))
    if instant is None:
        raise ValueError(f"not an RFC 3339 date-time: {value!r}")
    return instant


def order_key(kind: str) -> Callable[[Value], Any]:
    """How values of `kind` order for min, max and distinct: dates by instant, then by text (two
    texts of one instant still order the same way every time); the rest as Python orders them."""
    if kind == "date":
        return lambda value: (instant_of(value), value)
    return lambda value: value


def identity_key(kind: str) -> Callable[[Value], Any]:
    """What makes two values of `kind` the same for eq, in and distinct: dates by instant."""
    if kind == "date":
        return instant_of
    return lambda value: value
