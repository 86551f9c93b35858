"""Reduce documents by the `reduce: {strategy: ...}` annotations of their JSON Schema, as Flow does.

`compile_reducer` walks the schema once and builds nested closures, one small function per
strategy (picked from `compile.BUILDERS`); reducing then does no schema lookups. A location
without an annotation is `lastWriteWins`. Every strategy is associative, so documents may be
combined in any grouping (per event, per batch, per sink flush) with the same result.

Inside a reduction a failure travels as `failure.Failure`, collecting the document path on the
way out; the root reducer turns it into one `ReduceError` with the full pointer.

- `compile.py`: the schema walk, the strategy table, `compile_reducer` and `reduce_all`
- `strategies.py`: the scalar strategies (lastWriteWins, firstWriteWins, minimize, maximize,
  sum, append)
- `merge.py`, `sets.py`: the `merge` and `set` strategies, built per location
- `order.py`: the total order of JSON values (array keys, set members)
- `instants.py`: exact RFC 3339 instants for `format: date-time`
- `annotations.py`: what an annotation may say, and `check_annotations` for the catalog
- `failure.py`: the failure that carries a path out of a reduction
"""

from pipeline.documents.reduce.annotations import STRATEGIES, check_annotations
from pipeline.documents.reduce.compile import Reducer, compile_reducer, reduce_all

__all__ = ["STRATEGIES", "Reducer", "check_annotations", "compile_reducer", "reduce_all"]
