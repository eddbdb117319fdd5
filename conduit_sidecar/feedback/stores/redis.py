"""Redis store: shared by replicas, native TTL, one Lua script per atomic operation.

Keys (under `prefix`, default "conduit:"):
  q:{query_id}    hash: decision JSON, session id, accumulators (num, den, weight, cost, lat)
  m:{query_id}    hash: idempotency key -> first result (JSON); same TTL as q:
  s:{session_id}  set of the session's query ids (lookups never scan the keyspace)
  pending         sorted set query_id -> expiry (ms, server clock), for the pending count
  log / counts    newest-first feedback log (capped) and per-signal-type totals

Scripts run atomically on the server (EVALSHA through redis-py's `register_script`), so
"duplicate?", "accumulate" and "mark" cannot interleave between replicas. Sums use
HINCRBYFLOAT and the weight maximum compares numbers but stores the caller's exact string,
so no value passes through Lua's 14-digit number formatting. Expiry uses the server's clock.
The scripts touch global keys (log, counts, pending) besides the query's, so this store
targets standalone or replicated Redis, not Redis Cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from conduit_sidecar.errors import Unavailable
from conduit_sidecar.feedback.events import FeedbackEvent
from conduit_sidecar.feedback.observation import Accumulators, Contribution
from conduit_sidecar.feedback.stores.base import (
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_TTL_SECONDS,
    Applied,
    FeedbackStore,
    Mark,
    PendingQuery,
    accumulators_from_dict,
    check_history_limit,
    check_ttl,
    decision_from_json,
    decision_to_json,
    event_from_json,
    event_to_json,
    mark_from_json,
    not_found,
)
from conduit_sidecar.query import RoutingDecision

T = TypeVar("T")

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Creates a pending query from a decision. KEYS: q, m, s (or q again: no session), pending.
# ARGV: decision JSON, session id ('' = none), ttl ms, query id.
_CREATE = """
local function create(qkey, mkey, skey, pkey, decision, sid, ttl, qid, now)
  redis.call('DEL', mkey)
  redis.call('HSET', qkey, 'decision', decision, 'sid', sid, 'num', '0', 'den', '0',
             'weight', '0')
  redis.call('PEXPIRE', qkey, ttl)
  -- Expired ids leave the index here (amortised over creations), not only when counted.
  redis.call('ZREMRANGEBYSCORE', pkey, '-inf', now)
  redis.call('ZADD', pkey, now + ttl, qid)
  if sid ~= '' then
    redis.call('SADD', skey, qid)
    if redis.call('PTTL', skey) < ttl then redis.call('PEXPIRE', skey, ttl) end
  end
end
"""

_LOG_DECISION = (
    _NOW_MS
    + _CREATE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
create(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], now)
return 1
"""
)

