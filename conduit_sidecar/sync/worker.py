"""The synchronizer's worker thread: long core calls (merges, folds, snapshot loads) off the
event loop.

At a large feature dimension one merged delta is tens of milliseconds of exact
re-factorisation (O(d^3) per model). The core releases the GIL and the policy's lock for
that work, but the thread that calls it still waits, so on the event loop every Route would
wait too. One persistent thread does all of it, in submission order: a single extra malloc
arena that later folds reuse (a fresh thread per fold showed up as a resident-memory peak
at every compaction in the soak), and two syncs of one process never merge at once.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def _worker() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conduit-sync")
        return _executor


async def off_loop(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` in the worker thread; the event loop keeps running meanwhile.

    A cancelled caller still waits for the call to end before CancelledError propagates:
    `fn` changes shared state (a merge into the router's policy and the cursor that says it
    was merged) and the caller's lock must not be released while it is half done.
    """
    future = asyncio.get_running_loop().run_in_executor(_worker(), functools.partial(fn, *args))
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(future)
            break
        except asyncio.CancelledError:
            if future.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result
