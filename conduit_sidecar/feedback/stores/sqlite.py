"""SQLite store: the embedded, durable default (no server, survives restarts).

stdlib `sqlite3` on one connection owned by a single worker thread (`sqlite_writer`), so the
event loop never blocks on disk and statements never interleave. Writes are group committed:
the worker runs every write queued while the previous transaction was committing in ONE
`BEGIN IMMEDIATE` transaction (each in its own savepoint, so each is exactly as atomic as a
transaction of its own, against this process and against another sharing the file) and
commits once. WAL journal with `synchronous=FULL` (configurable): a call that returned after
its commit survives a crash of the process or the machine.

`decision_durability` concerns `log_decision` only, the write every `Route` makes:

- `"buffered"` (the default): `log_decision` returns once the decision is queued; the worker
  commits it within `flush_interval_s` (default 5 ms) plus one commit, together with every
  other decision of that interval (one fsync for all of them). Reads and writes are served in
  queue order, so whatever follows through this store (`Track`, feedback, `get`) sees the
  decision at once, and an acknowledged `Track` implies its decision was committed too.
  What a crash (`kill -9`, power loss) can lose is the decisions of that window: their
  `Track`/feedback then gets NOT_FOUND, as when the store is unreachable during `Route`
  (routing never depends on the store). The window is longer only while the file is slow
  or locked by another process (at most 10,000 decisions are queued; beyond that
  `log_decision` waits for its commit). A clean `close()` flushes everything. While the store
  is failing (or before its first commit) `log_decision` waits and raises `Unavailable`, as
  in commit mode. This is the default because a sequential `Route` cannot afford an fsync
  (hundreds of microseconds to milliseconds) against a budget of about one millisecond.
- `"commit"`: `log_decision` returns after the commit that contains the decision.

Everything else (`apply`: Track, feedback, session feedback) always returns only after its
commit: a signal acknowledged to a client is durable, and its idempotency mark with it.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

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
    recorded,
)
from conduit_sidecar.feedback.stores.sqlite_writer import GroupCommitWriter
from conduit_sidecar.query import RoutingDecision

DecisionDurability = Literal["commit", "buffered"]
DEFAULT_FLUSH_INTERVAL_S = 0.005

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
-- A decision that reuses an expired query id replaces that row through _UPSERT_DECISION;
-- its old marks go with it here, instead of a DELETE per logged decision.
CREATE TRIGGER IF NOT EXISTS queries_replaced AFTER UPDATE OF created_at ON queries
BEGIN
    DELETE FROM marks WHERE query_id = NEW.query_id;
END;
CREATE TABLE IF NOT EXISTS feedback_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS signal_counts (
    signal_type TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
"""