# KEYS: q, m, s, pending, log, counts.
# ARGV: 1 mark key, 2 signal type, 3 reward, 4 confidence, 5 d_num, 6 d_den, 7 weight cand,
#       8 cost ('' keeps), 9 latency ('' keeps), 10 ttl ms ('' keeps), 11 decision JSON
#       ('' = must exist), 12 session id, 13 query id, 14 history limit,
#       15 attempt id ('' = none), 16 n aliases, 17..16+n aliases (older keys of the same
#       signal), then pairs (signal type, event JSON) to log.
_APPLY = (
    _NOW_MS
    + _CREATE
    + """
local q, m = KEYS[1], KEYS[2]
if redis.call('EXISTS', q) == 0 then
  if ARGV[11] == '' then return {'missing'} end
  create(q, m, KEYS[3], KEYS[4], ARGV[11], ARGV[12], tonumber(ARGV[10]), ARGV[13], now)
end
local b = redis.call('HMGET', q, 'decision', 'num', 'den', 'weight', 'cost', 'lat')
local first = redis.call('HGET', m, ARGV[1])
local n = tonumber(ARGV[16])
for i = 17, 16 + n do
  if first then break end
  first = redis.call('HGET', m, ARGV[i])
end
if first then return {'dup', first, b[1], b[2], b[3], b[4], b[5], b[6]} end
local num = redis.call('HINCRBYFLOAT', q, 'num', ARGV[5])
local den = redis.call('HINCRBYFLOAT', q, 'den', ARGV[6])
local w = b[4]
if tonumber(ARGV[7]) > tonumber(w) then
  w = ARGV[7]
  redis.call('HSET', q, 'weight', w)
end
local cost = b[5]
if ARGV[8] ~= '' then cost = ARGV[8]; redis.call('HSET', q, 'cost', cost) end
local lat = b[6]
if ARGV[9] ~= '' then lat = ARGV[9]; redis.call('HSET', q, 'lat', lat) end
local attempt = nil
if ARGV[15] ~= '' then attempt = ARGV[15] end
local mark = cjson.encode({signal_type = ARGV[2], reward = ARGV[3], confidence = ARGV[4],
  after = {num = num, den = den, weight = w, cost = cost or '', lat = lat or ''},
  before = {num = b[2], den = b[3], weight = b[4], cost = b[5] or '', lat = b[6] or ''},
  attempt = attempt})
redis.call('HSET', m, ARGV[1], mark)
if ARGV[10] ~= '' then
  local ttl = tonumber(ARGV[10])
  redis.call('PEXPIRE', q, ttl)
  redis.call('ZADD', KEYS[4], now + ttl, ARGV[13])
  if ARGV[12] ~= '' and redis.call('PTTL', KEYS[3]) < ttl then
    redis.call('PEXPIRE', KEYS[3], ttl)
  end
end
redis.call('PEXPIRE', m, redis.call('PTTL', q))
for i = 17 + n, #ARGV, 2 do
  redis.call('LPUSH', KEYS[5], ARGV[i + 1])
  redis.call('HINCRBY', KEYS[6], ARGV[i], 1)
end
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[14]) - 1)
return {'ok', mark, b[1], b[2], b[3], b[4], b[5], b[6]}
"""
)

# KEYS: pending. Drops expired entries, returns how many remain.
_PENDING_COUNT = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _before(raw: Sequence[Any]) -> Accumulators:
    num, den, weight, cost, lat = (None if v is None else _text(v) for v in raw)
    return accumulators_from_dict(
        {"num": num, "den": den, "weight": weight, "cost": cost, "lat": lat}
    )


def _mark(raw: Any) -> Mark:
    return mark_from_json(_text(raw))


def _num(value: float) -> str:
    return repr(float(value))


