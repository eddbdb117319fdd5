"""PostgreSQL store: transactional, shared by replicas (asyncpg connection pool).

All tables live in one schema (default "conduit"), created idempotently by `initialize()`
(called on first use if the caller forgot). Each `apply` is one transaction that locks the
query's row (`SELECT ... FOR UPDATE`), so the duplicate check, the accumulation and the mark
cannot interleave between connections or replicas; creating a query from a decision is an
`INSERT ... ON CONFLICT` that only replaces an expired row. Expiry uses the database clock,
so replicas with skewed clocks agree.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from conduit_sidecar.errors import ConduitError, Unavailable
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
from conduit_sidecar.feedback.stores.postgres_pool import FLOOR_FILTER, quiet_floor_retries
from conduit_sidecar.query import RoutingDecision

T = TypeVar("T")
logger = logging.getLogger(__name__)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_NOW = "extract(epoch from clock_timestamp())::float8"
_PURGE_EVERY = 256

_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.queries (
    query_id text PRIMARY KEY,
    decision text NOT NULL,
    session_id text,
    created_at float8 NOT NULL,
    expires_at float8 NOT NULL,
    quality_num float8 NOT NULL DEFAULT 0,
    quality_den float8 NOT NULL DEFAULT 0,
    weight float8 NOT NULL DEFAULT 0,
    cost_usd float8,
    latency_s float8
);
CREATE INDEX IF NOT EXISTS queries_by_session ON {s}.queries (session_id)
    WHERE session_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS queries_by_expiry ON {s}.queries (expires_at);
CREATE TABLE IF NOT EXISTS {s}.marks (
    query_id text NOT NULL REFERENCES {s}.queries (query_id) ON DELETE CASCADE,
    key text NOT NULL,
    mark text NOT NULL,
    PRIMARY KEY (query_id, key)
);
CREATE TABLE IF NOT EXISTS {s}.feedback_log (
    seq bigserial PRIMARY KEY,
    event text NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.signal_counts (
    signal_type text PRIMARY KEY,
    count bigint NOT NULL
);
"""


def _accumulators(row: Any) -> Accumulators:
    return Accumulators(
        quality_num=float(row["quality_num"]),
        quality_den=float(row["quality_den"]),
        weight=float(row["weight"]),
        cost_usd=row["cost_usd"],
        latency_s=row["latency_s"],
    )


