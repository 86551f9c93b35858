"""What Postgres rejects for a row's data, a record parked for it, and the errors around parking.

Apart from the sink so the line between a bad record (parked, the others written) and a bad
connection or server (the write retried whole) is drawn in one place.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import psycopg
from aiokafka import ConsumerRecord

from pipeline.catalog import BindingSpec
from pipeline.errors import SegflowError

DeadLetter = Callable[[bytes, dict[str, str]], Awaitable[None]]

DATA_ERRORS = (
    psycopg.errors.DataError,  # class 22: a value the column's type cannot take
    psycopg.errors.IntegrityError,  # class 23
    psycopg.errors.ProgramLimitExceeded,  # class 54: e.g. an index entry too large
)
"""What Postgres raises about a row's data, as opposed to the connection or the server."""


@dataclass(frozen=True)
class Parked:
    """A record no row of its table can hold, and why."""

    binding: BindingSpec
    record: ConsumerRecord
    reason: str
    sqlstate: str


class Unreadable(Exception):
    """A record's key or value is not text Postgres can be given (absent, not UTF-8)."""


class ParkingFailed(SegflowError):
    """The dead-letter topic did not take a parked record; the write is tried again."""

    retriable = True


class DocumentError(SegflowError):
    """A record no row can hold, and no dead-letter topic to park it in. Not retriable."""

    retriable = False


async def park(
    dead_letter: DeadLetter | None,
    item: Parked,
    who: str,
    headers: dict[str, str],
) -> None:
    """Send `item`'s record to the dead-letter topic with `headers` (what parked it) and the
    reason and the record's coordinates; without a topic, raise DocumentError. `who` names the
    sink in the error raised when the topic does not take it (the write is then retried)."""
    if dead_letter is None:
        raise DocumentError(item.reason)
    record = item.record
    headers = {
        **headers,
        "collection": item.binding.source,
        "error": item.reason,
        "sqlstate": item.sqlstate,
        "topic": record.topic,
        "partition": str(record.partition),
        "offset": str(record.offset),
        "key": shown(record.key),
    }
    try:
        await dead_letter(record.value or b"", headers)
    except Exception as exc:  # whatever the producer raises: the write is retried
        raise ParkingFailed(f"{who}: cannot park a record ({exc!r})") from exc


def shown(key: bytes | None) -> str:
    """A record key for the dead-letter headers, which must be text: base64 if not UTF-8."""
    if key is None:
        return ""
    try:
        return key.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(key).decode()
