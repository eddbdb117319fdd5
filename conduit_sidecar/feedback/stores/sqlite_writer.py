"""Group commit for the SQLite store: one worker thread, one transaction per batch of writes.

Why: with `synchronous=FULL` every COMMIT is an fsync (hundreds of microseconds to a few
milliseconds); a decision per Route paying for its own would cost more than the whole gRPC
call. The worker instead takes every operation queued while it was busy (typically while the
previous transaction was committing) and runs them all in ONE `BEGIN IMMEDIATE` transaction,
each inside its own savepoint, then commits once. A failing operation is rolled back to its
savepoint, so it undoes only itself, exactly as its own transaction did before; the write lock
is held from BEGIN to COMMIT, so each operation is as atomic as before, against this process
and against other processes sharing the file. A waiting caller resumes only after the COMMIT
that contains its operation: what a returned call wrote is as durable as it was with one
transaction per call; only the number of fsyncs changes. If the COMMIT fails, nothing of the
batch was stored and every waiting caller gets `Unavailable`.

Buffered operations (`post`) wake nobody: their caller returned once they were queued. The
worker lets them wait up to `flush_interval_s` for company before committing, unless a waiting
operation arrives, which flushes the whole queue at once. Consecutive buffered items of the
same kind run as ONE call (e.g. one `executemany`) in one savepoint: per statement, sqlite3
releases and retakes the GIL, which the event loop thread contends for. The queue is FIFO and
reads go through it too, so a read queued after a buffered write sees it (read-your-writes).
A buffered operation that fails is logged and counted in `lost`; while the store is failing
(and before its first successful commit) `post` refuses, so callers wait and see the error.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from conduit_sidecar.errors import Unavailable

T = TypeVar("T")
_log = logging.getLogger(__name__)

# At most one warning per this many seconds about buffered writes that were lost.
LOST_WARNING_INTERVAL_S = 30.0

# Outcome of one operation: (pending, succeeded, value or exception).
_Outcome = tuple["_Pending", bool, Any]


@dataclass(slots=True)
class _Pending:
    fn: Callable[[sqlite3.Connection], Any] | None  # None for a buffered (posted) item
    write: bool
    loop: asyncio.AbstractEventLoop | None  # None (and no future) for a buffered item
    future: asyncio.Future[Any] | None
    queued_at: float  # time.monotonic()
    many: Callable[[sqlite3.Connection, list[Any]], None] | None = None  # writes posted items
    item: Any = None


class _BatchAborted(Exception):
    """SQLite rolled the whole transaction back under an operation (I/O error, disk full)."""


def _resolve(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in items:
        if future.done():  # the caller was cancelled (deadline): the result has no reader
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class GroupCommitWriter:
    """Runs functions of a connection on one worker thread; writes are group committed."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        path: str,
        *,
        flush_interval_s: float,
        max_batch: int = 256,
        max_buffered: int = 10_000,
    ) -> None:
        self._connect = connect
        self.path = path
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch  # bounds how long one transaction holds the write lock
        self.max_buffered = max_buffered  # beyond this, buffered callers wait (backpressure)
        # Instrumented counters (read by tests and diagnostics; written by the worker only).
        self.commits = 0  # COMMITs issued: one per batch that contained a write
        self.operations = 0  # operations executed
        self.lost = 0  # buffered operations that failed after their caller returned
        self._lost_logged = 0  # `lost` as of the last warning
        self._lost_warned_at = -LOST_WARNING_INTERVAL_S  # monotonic time of that warning
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conduit-sqlite")
        self._cond = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._waiters = 0  # queued operations whose caller awaits them
        self._buffered = 0  # queued operations whose caller does not
        self._scheduled = False  # a drain job is queued or running on the executor
        self._closing = False
        self._healthy = False  # True after a committed write, False after any failed batch
        self._conn: sqlite3.Connection | None = None

    def unavailable(self, reason: object) -> Unavailable:
        return Unavailable(f"SQLite feedback store unreachable at {self.path!r}: {reason}")

    # Callers (event loop threads).

    async def call(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run `fn` on the worker; for a write, return only after its COMMIT."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._submit(_Pending(fn, write, loop, future, time.monotonic()))
        return await future

    def post(self, many: Callable[[sqlite3.Connection, list[Any]], None], item: object) -> bool:
        """Queue `item` to be written by `many(conn, [item, ...])` (with the items posted
        next to it) without waiting; False if the caller must wait with `call` instead (the
        store is failing or not yet proven, or too much is already queued)."""
        with self._cond:
            if not self._healthy or self._buffered >= self.max_buffered:
                return False
            pending = _Pending(None, True, None, None, time.monotonic(), many, item)
            self._submit_locked(pending)
        return True

    async def close(self) -> None:
        """Flush everything queued (one last commit), then close the connection."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()  # a lingering drain flushes now
        # The executor is FIFO with one thread: this runs after every queued drain.
        await asyncio.get_running_loop().run_in_executor(self._executor, self._shut)
        self._executor.shutdown(wait=True)

    def _submit(self, pending: _Pending) -> None:
        with self._cond:
            self._submit_locked(pending)

    def _submit_locked(self, pending: _Pending) -> None:
        if self._closing:
            raise self.unavailable("closed")
        self._queue.append(pending)
        if pending.future is None:
            self._buffered += 1
        else:
            self._waiters += 1
        if not self._scheduled:
            try:
                self._executor.submit(self._drain)
            except RuntimeError as exc:  # the interpreter is shutting down
                self._queue.pop()
                if pending.future is None:
                    self._buffered -= 1
                else:
                    self._waiters -= 1
                raise self.unavailable(exc) from exc
            self._scheduled = True
        elif pending.future is not None or len(self._queue) >= self.max_batch:
            self._cond.notify()  # end a linger: someone waits, or the batch is full

    # The worker thread.

    def _drain(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    # Cleared under the lock that guards the queue: a submitter either sees
                    # this drain still scheduled (and is taken by the loop) or schedules one.
                    self._scheduled = False
                    return
                self._linger()
                count = min(len(self._queue), self.max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
                waiting = sum(1 for p in batch if p.future is not None)
                self._waiters -= waiting
                self._buffered -= count - waiting
            try:
                self._execute(batch)
            except Exception:  # keep serving the queue whatever happened
                _log.exception("SQLite writer: unexpected error while delivering a batch")

    def _linger(self) -> None:
        # Only buffered writes queued: nobody is waiting, so let more of them share the
        # fsync, up to flush_interval_s after the oldest was queued.
        while self._queue and not self._closing and self._waiters == 0:
            if len(self._queue) >= self.max_batch:
                return
            remaining = self._queue[0].queued_at + self.flush_interval_s - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _execute(self, batch: list[_Pending]) -> None:
        outcomes: list[_Outcome] = []
        writes = any(p.write for p in batch)
        conn: sqlite3.Connection | None = None
        try:
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            if writes:
                conn.execute("BEGIN IMMEDIATE")
            start = 0
            while start < len(batch):
                many = batch[start].many
                end = start + 1
                if many is None:
                    outcomes.append(self._one(conn, batch[start], writes))
                else:  # bound methods compare equal when they are the same method
                    while end < len(batch) and batch[end].many == many:
                        end += 1
                    outcomes += self._many(conn, many, batch[start:end])
                start = end
            if writes:
                conn.execute("COMMIT")
                self.commits += 1
        except Exception as exc:  # every failure must reach the callers
            reason = exc.__cause__ if isinstance(exc, _BatchAborted) else exc
            if conn is not None and conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite already rolled back; the next batch starts afresh
            with self._cond:
                self._healthy = False
            # Nothing of this batch was committed: every caller learns it failed.
            outcomes = [(p, False, self.unavailable(reason)) for p in batch]
        else:
            if writes:
                with self._cond:
                    self._healthy = True
        self.operations += len(batch)
        self._deliver(outcomes)

    def _many(
        self,
        conn: sqlite3.Connection,
        many: Callable[[sqlite3.Connection, list[Any]], None],
        run: list[_Pending],
    ) -> list[_Outcome]:
        conn.execute("SAVEPOINT op")  # posted items are writes: always inside the transaction
        try:
            many(conn, [p.item for p in run])
        except Exception as exc:  # the items' callers have returned: logged and counted
            if not conn.in_transaction:
                raise _BatchAborted from exc
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            error = self.unavailable(exc) if isinstance(exc, sqlite3.Error) else exc
            return [(p, False, error) for p in run]
        conn.execute("RELEASE op")
        return [(p, True, None) for p in run]

    def _one(self, conn: sqlite3.Connection, pending: _Pending, in_tx: bool) -> _Outcome:
        assert pending.fn is not None  # only posted items have none, and they go to _many
        if in_tx:
            conn.execute("SAVEPOINT op")
        try:
            value = pending.fn(conn)
        except Exception as exc:  # the caller gets it
            if in_tx:
                if not conn.in_transaction:
                    raise _BatchAborted from exc
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            if isinstance(exc, sqlite3.Error):
                return pending, False, self.unavailable(exc)
            return pending, False, exc
        if in_tx:
            conn.execute("RELEASE op")
        return pending, True, value

    def _deliver(self, outcomes: list[_Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        failed: list[BaseException] = []
        for pending, ok, value in outcomes:
            if pending.future is None or pending.loop is None:
                if not ok:
                    failed.append(value)
                continue
            by_loop.setdefault(pending.loop, []).append((pending.future, ok, value))
        if failed:
            self.lost += len(failed)
            now = time.monotonic()
            # A failing disk fails every batch (one per flush interval): one line per
            # interval would flood the log, so the count since the last line is reported.
            if now - self._lost_warned_at >= LOST_WARNING_INTERVAL_S:
                _log.warning(
                    "%d buffered SQLite write(s) were not stored (their callers had returned) "
                    "since the last warning: %s",
                    self.lost - self._lost_logged,
                    failed[0],
                )
                self._lost_warned_at, self._lost_logged = now, self.lost
        # One wake-up per event loop per batch, not one per caller.
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, items)
            except RuntimeError:
                pass  # that loop is closed: nobody is left to read these results

    def _shut(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
