"""The Postgres materialization: one table per binding, upserted in batches with its checkpoint.

Each write is one transaction, sent in one round trip (psycopg's pipeline mode): per binding and
partition, one `insert ... select ... on conflict do update` whose rows Postgres computes from a
single JSON array parameter (the records' own text, joined, parsed once), then the checkpoint
moves forward. Python neither decodes the documents nor builds rows, and a write waits on the
network once however many tables and partitions it covers; that matters because the worker's
event loop is busy deriving between round trips. A failed write leaves nothing behind and is
simply called again. A partition whose checkpoint is already at or past the batch's end (a
replay after a crash, a zombie writer) is skipped, so a table never goes back in time.

A record no row can hold (Postgres raises a data error for it: SQLSTATE class 22, 23 or 54 —
a NUL character, a value out of range, an index entry too large) never blocks the others: the
write is done again in the same way, but each binding and partition inside a savepoint, halving
a part that fails until the offending records stand alone (k bad records among n cost
about 2k·log2(n) statements). Those are **parked** — produced to the materialization's
dead-letter topic with the error and their topic, partition, offset and key, and acknowledged
there *before* the transaction that moves the checkpoint past them commits — so nothing is lost
and everybody else's rows land. `segflow dlq replay` re-sends the current document of each
parked key.

The profile records collection (`profiles.records`, whatever its name) has a statement of its
own (`shapes.RECORDS`): writing an identified record deletes the `anon:` rows of the devices it
lists, in the same statement, and an `anon:` row is not written while another row lists its
device, so a merge is one transaction and a stale anonymous document read late from another
partition cannot bring a merged row back. In a table of whole documents (a collection without
its own shape) a tombstone deletes its key's row.

Writes commit with `synchronous_commit = off`: a commit Postgres loses in a crash takes its
checkpoint with it, so those records are simply written again from the broker; nothing is lost
or doubled.

Modules:
- `shapes`: how a collection's documents become rows — `Column`, `Shape`, `SHAPES`, `GENERIC` —
  and the create-table and upsert statements built from a shape.
- `parking`: what Postgres rejects for its data, a parked record, and the errors around parking.
- `sink`: `PostgresSink` — opening the tables, positions, the write with its checkpoint,
  isolating and parking rejected records.
- `queries`: `load_queries`, the named queries of `docs/queries.sql`.
"""

from materializations.postgres.parking import (
    DATA_ERRORS,
    DeadLetter,
    DocumentError,
    Parked,
    ParkingFailed,
)
from materializations.postgres.queries import load_queries
from materializations.postgres.shapes import GENERIC, SHAPES, Column, Shape
from materializations.postgres.sink import CHECKPOINTS, PostgresSink

__all__ = [
    "CHECKPOINTS",
    "DATA_ERRORS",
    "GENERIC",
    "SHAPES",
    "Column",
    "DeadLetter",
    "DocumentError",
    "Parked",
    "ParkingFailed",
    "PostgresSink",
    "Shape",
    "load_queries",
]
