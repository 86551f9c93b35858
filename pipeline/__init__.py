"""Segflow's runtime, in packages that import downward only.

Each layer may use the ones listed before it (and the standard library), never one after it:

1. `pipeline.errors`, `pipeline.figures`: the error root; the counters and histograms that loops
   and sinks record (no I/O).
2. `pipeline.documents`: the JSON document model: pointers, schemas, validation, the compiled
   checker, the reducer. `derivations.profiles` (the pure logic of records: values, rules,
   aggregates, identity, the `profiles:` spec) sits here too, so the catalog checks with it.
3. `pipeline.catalog`: the YAML catalog read into frozen specs, with every problem located.
4. `derivations/` (pure transforms) and `materializations/` (sinks) sit here: the runtime calls
   them; they use layers 1-3 only.
5. `pipeline.runtime`: settings, topics, batching, producing, partition state, the derivation
   task, the worker with its derive loop, the materializations' runner, health and metrics.
6. `pipeline.producers`: how documents come in: the HTTP API and its keys, `segflow ingest`,
   `segflow generate`.
7. `pipeline.tools`: the commands: the CLI, `segflow dev`, `segflow test`, `read`, `dlq`, the
   embedded broker and Postgres.
"""
