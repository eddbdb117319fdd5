"""sync.worker.off_loop: long calls run in one worker thread, the loop keeps running, and a
cancelled caller still waits for its call to end (a merge and the cursor recording it must
land together before the synchronizer's lock is released)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from conduit_sidecar.sync.worker import off_loop


def slow(seconds: float, done: list[str]) -> str:
    time.sleep(seconds)
    done.append(threading.current_thread().name)
    return "result"


async def test_the_call_runs_in_the_worker_and_the_loop_keeps_running() -> None:
    done: list[str] = []
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0.005)

    ticker = asyncio.create_task(tick())
    assert await off_loop(slow, 0.2, done) == "result"
    await ticker
    assert done[0].startswith("conduit-sync") and ticks >= 10


async def test_a_cancelled_caller_waits_for_the_call_to_finish() -> None:
    done: list[str] = []
    task = asyncio.create_task(off_loop(slow, 0.3, done))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done, "CancelledError propagated while the call was still running"


async def test_errors_of_the_call_reach_the_caller() -> None:
    def fail() -> None:
        raise ValueError("delta: bad")

    with pytest.raises(ValueError, match="delta: bad"):
        await off_loop(fail)