# Logs a decision: a live entry with the same id is left as is; an expired one is replaced
# with its accumulators reset (and its marks deleted by the `queries_replaced` trigger).
_UPSERT_DECISION = (
    "INSERT INTO queries (query_id, decision, session_id, created_at, expires_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (query_id) DO UPDATE SET"
    " decision = excluded.decision, session_id = excluded.session_id,"
    " created_at = excluded.created_at, expires_at = excluded.expires_at,"
    " quality_num = 0, quality_den = 0, weight = 0, cost_usd = NULL, latency_s = NULL"
    " WHERE queries.expires_at <= excluded.created_at"
)
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
    """Pending queries, marks, sessions and the feedback log in one SQLite file.

    `decision_durability` and `flush_interval_s` are described in the module docstring;
    `writer.commits` counts the transactions committed (one per group).
    """

    failures_in_doubt = False  # see FeedbackStore

    def __init__(
        self,
        path: str | Path,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        decision_durability: DecisionDurability = "buffered",
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        if decision_durability not in ("commit", "buffered"):
            raise ValueError(
                f"decision_durability must be 'commit' or 'buffered', got {decision_durability!r}"
            )
        if (
            isinstance(flush_interval_s, bool)
            or not isinstance(flush_interval_s, int | float)
            or not math.isfinite(flush_interval_s)
            or not 0 <= flush_interval_s <= 1
        ):
            raise ValueError(
                f"flush_interval_s must be in [0, 1] seconds, got {flush_interval_s!r}"
            )
        self.path = str(path)
        self.ttl_seconds = check_ttl(ttl_seconds)
        self.history_limit = check_history_limit(history_limit)
        self.decision_durability: DecisionDurability = decision_durability
        self._synchronous = synchronous
        self.writer = GroupCommitWriter(
            self._open, self.path, flush_interval_s=float(flush_interval_s)
        )
        self._writes = 0  # worker thread only

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _maybe_purge(self, conn: sqlite3.Connection, now: float, writes: int = 1) -> None:
        before, self._writes = self._writes, self._writes + writes
        if before // _PURGE_EVERY == self._writes // _PURGE_EVERY:
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
        conn: sqlite3.Connection, decision: RoutingDecision, text: str, now: float, ttl_s: float
    ) -> None:
        # An expired row with the same id is replaced (its marks go with it, by the trigger).
        conn.execute(
            _UPSERT_DECISION, (decision.query_id, text, decision.session_id, now, now + ttl_s)
        )

    # The interface.

    async def initialize(self) -> None:
        await self.writer.call(lambda conn: None, write=False)

    async def close(self) -> None:
        await self.writer.close()  # flushes every queued write first

    async def log_decision(self, decision: RoutingDecision, ttl_s: float) -> bool:
        """In "buffered" mode, True once queued: whether a live entry already existed (it is
        then left as is) is settled when the group is written."""
        ttl_s = check_ttl(ttl_s, "ttl_s")
        # Serialised here, not on the worker: a decision that cannot be stored fails its own
        # caller, and a later change to the object cannot alter what is written.
        text = decision_to_json(decision)

        def op(conn: sqlite3.Connection) -> bool:
            now = time.time()
            if self._row(conn, decision.query_id, now) is not None:
                return False
            self._insert(conn, decision, text, now, ttl_s)
            self._maybe_purge(conn, now)
            return True

        item = (decision.query_id, text, decision.session_id, ttl_s)
        if self.decision_durability == "buffered" and self.writer.post(self._log_many, item):
            return True
        return await self.writer.call(op, write=True)

    def _log_many(
        self, conn: sqlite3.Connection, items: list[tuple[str, str, str | None, float]]
    ) -> None:
        """`log_decision` for a run of buffered decisions: one statement for all of them.

        Same effect as `op` above for each in turn: a live entry is left as is; an expired
        one is replaced (accumulators reset) and its marks go with it (the
        `queries_replaced` trigger).
        """
        now = time.time()
        conn.executemany(
            _UPSERT_DECISION,
            [(qid, text, sid, now, now + ttl_s) for qid, text, sid, ttl_s in items],
        )
        self._maybe_purge(conn, now, len(items))

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
        aliases: Sequence[str] = (),
    ) -> Applied:
        if ttl_s is not None:
            ttl_s = check_ttl(ttl_s, "ttl_s")
        log_rows = [(event_to_json(e),) for e in events]
        create_text = None if create is None else decision_to_json(create)

        def body(conn: sqlite3.Connection) -> Applied:
            now = time.time()
            row = self._row(conn, query_id, now)
            if row is None:
                if create is None or create_text is None:
                    raise not_found(query_id)
                self._insert(conn, create, create_text, now, ttl_s or self.ttl_seconds)
                row = self._row(conn, query_id, now)
                assert row is not None  # just inserted inside this transaction
            decision = decision_from_json(str(row[0]))
            before = _accumulators(row)
            first = None
            for candidate in (key, *aliases):
                first = conn.execute(
                    "SELECT mark FROM marks WHERE query_id = ? AND key = ?", (query_id, candidate)
                ).fetchone()
                if first is not None:
                    break
            if first is not None:
                return Applied(decision, before, before, True, mark_from_json(first[0]))
            after = accumulate(before, contribution)
            stored = recorded(mark, before, after)
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

        # One savepoint in the group's transaction: duplicate check + apply + mark + log are
        # all or nothing, under the write lock, and the caller resumes after the COMMIT.
        return await self.writer.call(body, write=True)

    async def read_mark(self, query_id: str, key: str) -> Mark | None:
        def op(conn: sqlite3.Connection) -> Mark | None:
            if self._row(conn, query_id, time.time()) is None:
                return None
            row = conn.execute(
                "SELECT mark FROM marks WHERE query_id = ? AND key = ?", (query_id, key)
            ).fetchone()
            return None if row is None else mark_from_json(row[0])

        return await self.writer.call(op, write=False)

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

        return await self.writer.call(op, write=False)

    async def session_query_ids(self, session_id: str) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT query_id FROM queries WHERE session_id = ? AND expires_at > ?"
                " ORDER BY created_at, query_id",
                (session_id, time.time()),
            ).fetchall()
            return [str(r[0]) for r in rows]

        return await self.writer.call(op, write=False)

    async def pending_count(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT COUNT(*) FROM queries WHERE expires_at > ?", (time.time(),)
            ).fetchone()
            return int(row[0])

        return await self.writer.call(op, write=False)

    async def recent_events(self, limit: int) -> list[FeedbackEvent]:
        def op(conn: sqlite3.Connection) -> list[FeedbackEvent]:
            rows = conn.execute(
                "SELECT event FROM feedback_log ORDER BY seq DESC LIMIT ?",
                (max(0, min(limit, self.history_limit)),),
            ).fetchall()
            return [event_from_json(r[0]) for r in rows]

        return await self.writer.call(op, write=False)

    async def signal_counts(self) -> dict[str, int]:
        def op(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute("SELECT signal_type, count FROM signal_counts").fetchall()
            return {str(r[0]): int(r[1]) for r in rows}

        return await self.writer.call(op, write=False)