class PostgresFeedbackStore(FeedbackStore):
    """Feedback state in PostgreSQL tables under `schema`."""

    def __init__(
        self,
        database_url: str,
        *,
        schema: str = "conduit",
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        min_pool_size: int = 1,
        max_pool_size: int = 10,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 4.0,
    ) -> None:
        if not _IDENT.match(schema):
            raise ValueError(f"schema must be a plain SQL identifier, got {schema!r}")
        self.database_url = database_url
        self.schema = schema
        self.ttl_seconds = check_ttl(ttl_seconds)
        self.history_limit = check_history_limit(history_limit)
        self._min_pool = min_pool_size
        self._max_pool = max_pool_size
        self._connect_timeout_s = connect_timeout_s
        # A hung server or a partition keeps connections open with no answer: without a
        # bound, Route's log_decision waited until the client's deadline (30-60 s measured)
        # while OPERATIONS.md promises an answer within 5 s. A statement past it is
        # Unavailable.
        self._command_timeout_s = command_timeout_s
        self._pool: Any = None
        self._init_lock = asyncio.Lock()
        self._writes = 0
        s = schema
        self._q = f"{s}.queries"
        self._select = (
            f"SELECT decision, expires_at, quality_num, quality_den, weight, cost_usd, latency_s"
            f" FROM {s}.queries WHERE query_id = $1 AND expires_at > {_NOW}"
        )
        # Inserts a new query, or replaces one whose entry has expired; returns a row only
        # when it wrote, so the caller knows to drop stale marks.
        self._upsert = (
            f"INSERT INTO {s}.queries (query_id, decision, session_id, created_at, expires_at)"
            f" VALUES ($1, $2, $3, {_NOW}, {_NOW} + $4)"
            f" ON CONFLICT (query_id) DO UPDATE SET decision = EXCLUDED.decision,"
            f" session_id = EXCLUDED.session_id, created_at = EXCLUDED.created_at,"
            f" expires_at = EXCLUDED.expires_at, quality_num = 0, quality_den = 0, weight = 0,"
            f" cost_usd = NULL, latency_s = NULL"
            f" WHERE {s}.queries.expires_at <= {_NOW} RETURNING query_id"
        )

    def _safe_url(self) -> str:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", self.database_url)

    async def _guard(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        import asyncpg

        try:
            result = await fn()
        except ConduitError:
            raise
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            # A pooled connection broken by a server restart can surface as "cannot switch
            # to state ...; another operation is in progress" (found by the restart test).
            asyncpg.exceptions.InternalClientError,
        ) as exc:
            raise Unavailable(
                f"PostgreSQL feedback store unreachable at {self._safe_url()} ({what}): {exc}"
            ) from exc
        if FLOOR_FILTER.outage:  # the pool's reconnects failed, and now a call worked
            FLOOR_FILTER.recovered()
        return result

    async def initialize(self) -> None:
        """Create the connection pool and the tables (idempotent)."""
        async with self._init_lock:
            if self._pool is not None:
                return
            import asyncpg

            quiet_floor_retries()  # an outage: one warning, not a traceback a second

            async def connect() -> Any:
                return await asyncpg.create_pool(
                    self.database_url,
                    min_size=self._min_pool,
                    max_size=self._max_pool,
                    timeout=self._connect_timeout_s,
                    command_timeout=self._command_timeout_s,
                )

            pool = await self._guard("connect", connect)

            async def create_tables() -> None:
                async with pool.acquire() as conn:
                    # Concurrent initialisers (several replicas starting) serialise here.
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock(726475)")
                        await conn.execute(_SCHEMA.format(s=self.schema))

            try:
                await self._guard("initialize", create_tables)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _pool_ready(self) -> Any:
        if self._pool is None:
            await self.initialize()
        return self._pool

    async def _write(self, pool: Any, body: Callable[[Any], Awaitable[T]]) -> T:
        """Run `body` in one transaction, then (outside it) the occasional purge."""
        async with pool.acquire() as conn:
            async with conn.transaction():
                result = await body(conn)
            self._writes += 1
            if self._writes % _PURGE_EVERY == 0:
                await self._purge(conn)
            return result

    async def _purge(self, conn: Any) -> None:
        """Delete expired queries (their marks cascade) and trim the log.

        Housekeeping only: its own statements, SKIP LOCKED so it never waits on or deadlocks
        with a live operation, and a failure is logged, never reported to the caller whose
        operation has already committed.
        """
        import asyncpg

        s = self.schema
        try:
            await conn.execute(
                f"DELETE FROM {s}.queries WHERE query_id IN (SELECT query_id FROM {s}.queries"
                f" WHERE expires_at <= {_NOW} LIMIT 10000 FOR UPDATE SKIP LOCKED)"
            )
            await conn.execute(
                f"DELETE FROM {s}.feedback_log WHERE seq IN (SELECT seq FROM {s}.feedback_log"
                f" WHERE seq <= (SELECT max(seq) FROM {s}.feedback_log) - $1"
                f" LIMIT 10000 FOR UPDATE SKIP LOCKED)",
                self.history_limit,
            )
        except (
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.InternalClientError,
        ) as exc:
            logger.warning("PostgreSQL feedback store purge skipped: %s", exc)

    async def _create(self, conn: Any, decision: RoutingDecision, ttl_s: float) -> bool:
        """Store the decision unless a live entry exists; True if it wrote."""
        wrote = await conn.fetchval(
            self._upsert,
            decision.query_id,
            decision_to_json(decision),
            decision.session_id,
            ttl_s,
        )
        if wrote is None:
            return False
        # It may have replaced an expired entry: that entry's marks must not carry over.
        await conn.execute(
            f"DELETE FROM {self.schema}.marks WHERE query_id = $1", decision.query_id
        )
        return True

    async def log_decision(self, decision: RoutingDecision, ttl_s: float) -> bool:
        ttl_s = check_ttl(ttl_s, "ttl_s")
        pool = await self._pool_ready()

        async def body(conn: Any) -> bool:
            return await self._create(conn, decision, ttl_s)

        return await self._guard("log_decision", lambda: self._write(pool, body))

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
        pool = await self._pool_ready()
        s = self.schema
        # Sorted so concurrent transactions lock counter rows in one order (no deadlock).
        counted = sorted({e.signal_type for e in events})
        increments = [sum(1 for e in events if e.signal_type == t) for t in counted]

        async def body(conn: Any) -> Applied:
            if create is not None:
                await self._create(conn, create, ttl_s or self.ttl_seconds)
            row = await conn.fetchrow(self._select + " FOR UPDATE", query_id)
            if row is None:
                raise not_found(query_id)
            decision = decision_from_json(row["decision"])
            before = _accumulators(row)
            if aliases:
                # The call's own key first, then the older formats of it.
                first = await conn.fetchval(
                    f"SELECT mark FROM {s}.marks WHERE query_id = $1 AND key = ANY($2::text[])"
                    f" ORDER BY array_position($2::text[], key) LIMIT 1",
                    query_id,
                    [key, *aliases],
                )
            else:
                first = await conn.fetchval(
                    f"SELECT mark FROM {s}.marks WHERE query_id = $1 AND key = $2", query_id, key
                )
            if first is not None:
                return Applied(decision, before, before, True, mark_from_json(first))
            after = accumulate(before, contribution)
            stored = recorded(mark, before, after)
            await conn.execute(
                f"UPDATE {s}.queries SET quality_num = $2, quality_den = $3, weight = $4,"
                f" cost_usd = $5, latency_s = $6,"
                f" expires_at = COALESCE({_NOW} + $7::float8, expires_at)"
                f" WHERE query_id = $1",
                query_id,
                after.quality_num,
                after.quality_den,
                after.weight,
                after.cost_usd,
                after.latency_s,
                ttl_s,
            )
            await conn.execute(
                f"INSERT INTO {s}.marks (query_id, key, mark) VALUES ($1, $2, $3)",
                query_id,
                key,
                mark_to_json(stored),
            )
            if events:
                await conn.executemany(
                    f"INSERT INTO {s}.feedback_log (event) VALUES ($1)",
                    [(event_to_json(e),) for e in events],
                )
                await conn.execute(
                    f"INSERT INTO {s}.signal_counts (signal_type, count)"
                    f" SELECT * FROM unnest($1::text[], $2::int8[])"
                    f" ON CONFLICT (signal_type) DO UPDATE"
                    f" SET count = {s}.signal_counts.count + EXCLUDED.count",
                    counted,
                    increments,
                )
            return Applied(decision, before, after, False, stored)

        return await self._guard("apply", lambda: self._write(pool, body))

    async def read_mark(self, query_id: str, key: str) -> Mark | None:
        pool = await self._pool_ready()

        async def op() -> Mark | None:
            text = await pool.fetchval(
                f"SELECT m.mark FROM {self.schema}.marks m JOIN {self._q} q USING (query_id)"
                f" WHERE m.query_id = $1 AND m.key = $2 AND q.expires_at > {_NOW}",
                query_id,
                key,
            )
            return None if text is None else mark_from_json(text)

        return await self._guard("read_mark", op)

    async def get(self, query_id: str) -> PendingQuery | None:
        pool = await self._pool_ready()

        async def op() -> PendingQuery | None:
            row = await pool.fetchrow(self._select, query_id)
            if row is None:
                return None
            decision = decision_from_json(row["decision"])
            return PendingQuery(decision, _accumulators(row), float(row["expires_at"]))

        return await self._guard("get", op)

    async def session_query_ids(self, session_id: str) -> list[str]:
        pool = await self._pool_ready()

        async def op() -> list[str]:
            rows = await pool.fetch(
                f"SELECT query_id FROM {self._q} WHERE session_id = $1"
                f" AND expires_at > {_NOW} ORDER BY created_at, query_id",
                session_id,
            )
            return [str(r["query_id"]) for r in rows]

        return await self._guard("session", op)

    async def pending_count(self) -> int:
        pool = await self._pool_ready()

        async def op() -> int:
            count = await pool.fetchval(f"SELECT count(*) FROM {self._q} WHERE expires_at > {_NOW}")
            return int(count)

        return await self._guard("pending_count", op)

    async def recent_events(self, limit: int) -> list[FeedbackEvent]:
        pool = await self._pool_ready()

        async def op() -> list[FeedbackEvent]:
            rows = await pool.fetch(
                f"SELECT event FROM {self.schema}.feedback_log ORDER BY seq DESC LIMIT $1",
                max(0, min(limit, self.history_limit)),
            )
            return [event_from_json(r["event"]) for r in rows]

        return await self._guard("recent", op)

    async def signal_counts(self) -> dict[str, int]:
        pool = await self._pool_ready()

        async def op() -> dict[str, int]:
            rows = await pool.fetch(f"SELECT signal_type, count FROM {self.schema}.signal_counts")
            return {str(r["signal_type"]): int(r["count"]) for r in rows}

        return await self._guard("counts", op)
