"""SQLite policy state store: the embedded default, durable in one file, no server.

Meant for one sidecar (the file may live next to the feedback store's tables in the same
database). It keeps the same base + delta log as the shared stores, so the crash loss window
is the sync interval here too; several processes on one host may even share the file, since
SQLite serialises writers and the base is replaced by compare-and-set.
All I/O runs in a worker thread so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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

T = TypeVar("T")
_NAMESPACE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def _seq(cursor: str) -> int:
    return int(cursor) if cursor != START else 0


def _cursor(seq: int) -> str:
    return str(seq) if seq > 0 else START


def _rollback(db: sqlite3.Connection) -> None:
    """Ends a failed transaction; SQLite may have rolled it back already (a full disk, an I/O
    error), and a second ROLLBACK would raise "no transaction is active" in place of the
    error that explains the failure."""
    if db.in_transaction:
        db.execute("ROLLBACK")


class SqlitePolicyStateStore(PolicyStateStore):
    """Base and deltas in tables `{namespace}_policy_base` / `{namespace}_policy_deltas`."""

    shared = False

    def __init__(
        self, path: str | Path, *, namespace: str = "conduit", synchronous: str = "FULL"
    ) -> None:
        if not _NAMESPACE.match(namespace):
            raise ValueError(
                f"namespace: expected lower-case letters, digits and _, got {namespace!r}"
            )
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous: expected FULL or NORMAL, got {synchronous!r}")
        self.synchronous = synchronous  # FULL survives power loss, NORMAL a process crash
        self.path = Path(path)
        self.base_table = f"{namespace}_policy_base"
        self.deltas_table = f"{namespace}_policy_deltas"
        self.locks_table = f"{namespace}_policy_locks"
        self.marks_table = f"{namespace}_policy_published"
        self.description = f"sqlite ({self.path}, tables {namespace}_policy_*)"
        self.reset_hint = (
            f"drop the tables {self.base_table} and {self.deltas_table} in {self.path}"
        )
        self._db: sqlite3.Connection | None = None
        self._mutex = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {self.base_table} ("
                " id INTEGER PRIMARY KEY CHECK (id = 1),"
                " snapshot BLOB NOT NULL, watermark INTEGER NOT NULL, meta TEXT NOT NULL,"
                " updated_at REAL NOT NULL)"
            )
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {self.deltas_table} ("
                " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " replica_id TEXT NOT NULL, delta BLOB NOT NULL, created_at REAL NOT NULL)"
            )
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {self.marks_table} (publish_id TEXT PRIMARY KEY,"
                " seq INTEGER NOT NULL, created_at REAL NOT NULL)"
            )
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {self.locks_table} (name TEXT PRIMARY KEY,"
                " token TEXT NOT NULL, expires_at REAL NOT NULL)"
            )
            self._db = db
        return self._db

    async def _run(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._mutex:
                return fn(self._connect())

        try:
            return await asyncio.to_thread(call)
        except (sqlite3.OperationalError, OSError) as exc:
            raise Unavailable(
                f"policy state store {self.description}: cannot {what}: {exc}"
            ) from exc

    async def initialize(self) -> None:
        await self._run("open the database", lambda db: None)

    async def close(self) -> None:
        def shut() -> None:
            with self._mutex:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(shut)

    async def load_snapshot(self) -> Snapshot | None:
        def load(db: sqlite3.Connection) -> Snapshot | None:
            # The snapshot (20 MB at feature_dim 386 with 11 models) is read through the blob
            # API, which copies it with the GIL released; a SELECT of the column copies it
            # with the GIL held, and the event loop waited for that (up to 120 ms under load).
            db.execute("BEGIN")
            try:
                row = db.execute(
                    f"SELECT watermark, meta FROM {self.base_table} WHERE id = 1"
                ).fetchone()
                if row is None:
                    return None
                with db.blobopen(self.base_table, "snapshot", 1, readonly=True) as blob:
                    data = blob.read()
                return Snapshot(data=data, watermark=_cursor(row[0]), meta=json.loads(row[1]))
            finally:
                _rollback(db)

        return await self._run("load the base snapshot", load)

    async def save_snapshot(
        self,
        data: bytes,
        meta: dict[str, Any],
        *,
        watermark: str,
        expected_watermark: str | None,
    ) -> bool:
        meta_json = json.dumps(meta, sort_keys=True)

        def save(db: sqlite3.Connection) -> bool:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(f"SELECT watermark FROM {self.base_table} WHERE id = 1").fetchone()
                current = _cursor(row[0]) if row is not None else None
                if current != expected_watermark:
                    db.execute("ROLLBACK")
                    return False
                # Written through the blob API (GIL released during the copy), see load.
                db.execute(
                    f"INSERT OR REPLACE INTO {self.base_table} VALUES (1, zeroblob(?), ?, ?, ?)",
                    (len(data), _seq(watermark), meta_json, time.time()),
                )
                with db.blobopen(self.base_table, "snapshot", 1) as blob:
                    blob.write(data)
                db.execute(f"DELETE FROM {self.deltas_table} WHERE seq <= ?", (_seq(watermark),))
                db.execute(
                    f"DELETE FROM {self.marks_table} WHERE created_at < ?",
                    (time.time() - PUBLISH_MARK_TTL_S,),
                )
                db.execute("COMMIT")
                return True
            except BaseException:
                _rollback(db)
                raise

        return await self._run("write the base snapshot", save)

    async def publish_delta(self, replica_id: str, data: bytes, *, publish_id: str) -> str:
        def publish(db: sqlite3.Connection) -> str:
            db.execute("BEGIN IMMEDIATE")
            try:
                known = db.execute(
                    f"SELECT seq FROM {self.marks_table} WHERE publish_id = ?", (publish_id,)
                ).fetchone()
                if known is not None:
                    db.execute("COMMIT")
                    return _cursor(int(known[0]))
                now = time.time()
                cur = db.execute(
                    f"INSERT INTO {self.deltas_table} (replica_id, delta, created_at)"
                    " VALUES (?, ?, ?)",
                    (replica_id, data, now),
                )
                seq = int(cur.lastrowid or 0)
                db.execute(
                    f"INSERT INTO {self.marks_table} VALUES (?, ?, ?)", (publish_id, seq, now)
                )
                db.execute("COMMIT")
                return _cursor(seq)
            except BaseException:
                _rollback(db)
                raise

        return await self._run("publish a policy delta", publish)

    async def read_deltas(
        self, after_cursor: str, *, upto: str | None = None, limit: int = PAGE_SIZE
    ) -> list[DeltaRecord]:
        after = _seq(after_cursor)
        last = _seq(upto) if upto is not None else 2**63 - 1

        def read(db: sqlite3.Connection) -> tuple[int | None, list[DeltaRecord]]:
            db.execute("BEGIN")  # one read snapshot for the watermark and the rows
            try:
                row = db.execute(f"SELECT watermark FROM {self.base_table} WHERE id = 1").fetchone()
                rows = db.execute(
                    f"SELECT seq, replica_id, delta FROM {self.deltas_table}"
                    " WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                    (after, last, limit),
                ).fetchall()
            finally:
                if db.in_transaction:  # an error may have ended it: keep that error
                    db.execute("COMMIT")
            records = [DeltaRecord(_cursor(s), r, bytes(d)) for s, r, d in rows]
            return (row[0] if row is not None else None), records

        watermark, records = await self._run("read policy deltas", read)
        if watermark is not None and watermark > after:
            raise DeltaGap(after_cursor, _cursor(watermark))
        return records

    async def cutoff_cursor(self, min_age_s: float) -> str | None:
        def cutoff(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                f"SELECT max(seq) FROM {self.deltas_table} WHERE created_at <= ?",
                (time.time() - min_age_s,),
            ).fetchone()
            return _cursor(int(row[0])) if row is not None and row[0] is not None else None

        return await self._run("read the delta log", cutoff)

    async def try_lock(self, name: str, ttl_s: float) -> str | None:
        token = uuid.uuid4().hex

        def lock(db: sqlite3.Connection) -> bool:
            now = time.time()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(f"DELETE FROM {self.locks_table} WHERE expires_at < ?", (now,))
                cur = db.execute(
                    f"INSERT OR IGNORE INTO {self.locks_table} VALUES (?, ?, ?)",
                    (name, token, now + ttl_s),
                )
                db.execute("COMMIT")
                return cur.rowcount == 1
            except BaseException:
                _rollback(db)
                raise

        return token if await self._run("take a lock", lock) else None

    async def unlock(self, name: str, token: str) -> None:
        await self._run(
            "release a lock",
            lambda db: db.execute(
                f"DELETE FROM {self.locks_table} WHERE name = ? AND token = ?", (name, token)
            ),
        )

    async def storage_stats(self) -> StorageStats:
        def stats(db: sqlite3.Connection) -> StorageStats:
            count, size = db.execute(
                f"SELECT count(*), coalesce(sum(length(delta)), 0) FROM {self.deltas_table}"
            ).fetchone()
            base = db.execute(
                f"SELECT length(snapshot), watermark FROM {self.base_table} WHERE id = 1"
            ).fetchone()
            return StorageStats(
                delta_count=int(count),
                delta_bytes=int(size),
                snapshot_bytes=int(base[0]) if base is not None else 0,
                watermark=_cursor(int(base[1])) if base is not None else START,
            )

        return await self._run("read storage statistics", stats)