class RedisFeedbackStore(FeedbackStore):
    """Feedback state in Redis; pass a `redis.asyncio.Redis` client (decoding or not).

    `close()` closes that client. Calls beyond `max_concurrency` (default: the client pool's
    size) wait for a free connection rather than fail.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        *,
        prefix: str = "conduit:",
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        max_concurrency: int | None = None,
    ) -> None:
        self.redis = redis
        self.ttl_seconds = check_ttl(ttl_seconds)
        self.prefix = prefix
        self.history_limit = check_history_limit(history_limit)
        self._log_decision = redis.register_script(_LOG_DECISION)
        self._apply = redis.register_script(_APPLY)
        self._pending_count = redis.register_script(_PENDING_COUNT)
        # redis-py's default pool refuses a call ("Too many connections") instead of waiting
        # once every connection is busy; queue here instead, so a burst of feedback waits.
        if max_concurrency is None:
            pool_size = getattr(redis.connection_pool, "max_connections", 50)
            max_concurrency = max(1, min(int(pool_size), 10_000))
        self._slots = asyncio.Semaphore(max_concurrency)

    def _key(self, kind: str, ident: str = "") -> str:
        return f"{self.prefix}{kind}{ident}"

    async def _call(self, what: str, awaitable: Awaitable[T]) -> T:
        try:
            async with self._slots:
                return await awaitable
        except RedisError as exc:
            raise Unavailable(f"Redis feedback store unreachable ({what}): {exc}") from exc
        except OSError as exc:
            raise Unavailable(f"Redis feedback store unreachable ({what}): {exc}") from exc

    def _session_key(self, session_id: str | None, query_id: str) -> str:
        # Scripts need a key in every slot; with no session the query's own key stands in.
        return self._key("s:", session_id) if session_id else self._key("q:", query_id)

    async def initialize(self) -> None:
        await self._call("ping", self.redis.ping())

    async def close(self) -> None:
        await self._call("close", self.redis.aclose())

    async def log_decision(self, decision: RoutingDecision, ttl_s: float) -> bool:
        ttl_ms = max(1, round(check_ttl(ttl_s, "ttl_s") * 1000))
        qid = decision.query_id
        keys = [
            self._key("q:", qid),
            self._key("m:", qid),
            self._session_key(decision.session_id, qid),
            self._key("pending"),
        ]
        args: list[str | int] = [decision_to_json(decision), decision.session_id or "", ttl_ms, qid]
        created = await self._call("log_decision", self._log_decision(keys=keys, args=args))
        return bool(created)

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
        ttl_ms = "" if ttl_s is None else str(max(1, round(check_ttl(ttl_s, "ttl_s") * 1000)))
        if not ttl_ms and create is not None:
            ttl_ms = str(max(1, round(self.ttl_seconds * 1000)))
        session_id = create.session_id if create is not None else None
        if session_id is None and ttl_ms:
            # A TTL refresh must reach the session set too; its id is stored with the query.
            raw = await self._call("apply", self.redis.hget(self._key("q:", query_id), "sid"))
            session_id = _text(raw) if raw else None
        keys = [
            self._key("q:", query_id),
            self._key("m:", query_id),
            self._session_key(session_id, query_id),
            self._key("pending"),
            self._key("log"),
            self._key("counts"),
        ]
        args: list[str | int] = [
            key,
            mark.signal_type,
            _num(mark.reward),
            _num(mark.confidence),
            _num(contribution.quality_num),
            _num(contribution.quality_den),
            _num(contribution.weight),
            "" if contribution.cost_usd is None else _num(contribution.cost_usd),
            "" if contribution.latency_s is None else _num(contribution.latency_s),
            ttl_ms,
            "" if create is None else decision_to_json(create),
            session_id or "",
            query_id,
            self.history_limit,
            mark.attempt or "",
            len(aliases),
            *aliases,
        ]
        for event in events:
            args.extend([event.signal_type, event_to_json(event)])
        reply = await self._call("apply", self._apply(keys=keys, args=args))
        status = _text(reply[0])
        if status == "missing":
            raise not_found(query_id)
        stored = _mark(reply[1])
        decision = decision_from_json(_text(reply[2]))
        before = _before(reply[3:8])
        if status == "dup":
            return Applied(decision, before, before, True, stored)
        assert stored.after is not None  # the script always records the state after
        return Applied(decision, before, stored.after, False, stored)

    async def read_mark(self, query_id: str, key: str) -> Mark | None:
        # m:{query_id} expires with q:{query_id} and is deleted when the id is reused.
        raw = await self._call("read_mark", self.redis.hget(self._key("m:", query_id), key))
        return None if raw is None else _mark(raw)

    async def get(self, query_id: str) -> PendingQuery | None:
        qkey = self._key("q:", query_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(qkey, ["decision", "num", "den", "weight", "cost", "lat"])
            pipe.pttl(qkey)
            raw, pttl = await self._call("get", pipe.execute())
        if raw[0] is None or pttl is None or int(pttl) < 0:
            return None
        time_s, time_us = await self._call("get", self.redis.time())
        now = float(time_s) + float(time_us) / 1e6
        return PendingQuery(decision_from_json(_text(raw[0])), _before(raw[1:]), now + pttl / 1000)

    async def session_query_ids(self, session_id: str) -> list[str]:
        skey = self._key("s:", session_id)
        members = sorted(_text(m) for m in await self._call("session", self.redis.smembers(skey)))
        if not members:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for qid in members:
                pipe.hget(self._key("q:", qid), "decision")
            decisions = await self._call("session", pipe.execute())
        live = []
        stale = []
        for qid, raw in zip(members, decisions, strict=True):
            if raw is None:
                stale.append(qid)
            else:
                live.append((decision_from_json(_text(raw)).created_at, qid))
        if stale:
            await self._call("session", self.redis.srem(skey, *stale))
        return [qid for _, qid in sorted(live)]

    async def pending_count(self) -> int:
        count = await self._call("pending_count", self._pending_count(keys=[self._key("pending")]))
        return int(count)

    async def recent_events(self, limit: int) -> list[FeedbackEvent]:
        if limit <= 0:
            return []
        raw = await self._call("recent", self.redis.lrange(self._key("log"), 0, limit - 1))
        return [event_from_json(_text(r)) for r in raw]

    async def signal_counts(self) -> dict[str, int]:
        raw = await self._call("counts", self.redis.hgetall(self._key("counts")))
        return {_text(k): int(v) for k, v in raw.items()}
