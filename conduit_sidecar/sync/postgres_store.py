"""PostgreSQL policy state store: a one-row base table and a delta table keyed by a sequence.

Tables (`{namespace}_policy_base`, `{namespace}_policy_deltas`, created idempotently):
- base(id = 1, snapshot bytea, watermark bigint, meta jsonb, updated_at)
- deltas(seq bigserial, replica_id text, delta bytea, created_at)

A sequence alone does not give a gap-free read order (a transaction may take seq 5 and commit
after seq 6 is visible, and a reader that saw 6 would skip 5 forever), so every append takes a
transaction-scoped advisory lock first: sequence numbers are then allocated and committed in
the same order. Replacing the base and deleting the folded deltas is one transaction,
conditional on the previous watermark.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from conduit_sidecar.errors import Unavailable
from conduit_sidecar.sync.state_store import (
    PAGE_SIZE,
    PUBLISH_MARK_TTL_S,
    START,
    DeltaGap,
    DeltaRecord,
    PolicyStateStore,
    Snapshot,
    StorageStats,
)

_UNREACHABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InterfaceError,
    # A pooled connection broken by a server restart can raise this ("cannot switch to
    # state ...; another operation is in progress"); the pool replaces it on release.
    asyncpg.exceptions.InternalClientError,
)
_NAMESPACE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def _seq(cursor: str) -> int:
    return int(cursor) if cursor != START else 0


def _cursor(seq: int) -> str:
    return str(seq) if seq > 0 else START


class PostgresPolicyStateStore(PolicyStateStore):
    """Shared by every replica pointed at the same database and namespace."""

    shared = True

    def __init__(self, database_url: str, *, namespace: str = "conduit") -> None:
        if not _NAMESPACE.match(namespace):
            raise ValueError(
                f"namespace: expected lower-case letters, digits and _, got {namespace!r}"
            )
        self._url = database_url
        self.base_table = f"{namespace}_policy_base"
        self.deltas_table = f"{namespace}_policy_deltas"
        self.marks_table = f"{namespace}_policy_published"
        self._lock_base = f"{namespace}:policy:"
        self.description = f"postgresql (tables {namespace}_policy_*)"
        self.reset_hint = f"run DROP TABLE {self.base_table}, {self.deltas_table}"
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._held: dict[str, asyncpg.pool.PoolConnectionProxy] = {}

    @asynccontextmanager
    async def _conn(self, what: str) -> AsyncIterator[asyncpg.Connection]:
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=5.0) as conn:
                yield conn
        except _UNREACHABLE as exc:
            raise Unavailable(
                f"policy state store {self.description}: cannot {what}: {exc}"
            ) from exc

    async def _get_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._url, min_size=0, max_size=4, timeout=5.0, command_timeout=30.0
                )
            return self._pool

    async def initialize(self) -> None:
        async with self._conn("create its tables") as conn, conn.transaction():
            # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalogue.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", self._lock_base + "ddl"
            )
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.base_table} ("
                " id smallint PRIMARY KEY CHECK (id = 1),"
                " snapshot bytea NOT NULL, watermark bigint NOT NULL, meta jsonb NOT NULL,"
                " updated_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.deltas_table} ("
                " seq bigserial PRIMARY KEY, replica_id text NOT NULL, delta bytea NOT NULL,"
                " created_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.marks_table} ("
                " publish_id text PRIMARY KEY, seq bigint NOT NULL,"
                " created_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )

    async def close(self) -> None:
        for token in list(self._held):
            await self.unlock("", token)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def load_snapshot(self) -> Snapshot | None:
        async with self._conn("load the base snapshot") as conn:
            row = await conn.fetchrow(
                f"SELECT snapshot, watermark, meta FROM {self.base_table} WHERE id = 1"
            )
        if row is None:
            return None
        return Snapshot(
            data=bytes(row["snapshot"]),
            watermark=_cursor(row["watermark"]),
            meta=json.loads(row["meta"]),
        )

    async def save_snapshot(
        self,
        data: bytes,
        meta: dict[str, Any],
        *,
        watermark: str,
        expected_watermark: str | None,
    ) -> bool:
        meta_json = json.dumps(meta, sort_keys=True)
        async with self._conn("write the base snapshot") as conn, conn.transaction():
            if expected_watermark is None:
                status = await conn.execute(
                    f"INSERT INTO {self.base_table} (id, snapshot, watermark, meta)"
                    " VALUES (1, $1, $2, $3::jsonb) ON CONFLICT (id) DO NOTHING",
                    data,
                    _seq(watermark),
                    meta_json,
                )
            else:
                status = await conn.execute(
                    f"UPDATE {self.base_table} SET snapshot = $1, watermark = $2,"
                    " meta = $3::jsonb, updated_at = clock_timestamp()"
                    " WHERE id = 1 AND watermark = $4",
                    data,
                    _seq(watermark),
                    meta_json,
                    _seq(expected_watermark),
                )
            if not status.endswith(" 1"):
                return False
            await conn.execute(f"DELETE FROM {self.deltas_table} WHERE seq <= $1", _seq(watermark))
            await conn.execute(
                f"DELETE FROM {self.marks_table}"
                " WHERE created_at < clock_timestamp() - make_interval(secs => $1)",
                float(PUBLISH_MARK_TTL_S),
            )
        return True

    async def publish_delta(self, replica_id: str, data: bytes, *, publish_id: str) -> str:
        async with self._conn("publish a policy delta") as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", self._lock_base + "append"
            )
            known = await conn.fetchval(
                f"SELECT seq FROM {self.marks_table} WHERE publish_id = $1", publish_id
            )
            if known is not None:
                return _cursor(int(known))
            seq = await conn.fetchval(
                f"INSERT INTO {self.deltas_table} (replica_id, delta)"
                " VALUES ($1, $2) RETURNING seq",
                replica_id,
                data,
            )
            await conn.execute(
                f"INSERT INTO {self.marks_table} (publish_id, seq) VALUES ($1, $2)",
                publish_id,
                seq,
            )
        return _cursor(int(seq))

    async def read_deltas(
        self, after_cursor: str, *, upto: str | None = None, limit: int = PAGE_SIZE
    ) -> list[DeltaRecord]:
        after = _seq(after_cursor)
        last = _seq(upto) if upto is not None else 2**63 - 1
        async with (
            self._conn("read policy deltas") as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            watermark = await conn.fetchval(f"SELECT watermark FROM {self.base_table} WHERE id = 1")
            rows = await conn.fetch(
                f"SELECT seq, replica_id, delta FROM {self.deltas_table}"
                " WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                after,
                last,
                limit,
            )
        if watermark is not None and int(watermark) > after:
            raise DeltaGap(after_cursor, _cursor(int(watermark)))
        return [
            DeltaRecord(
                cursor=_cursor(int(r["seq"])), replica_id=r["replica_id"], data=bytes(r["delta"])
            )
            for r in rows
        ]

    async def cutoff_cursor(self, min_age_s: float) -> str | None:
        async with self._conn("read the delta log") as conn:
            seq = await conn.fetchval(
                f"SELECT max(seq) FROM {self.deltas_table}"
                " WHERE created_at <= clock_timestamp() - make_interval(secs => $1)",
                float(min_age_s),
            )
        return _cursor(int(seq)) if seq is not None else None

    async def try_lock(self, name: str, ttl_s: float) -> str | None:
        # A session-level advisory lock on a connection held until unlock: if this process
        # dies, PostgreSQL drops the connection and the lock with it (no TTL needed).
        key = self._lock_base + name
        try:
            pool = await self._get_pool()
            conn = await pool.acquire(timeout=5.0)
        except _UNREACHABLE as exc:
            raise Unavailable(f"policy state store {self.description}: cannot lock: {exc}") from exc
        try:
            got = await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", key)
        except _UNREACHABLE as exc:
            await pool.release(conn)
            raise Unavailable(f"policy state store {self.description}: cannot lock: {exc}") from exc
        if not got:
            await pool.release(conn)
            return None
        token = uuid.uuid4().hex
        self._held[token] = conn
        return token

    async def unlock(self, name: str, token: str) -> None:
        conn = self._held.pop(token, None)
        if conn is None or self._pool is None:
            return
        try:
            await conn.execute("SELECT pg_advisory_unlock_all()")
        except _UNREACHABLE:
            pass  # the connection is gone, and the lock went with it
        finally:
            await self._pool.release(conn)

    async def storage_stats(self) -> StorageStats:
        async with self._conn("read storage statistics") as conn:
            count, size = await conn.fetchrow(
                f"SELECT count(*), coalesce(sum(octet_length(delta)), 0) FROM {self.deltas_table}"
            )
            base = await conn.fetchrow(
                f"SELECT octet_length(snapshot) AS n, watermark FROM {self.base_table} WHERE id = 1"
            )
        return StorageStats(
            delta_count=int(count),
            delta_bytes=int(size),
            snapshot_bytes=int(base["n"]) if base is not None else 0,
            watermark=_cursor(int(base["watermark"])) if base is not None else START,
        )

    async def delete_all(self) -> None:
        """Drops this namespace's policy tables (operator action and tests)."""
        async with self._conn("delete policy state") as conn:
            await conn.execute(
                f"DROP TABLE IF EXISTS {self.base_table}, {self.deltas_table}, {self.marks_table}"
            )
