"""The pure logic of the profile layer (SPEC section 8): values, rules, aggregates, the catalog.

What each module holds, in the order data flows through them:
- `instants`: RFC 3339 date-times as exact instants (no float seconds, no precision lost).
- `durations`: `30s` ... `1y`, and exact calendar arithmetic on instants.
- `values`: the property types and how a raw JSON value is normalised or rejected with a reason.
- `operators`: group rules and `where` conditions compiled once into predicates, and for rules
  relative to the clock, the next instant their outcome flips with no new event (for timers).
- `groups`: a group's rules combined (`match: all | any`), with its next flip.
- `aggregates`: `latest`, `count`, `sum`, ... as mergeable states, so an anonymous record merged
  into a person's record gives exactly the state built as if every event had gone to the person.
- `extract`: what one product event contributes to one property.
- `spec` (with `property_checks`, `model`, `wording`): the catalog's `profiles:` section parsed
  into the frozen dataclasses of `model`, every problem collected with its JSON pointer.

Everything here is pure: no I/O, no Kafka, no RocksDB, no clock (the current time is an argument).
State is plain JSON (dicts, lists, str, int, float, bool, None), so the runtime can keep it in
RocksDB and changelogs as it is; functions never modify their arguments and return new values
(which may share unchanged parts with them, so callers must not modify those either).

Imports: the standard library, orjson, and `pipeline.errors` for the error root; nothing else from
`pipeline`, whose modules are being reorganised.
"""
