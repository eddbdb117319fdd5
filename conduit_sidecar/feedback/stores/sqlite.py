"""SQLite store: the embedded, durable default (no server, survives restarts).

stdlib `sqlite3` on one connection owned by a single worker thread, so the event loop never
blocks on disk and statements never interleave. Every operation is one `BEGIN IMMEDIATE`
transaction: it takes the write lock up front, so two processes sharing the file cannot both
pass the duplicate check either. WAL journal with `synchronous=FULL` (configurable): a
committed signal survives a crash of the process or the machine.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

from conduit_sidecar.errors import Unavailable
from conduit_sidecar.feedback.events import FeedbackEvent
from conduit_sidecar.feedback.observation import Accumulators, Contribution, accumulate
from conduit_sidecar.feedback.stores.base import (
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_TTL_SECONDS,
    Applied,
    FeedbackStore,
    Mark,
    PendingQuery,
    check_history_limit,
    check_ttl,
    decision_from_json,
    decision_to_json,
    event_from_json,
    event_to_json,
    mark_from_json,
    mark_to_json,
    not_found,
)
from conduit_sidecar.query import RoutingDecision

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    query_id TEXT PRIMARY KEY,
    decision TEXT NOT NULL,
    session_id TEXT,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    quality_num REAL NOT NULL DEFAULT 0,
    quality_den REAL NOT NULL DEFAULT 0,
    weight REAL NOT NULL DEFAULT 0,
    cost_usd REAL,
    latency_s REAL
);
CREATE INDEX IF NOT EXISTS queries_by_session ON queries (session_id)
    WHERE session_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS queries_by_expiry ON queries (expires_at);
CREATE TABLE IF NOT EXISTS marks (
    query_id TEXT NOT NULL,
    key TEXT NOT NULL,
    mark TEXT NOT NULL,
    PRIMARY KEY (query_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feedback_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS signal_counts (
    signal_type TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
"""

_COLUMNS = "decision, expires_at, quality_num, quality_den, weight, cost_usd, latency_s"
# Expired rows are invisible at once and deleted in batches every this many writes.
_PURGE_EVERY = 256


def _accumulators(row: sqlite3.Row | tuple[object, ...]) -> Accumulators:
    return Accumulators(
        quality_num=float(row[2]),  # type: ignore[arg-type]
        quality_den=float(row[3]),  # type: ignore[arg-type]
        weight=float(row[4]),  # type: ignore[arg-type]
        cost_usd=None if row[5] is None else float(row[5]),  # type: ignore[arg-type]
        latency_s=None if row[6] is None else float(row[6]),  # type: ignore[arg-type]
    )


