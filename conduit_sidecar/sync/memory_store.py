"""In-process policy state store: for tests and development (nothing survives the process).

Several synchronizers of one process may share one instance, which behaves like a shared
store (same cursors, same compaction rules) without a server.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

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


def _seq(cursor: str) -> int:
    return int(cursor) if cursor != START else 0


class MemoryPolicyStateStore(PolicyStateStore):
    """Base and delta log in plain Python objects; every method is atomic on the event loop."""

    shared = False
    description = "memory://"
    reset_hint = "restart the process (memory:// keeps nothing across restarts)"

    def __init__(self) -> None:
        self._base: Snapshot | None = None
        self._deltas: list[tuple[int, float, DeltaRecord]] = []  # (seq, monotonic time, record)
        self._next_seq = 1
        self._locks: dict[str, tuple[str, float]] = {}
        self._published: dict[str, tuple[str, float]] = {}  # publish id -> (cursor, when)

    async def load_snapshot(self) -> Snapshot | None:
        return self._base

    async def save_snapshot(
        self,
        data: bytes,
        meta: dict[str, Any],
        *,
        watermark: str,
        expected_watermark: str | None,
    ) -> bool:
        current = self._base.watermark if self._base is not None else None
        if current != expected_watermark:
            return False
        self._base = Snapshot(data=bytes(data), watermark=watermark, meta=dict(meta))
        cut = _seq(watermark)
        self._deltas = [entry for entry in self._deltas if entry[0] > cut]
        horizon = time.monotonic() - PUBLISH_MARK_TTL_S
        self._published = {k: v for k, v in self._published.items() if v[1] >= horizon}
        return True

    async def publish_delta(self, replica_id: str, data: bytes, *, publish_id: str) -> str:
        known = self._published.get(publish_id)
        if known is not None:
            return known[0]
        seq = self._next_seq
        self._next_seq += 1
        record = DeltaRecord(cursor=str(seq), replica_id=replica_id, data=bytes(data))
        self._deltas.append((seq, time.monotonic(), record))
        self._published[publish_id] = (record.cursor, time.monotonic())
        return record.cursor

    async def read_deltas(
        self, after_cursor: str, *, upto: str | None = None, limit: int = PAGE_SIZE
    ) -> list[DeltaRecord]:
        after = _seq(after_cursor)
        if self._base is not None and _seq(self._base.watermark) > after:
            raise DeltaGap(after_cursor, self._base.watermark)
        last = _seq(upto) if upto is not None else None
        out: list[DeltaRecord] = []
        for seq, _, record in self._deltas:
            if seq <= after:
                continue
            if last is not None and seq > last:
                break
            out.append(record)
            if len(out) >= limit:
                break
        return out

    async def cutoff_cursor(self, min_age_s: float) -> str | None:
        horizon = time.monotonic() - min_age_s
        newest: str | None = None
        for _, at, record in self._deltas:
            if at > horizon:
                break
            newest = record.cursor
        return newest

    async def try_lock(self, name: str, ttl_s: float) -> str | None:
        held = self._locks.get(name)
        now = time.monotonic()
        if held is not None and held[1] > now:
            return None
        token = uuid.uuid4().hex
        self._locks[name] = (token, now + ttl_s)
        return token

    async def unlock(self, name: str, token: str) -> None:
        held = self._locks.get(name)
        if held is not None and held[0] == token:
            del self._locks[name]

    async def storage_stats(self) -> StorageStats:
        return StorageStats(
            delta_count=len(self._deltas),
            delta_bytes=sum(len(r.data) for _, _, r in self._deltas),
            snapshot_bytes=len(self._base.data) if self._base is not None else 0,
            watermark=self._base.watermark if self._base is not None else START,
        )
