"""The runtime: a worker process and everything it runs.

- `settings`: `Settings.from_env()`, read once.
- `topics`: topic names, creation, consumers, commits, reading a partition to its true end.
- `batches`, `produce`: batched, acknowledged producing keyed by the shuffle key.
- `state`: a shuffle partition's RocksDB state, its changelog and the commit order.
- `task`: one source's derivations over a batch (dedup, transforms, reduce), no I/O.
- `worker`, `derive`: the worker and its derive loop (the partition owner).
- `materialize`: the materializations' consumers, flush pacing and commits, on their own thread.
- `metrics`: `/health` and `/metrics`, reading what the loops record.

Uses `pipeline.errors`, `pipeline.figures`, `pipeline.documents`, `pipeline.catalog`,
`derivations` (through the catalog) and `materializations`.
"""
