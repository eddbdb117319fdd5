"""Redis policy state store: a hash for the base snapshot, a Stream for the delta log.

Keys (all under `{namespace}:policy:`):
- `base`    hash {data: policy bytes, watermark: stream id folded into it, meta: JSON}
- `deltas`  stream of {r: replica id, d: delta bytes}; XADD ids give one global order
- `lock:*`  short SET NX PX locks (compaction), released by compare-and-delete

Replacing the base and trimming the stream up to its watermark happen in one Lua script,
conditional on the previous watermark, so a slow compactor whose lock expired can never
overwrite newer work or fold a delta twice.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

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

_REPLACE_BASE = """
local current = redis.call('HGET', KEYS[1], 'watermark')
if ARGV[1] == '0' then
  if current then return 0 end
elseif current ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'data', ARGV[3], 'watermark', ARGV[4], 'meta', ARGV[5])
if ARGV[6] ~= '' then redis.call('XTRIM', KEYS[2], 'MINID', ARGV[6]) end
return 1
"""

_PUBLISH = """
local known = redis.call('GET', KEYS[2])
if known then return known end
local id = redis.call('XADD', KEYS[1], '*', 'r', ARGV[1], 'd', ARGV[2])
redis.call('SET', KEYS[2], id, 'EX', ARGV[3])
return id
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _id_key(cursor: str) -> tuple[int, int]:
    if cursor == START:
        return (-1, -1)
    ms, _, seq = cursor.partition("-")
    return (int(ms), int(seq or 0))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _raw(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


class RedisPolicyStateStore(PolicyStateStore):
    """Shared by every replica pointed at the same Redis and namespace."""

    shared = True

    def __init__(
        self, client: aioredis.Redis, *, namespace: str = "conduit", owns_client: bool = False
    ) -> None:
        self._redis = client
        self._owns_client = owns_client
        prefix = f"{namespace}:policy:"
        self.base_key = prefix + "base"
        self.deltas_key = prefix + "deltas"
        self._lock_prefix = prefix + "lock:"
        self._mark_prefix = prefix + "published:"
        self.description = f"redis (keys {prefix}*)"
        self.reset_hint = f"delete the Redis keys {self.base_key} and {self.deltas_key}"
        self._replace = self._redis.register_script(_REPLACE_BASE)
        self._unlock = self._redis.register_script(_UNLOCK)
        self._publish = self._redis.register_script(_PUBLISH)

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "conduit") -> RedisPolicyStateStore:
        # Short timeouts and a single quick retry: a stale pooled connection after a Redis
        # restart is retried once, a Redis that is down fails fast (the sync loop retries).
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
        )
        return cls(client, namespace=namespace, owns_client=True)

    @asynccontextmanager
    async def _reach(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise Unavailable(
                f"policy state store {self.description}: cannot {what}: {exc}"
            ) from exc

    async def initialize(self) -> None:
        async with self._reach("connect"):
            await self._redis.ping()

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()

    async def load_snapshot(self) -> Snapshot | None:
        async with self._reach("load the base snapshot"):
            fields = await self._redis.hgetall(self.base_key)
        if not fields or b"watermark" not in fields:
            return None
        return Snapshot(
            data=_raw(fields.get(b"data", b"")),
            watermark=_text(fields[b"watermark"]),
            meta=json.loads(fields.get(b"meta", b"{}")),
        )

    async def save_snapshot(
        self,
        data: bytes,
        meta: dict[str, Any],
        *,
        watermark: str,
        expected_watermark: str | None,
    ) -> bool:
        if watermark == START:
            trim = ""
        else:
            ms, seq = _id_key(watermark)
            trim = f"{ms}-{seq + 1}"  # XTRIM MINID keeps ids >= this: drops everything folded
        args = [
            "0" if expected_watermark is None else "1",
            expected_watermark or "",
            data,
            watermark,
            json.dumps(meta, sort_keys=True),
            trim,
        ]
        async with self._reach("write the base snapshot"):
            done = await self._replace(keys=[self.base_key, self.deltas_key], args=args)
        return bool(done)

    async def publish_delta(self, replica_id: str, data: bytes, *, publish_id: str) -> str:
        async with self._reach("publish a policy delta"):
            cursor = await self._publish(
                keys=[self.deltas_key, self._mark_prefix + publish_id],
                args=[replica_id, data, PUBLISH_MARK_TTL_S],
            )
        return _text(cursor)

    async def read_deltas(
        self, after_cursor: str, *, upto: str | None = None, limit: int = PAGE_SIZE
    ) -> list[DeltaRecord]:
        start = "-" if after_cursor == START else "(" + after_cursor
        async with self._reach("read policy deltas"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hget(self.base_key, "watermark")
            pipe.xrange(self.deltas_key, start, upto or "+", count=limit)
            watermark, entries = await pipe.execute()
        if watermark is not None and _id_key(_text(watermark)) > _id_key(after_cursor):
            raise DeltaGap(after_cursor, _text(watermark))
        return [
            DeltaRecord(cursor=_text(eid), replica_id=_text(f[b"r"]), data=_raw(f[b"d"]))
            for eid, f in entries
        ]

    async def cutoff_cursor(self, min_age_s: float) -> str | None:
        async with self._reach("read the delta log"):
            seconds, micros = await self._redis.time()
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            newest = await self._redis.xrevrange(
                self.deltas_key, str(now_ms - int(min_age_s * 1000)), "-", count=1
            )
        return _text(newest[0][0]) if newest else None

    async def try_lock(self, name: str, ttl_s: float) -> str | None:
        token = uuid.uuid4().hex
        async with self._reach("take a lock"):
            got = await self._redis.set(
                self._lock_prefix + name, token, nx=True, px=max(1, int(ttl_s * 1000))
            )
        return token if got else None

    async def unlock(self, name: str, token: str) -> None:
        async with self._reach("release a lock"):
            await self._unlock(keys=[self._lock_prefix + name], args=[token])

    async def storage_stats(self) -> StorageStats:
        async with self._reach("read storage statistics"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.xlen(self.deltas_key)
            pipe.memory_usage(self.deltas_key, samples=0)
            pipe.hstrlen(self.base_key, "data")
            pipe.hget(self.base_key, "watermark")
            count, usage, snap, watermark = await pipe.execute()
        return StorageStats(
            delta_count=int(count),
            delta_bytes=int(usage or 0),
            snapshot_bytes=int(snap or 0),
            watermark=_text(watermark) if watermark is not None else START,
        )

    async def delete_all(self) -> None:
        """Removes this namespace's policy state (operator action and tests)."""
        async with self._reach("delete policy state"):
            await self._redis.delete(self.base_key, self.deltas_key, self._lock_prefix + "compact")
            async for key in self._redis.scan_iter(match=self._mark_prefix + "*", count=500):
                await self._redis.delete(key)
