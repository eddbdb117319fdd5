"""Store writes that outlive a cancelled caller.

A cancelled caller (a gRPC deadline) must not stop between a store write and its policy
update: the write may commit anyway (a SQLite batch, a Redis script already sent), and its
delta would then never reach the policy - a retry is a duplicate, and the query's later
deltas assume the lost one was applied. So the pair runs in a shielded task that finishes on
its own; `settle` waits for such tasks at shutdown, before the last policy delta is published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class InFlight:
    """The tasks a caller's cancellation leaves running (and other background work)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    async def inseparably(self, work: Coroutine[Any, Any, T], *, suspends: bool = True) -> T:
        """Runs `work` so that the caller's cancellation cannot interrupt it. `suspends`
        False (a store whose operations never suspend, the in-memory one): nothing can fall
        between its steps, so it runs in the caller's task, without a new one."""
        if not suspends:
            return await work
        return await asyncio.shield(self.background(work))

    def background(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A task `settle` waits for, that nobody needs to await."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def settle(self, timeout_s: float) -> int:
        """Waits up to `timeout_s` for the tasks still running; returns how many remain."""
        if not self._tasks:
            return 0
        _, late = await asyncio.wait(list(self._tasks), timeout=timeout_s)
        return len(late)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # mark it read: a cancelled caller no longer awaits it
