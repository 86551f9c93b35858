"""Destinations (SPEC 9): records in tracked groups kept in sync in another system.

The worker runs each enabled destination as a materialization (`materialization_of`): named
`destination.<name>`, kind 'destination', config the destination's, bound to the profiles'
records collection (`BindingSpec.records`) and, when the destination lists `events`, to the
forwarded collection (`pipeline.catalog.profiles.forwarded`). Its consumer is co-partitioned
(range assignment), so partition p of both topics belongs to one worker. What its endpoint
rejects for good goes to `segflow.destination.<name>.dead-letter` (`segflow dlq`).

What the sink reads:
- the records topic: key `["<record id>"]`, value the record's document, or None (a
  tombstone: the record was merged away);
- the forwarded topic: `{"r": record id, "event": product event, "document": the record's
  document right after the event}`, partitioned like the records.

**The sink contract** — one class per kind, built by `make` as

    Sink(destination: DestinationSpec, spec: MaterializationSpec,
         topics: Mapping[str, BindingSpec], *,
         dead_letter: Callable[[bytes, dict[str, str]], Awaitable[None]],
         settings_postgres: str | None, settings_schema: str)

`destination` is the block; `spec` and `topics` (source topic -> binding) as for every `Sink`;
`dead_letter` parks (payload, headers describing why) in the destination's dead-letter topic;
`settings_postgres` and `settings_schema` are Segflow's own database (`SEGFLOW_POSTGRES`, None
when unset, and `SEGFLOW_POSTGRES_SCHEMA`). The kind's class: `webhook.WebhookDestination`,
`postgres.PostgresDestination`.

Modules:
- `exports`: a record's view in a destination, the export that brings it up to date, ids.
- `pending`: one lane's work — newest-only slots, enriched events (held until their record
  is up to date), the checkpoint.
- `batches`: what one request carries and what its answer changes.
- `store`: what a destination acknowledged, its checkpoints and outbox, in Postgres.
- `delivery`: sending one request until answered (signing, retries, parking); figures.
- `webhook`: `WebhookDestination` — lanes, the outbox, the order of a request's steps.
- `postgres`: `PostgresDestination` — a table of another database.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from typing import cast

from materializations.base import Sink
from pipeline.catalog import BindingSpec, MaterializationSpec
from pipeline.catalog.profiles import forwarded
from pipeline.catalog.specs import DestinationSpec
from pipeline.errors import SegflowError

PREFIX = "destination."
KIND = "destination"
SINKS = {"webhook": "WebhookDestination", "postgres": "PostgresDestination"}
"""Destination kind -> its class, in `materializations.destinations.<kind>`."""


def materialization_name(destination: str) -> str:
    """The name a destination runs under as a materialization (metrics, dead letters, group)."""
    return PREFIX + destination


def materialization_of(destination: DestinationSpec, records: str) -> MaterializationSpec:
    """The materialization the worker runs `destination` as; `records` names the profiles'
    records collection."""
    bindings = [BindingSpec(records, None, records=True)]
    if destination.events:
        bindings.append(BindingSpec(forwarded(records), None))
    return MaterializationSpec(
        materialization_name(destination.name),
        KIND,
        destination.config,
        tuple(bindings),
        destination.enabled,
    )


def make(
    destination: DestinationSpec,
    spec: MaterializationSpec,
    topics: Mapping[str, BindingSpec],
    *,
    dead_letter: Callable[[bytes, dict[str, str]], Awaitable[None]],
    settings_postgres: str | None,
    settings_schema: str,
) -> Sink:
    """The sink of `destination`'s kind (the contract above)."""
    if destination.kind not in SINKS:
        raise SegflowError(
            f"destination '{destination.name}': unknown kind {destination.kind!r};"
            f" expected one of {sorted(SINKS)}"
        )
    module = importlib.import_module(f"{__name__}.{destination.kind}")
    cls = getattr(module, SINKS[destination.kind])
    sink = cls(
        destination,
        spec,
        topics,
        dead_letter=dead_letter,
        settings_postgres=settings_postgres,
        settings_schema=settings_schema,
    )
    return cast(Sink, sink)
