"""Materializations run on a thread and event loop of their own, stopped with the worker."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pipeline.runtime.materialize import run_in_thread


class Run:
    """Only what `run_in_thread` uses of a Materializer: `spec.name`, `home` and `run`."""

    def __init__(self, name: str, fail: Exception | None = None) -> None:
        self.spec = SimpleNamespace(name=name)
        self.home: asyncio.AbstractEventLoop | None = None
        self.fail = fail
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopped = False

    async def run(self, stopping: asyncio.Event) -> None:
        self.thread = threading.current_thread()
        self.loop = asyncio.get_running_loop()
        if self.fail is not None:
            raise self.fail
        await stopping.wait()
        await asyncio.sleep(0.05)  # a last flush
        self.stopped = True


def start(runs: list[Run], stopping: asyncio.Event) -> asyncio.Task[None]:
    return asyncio.create_task(run_in_thread(cast(Any, runs), stopping))


async def test_runs_off_the_callers_thread_and_loop_until_stopping() -> None:
    runs = [Run("postgres"), Run("webhook")]
    stopping = asyncio.Event()
    task = start(runs, stopping)
    await asyncio.sleep(0.2)
    assert not task.done()
    here = asyncio.get_running_loop()
    for run in runs:
        assert run.thread is not None and run.thread is not threading.current_thread()
        assert run.loop is not None and run.loop is not here
        assert run.home is here  # where the worker's producer lives, for dead letters
    assert runs[0].loop is runs[1].loop
    stopping.set()
    await asyncio.wait_for(task, 5)
    assert all(run.stopped for run in runs)  # each finished its last flush first


async def test_a_failure_stops_the_others_and_is_raised() -> None:
    runs = [Run("postgres", fail=RuntimeError("table gone")), Run("webhook")]
    task = start(runs, asyncio.Event())
    with pytest.raises(RuntimeError, match="table gone"):
        await asyncio.wait_for(task, 5)
    assert runs[1].stopped


async def test_cancelled_caller_still_lets_them_finish() -> None:
    runs = [Run("postgres")]
    task = start(runs, asyncio.Event())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert runs[0].stopped


async def test_cancelled_at_once_still_stops_them() -> None:
    runs = [Run("postgres"), Run("webhook")]
    task = start(runs, asyncio.Event())
    await asyncio.sleep(0)  # started, but their thread may not be running yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert all(run.stopped for run in runs)


async def test_nothing_to_run_returns_at_once() -> None:
    await asyncio.wait_for(run_in_thread([], asyncio.Event()), 1)


class Stuck(Run):
    """A materialization whose last write hangs (a lock in Postgres, an endpoint that never
    answers)."""

    async def run(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.stopped = True
            raise


async def test_one_still_busy_after_the_grace_is_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("pipeline.runtime.materialize.STOP_GRACE", 0.2)
    runs = [Stuck("postgres"), Run("webhook")]
    stopping = asyncio.Event()
    task = start(runs, stopping)
    await asyncio.sleep(0.1)
    stopping.set()
    await asyncio.wait_for(task, 5)  # returns: a late stop is not a failure
    assert all(run.stopped for run in runs)
