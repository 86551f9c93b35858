"""`python -m bench.harness.timed_worker worker`: `segflow worker`, timing its derive loop.

The same worker (`pipeline.tools.cli`), with `Deriver._derive`, `Deriver._fire` and
`RecordsTask.fire` wrapped (in this process only; the runtime's code is unchanged) to append
one JSON line per derive batch and per timer pass to the file `BENCH_TIMINGS`:
`{"k": "derive"|"fire", "at": wall-clock start (s), "s": wall seconds, "n": input records or
timers fired, "compute": seconds in RecordsTask.fire (passes only)}`. Lines are buffered in
memory and written every second and at exit, so timing costs the loop next to nothing.

`BENCH_TIMERS_PER_PASS=N` (an experiment) fires at most N records per partition per pass
instead of `TIMERS_PER_PASS`.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from typing import Any

import orjson

from pipeline.runtime import derive, groups
from pipeline.runtime.profiles import RecordsTask
from pipeline.tools import cli

_lines: list[bytes] = []
_last_write = time.monotonic()
_path = os.environ.get("BENCH_TIMINGS")
_pass: dict[str, float] = {"compute": 0.0, "fired": 0}


def _note(line: dict[str, Any]) -> None:
    global _last_write
    _lines.append(orjson.dumps(line) + b"\n")
    if time.monotonic() - _last_write > 1.0:
        _flush()


def _flush() -> None:
    global _last_write
    _last_write = time.monotonic()
    if _path and _lines:
        with open(_path, "ab") as out:
            out.write(b"".join(_lines))
        _lines.clear()


def _install() -> None:
    derive_batch = derive.Deriver._derive
    fire_pass = derive.Deriver._fire
    task_fire = RecordsTask.fire

    async def timed_derive(self: Any, producer: Any, batch: Any) -> None:
        at, started = time.time(), time.perf_counter()
        await derive_batch(self, producer, batch)
        n = sum(len(records) for records in batch.values())
        _note({"k": "derive", "at": at, "s": time.perf_counter() - started, "n": n})

    async def timed_fire(self: Any, producer: Any) -> None:
        _pass["compute"], _pass["fired"] = 0.0, 0
        at, started = time.time(), time.perf_counter()
        await fire_pass(self, producer)
        if _pass["fired"]:
            _note(
                {
                    "k": "fire",
                    "at": at,
                    "s": time.perf_counter() - started,
                    "n": _pass["fired"],
                    "compute": _pass["compute"],
                }
            )

    def timed_task_fire(self: Any, state: Any, now_ns: int) -> Any:
        started = time.perf_counter()
        result = task_fire(self, state, now_ns)
        _pass["compute"] += time.perf_counter() - started
        if result is not None:
            _pass["fired"] += result.timers_fired
        return result

    limit = os.environ.get("BENCH_TIMERS_PER_PASS")
    if limit:  # an experiment: passes of another size (Grouping.fire's default is bound early)
        grouping_fire = groups.Grouping.fire

        def fire_limited(self: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs["limit"] = int(limit)
            return grouping_fire(self, *args, **kwargs)

        groups.Grouping.fire = fire_limited  # type: ignore[method-assign]
        derive.TIMERS_PER_PASS = int(limit)  # type: ignore[attr-defined]

    derive.Deriver._derive = timed_derive  # type: ignore[method-assign]
    derive.Deriver._fire = timed_fire  # type: ignore[method-assign]
    RecordsTask.fire = timed_task_fire  # type: ignore[method-assign]
    atexit.register(_flush)


if __name__ == "__main__":
    _install()
    code = cli.main(sys.argv[1:])
    _flush()
    sys.exit(code)