class SqliteFeedbackStore(FeedbackStore):
    """Pending queries, marks, sessions and the feedback log in one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        self.path = str(path)
        self.ttl_seconds = check_ttl(ttl_seconds)
        self.history_limit = check_history_limit(history_limit)
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conduit-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._writes = 0
        self._closed = False

    # Thread plumbing: every function below named _sync_* runs on the worker thread.

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise Unavailable(f"SQLite feedback store unreachable at {self.path!r}: closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._conn is None:
                self._conn = self._open()
            return fn(self._conn)
        except sqlite3.Error as exc:
            raise Unavailable(f"SQLite feedback store unreachable at {self.path!r}: {exc}") from exc

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.executescript(_SCHEMA)
        return conn

    @staticmethod
    def _transaction(conn: sqlite3.Connection, fn: Callable[[], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _maybe_purge(self, conn: sqlite3.Connection, now: float) -> None:
        self._writes += 1
        if self._writes % _PURGE_EVERY:
            return
        conn.execute(
            "DELETE FROM marks WHERE query_id IN"
            " (SELECT query_id FROM queries WHERE expires_at <= ?)",
            (now,),
        )
        conn.execute("DELETE FROM queries WHERE expires_at <= ?", (now,))
        conn.execute(
            "DELETE FROM feedback_log WHERE seq <= (SELECT MAX(seq) FROM feedback_log) - ?",
            (self.history_limit,),
        )

    @staticmethod
    def _row(conn: sqlite3.Connection, query_id: str, now: float) -> tuple[object, ...] | None:
        row: tuple[object, ...] | None = conn.execute(
            f"SELECT {_COLUMNS} FROM queries WHERE query_id = ? AND expires_at > ?",
            (query_id, now),
        ).fetchone()
        return row

    @staticmethod
    def _insert(
        conn: sqlite3.Connection, decision: RoutingDecision, now: float, ttl_s: float
    ) -> None:
        # An expired row with the same id is replaced, and its marks with it.
        conn.execute("DELETE FROM marks WHERE query_id = ?", (decision.query_id,))
        conn.execute(
            "INSERT OR REPLACE INTO queries (query_id, decision, session_id, created_at,"
            " expires_at) VALUES (?, ?, ?, ?, ?)",
            (decision.query_id, decision_to_json(decision), decision.session_id, now, now + ttl_s),
        )

    # The interface.

    async def initialize(self) -> None:
        await self._run(lambda conn: None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)

    async def log_decision(self, decision: RoutingDecision, ttl_s: float) -> bool:
        ttl_s = check_ttl(ttl_s)

        def op(conn: sqlite3.Connection) -> bool:
            def body() -> bool:
                now = time.time()
                if self._row(conn, decision.query_id, now) is not None:
                    return False
                self._insert(conn, decision, now, ttl_s)
                self._maybe_purge(conn, now)
                return True

            return self._transaction(conn, body)

        return await self._run(op)

    async def apply(
        self,
        query_id: str,
        key: str,
        contribution: Contribution,
        mark: Mark,
        events: Sequence[FeedbackEvent] = (),
        *,
        create: RoutingDecision | None = None,
        ttl_s: float | None = None,
    ) -> Applied:
        if ttl_s is not None:
            ttl_s = check_ttl(ttl_s)
        log_rows = [(event_to_json(e),) for e in events]

        def body(conn: sqlite3.Connection) -> Applied:
            now = time.time()
            row = self._row(conn, query_id, now)
            if row is None:
                if create is None:
                    raise not_found(query_id)
                self._insert(conn, create, now, ttl_s or self.ttl_seconds)
                row = self._row(conn, query_id, now)
                assert row is not None  # just inserted inside this transaction
            decision = decision_from_json(str(row[0]))
            before = _accumulators(row)
            first = conn.execute(
                "SELECT mark FROM marks WHERE query_id = ? AND key = ?", (query_id, key)
            ).fetchone()
            if first is not None:
                return Applied(decision, before, before, True, mark_from_json(first[0]))
            after = accumulate(before, contribution)
            stored = Mark(mark.signal_type, mark.reward, mark.confidence, after)
            conn.execute(
                "UPDATE queries SET quality_num = ?, quality_den = ?, weight = ?, cost_usd = ?,"
                " latency_s = ?, expires_at = COALESCE(?, expires_at) WHERE query_id = ?",
                (
                    after.quality_num,
                    after.quality_den,
                    after.weight,
                    after.cost_usd,
                    after.latency_s,
                    None if ttl_s is None else now + ttl_s,
                    query_id,
                ),
            )
            conn.execute(
                "INSERT INTO marks (query_id, key, mark) VALUES (?, ?, ?)",
                (query_id, key, mark_to_json(stored)),
            )
            conn.executemany("INSERT INTO feedback_log (event) VALUES (?)", log_rows)
            for event in events:
                conn.execute(
                    "INSERT INTO signal_counts (signal_type, count) VALUES (?, 1)"
                    " ON CONFLICT (signal_type) DO UPDATE SET count = count + 1",
                    (event.signal_type,),
                )
            self._maybe_purge(conn, now)
            return Applied(decision, before, after, False, stored)

        return await self._run(lambda conn: self._transaction(conn, lambda: body(conn)))

    async def get(self, query_id: str) -> PendingQuery | None:
        def op(conn: sqlite3.Connection) -> PendingQuery | None:
            row = self._row(conn, query_id, time.time())
            if row is None:
                return None
            return PendingQuery(
                decision_from_json(str(row[0])),
                _accumulators(row),
                float(row[1]),  # type: ignore[arg-type]
            )

        return await self._run(op)

    async def session_query_ids(self, session_id: str) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT query_id FROM queries WHERE session_id = ? AND expires_at > ?"
                " ORDER BY created_at, query_id",
                (session_id, time.time()),
            ).fetchall()
            return [str(r[0]) for r in rows]

        return await self._run(op)

    async def pending_count(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT COUNT(*) FROM queries WHERE expires_at > ?", (time.time(),)
            ).fetchone()
            return int(row[0])

        return await self._run(op)

    async def recent_events(self, limit: int) -> list[FeedbackEvent]:
        def op(conn: sqlite3.Connection) -> list[FeedbackEvent]:
            rows = conn.execute(
                "SELECT event FROM feedback_log ORDER BY seq DESC LIMIT ?",
                (max(0, min(limit, self.history_limit)),),
            ).fetchall()
            return [event_from_json(r[0]) for r in rows]

        return await self._run(op)

    async def signal_counts(self) -> dict[str, int]:
        def op(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute("SELECT signal_type, count FROM signal_counts").fetchall()
            return {str(r[0]): int(r[1]) for r in rows}

        return await self._run(op)
