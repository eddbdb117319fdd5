"""feedback/in_flight.py: work a cancelled caller leaves running finishes, and settle waits."""

from __future__ import annotations

import asyncio
import gc

from conduit_sidecar.feedback.in_flight import InFlight


async def test_a_cancelled_caller_does_not_stop_the_work() -> None:
    in_flight = InFlight()
    steps: list[str] = []
    release = asyncio.Event()
    started = asyncio.Event()

    async def write_then_apply() -> str:
        steps.append("write")
        started.set()
        await release.wait()  # the store's answer, after the caller gave up
        steps.append("apply")
        return "done"

    caller = asyncio.ensure_future(in_flight.inseparably(write_then_apply()))
    await started.wait()
    caller.cancel()
    await asyncio.gather(caller, return_exceptions=True)
    assert caller.cancelled() and steps == ["write"]
    assert await in_flight.settle(0.01) == 1  # still running
    release.set()
    assert await in_flight.settle(1.0) == 0
    assert steps == ["write", "apply"]


async def test_work_that_never_suspends_runs_in_the_callers_task() -> None:
    in_flight = InFlight()

    async def work() -> asyncio.Task[object] | None:
        return asyncio.current_task()

    here = asyncio.current_task()
    assert await in_flight.inseparably(work(), suspends=False) is here
    assert await in_flight.inseparably(work()) is not here
    assert await in_flight.settle(0.0) == 0


async def test_a_failed_background_task_is_not_reported_as_never_retrieved() -> None:
    """Nobody awaits a background task (a cancelled caller's write, a pass of
    resolve_in_doubt): its failure must not surface as "Task exception was never
    retrieved" from the event loop when the task is collected."""
    in_flight = InFlight()
    reported: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:

        async def fails() -> None:
            raise RuntimeError("store down")

        in_flight.background(fails())
        assert await in_flight.settle(1.0) == 0
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert reported == []
