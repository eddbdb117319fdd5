"""Backend-specific store behaviour, beyond the shared contract in tests/test_stores.py:
the memory store's size bound, refusals when a server is unreachable, Redis clients that
decode responses, concurrent PostgreSQL initialisation."""

from __future__ import annotations

import asyncio
import dataclasses
import tracemalloc
import uuid
from pathlib import Path

import pytest

from conduit_sidecar.errors import NotFound, Unavailable
from conduit_sidecar.feedback import (
    FeedbackEvent,
    FeedbackStore,
    InMemoryFeedbackStore,
    PostgresFeedbackStore,
    RedisFeedbackStore,
    SqliteFeedbackStore,
)
from conduit_sidecar.feedback.observation import Contribution
from conduit_sidecar.feedback.stores.base import Mark
from tests.test_stores import make_collector, routed


async def test_memory_store_is_bounded_and_evicts_oldest_first() -> None:
    store = InMemoryFeedbackStore(max_pending=5)
    collector = make_collector(store)
    decisions = [await routed(collector, f"query {i}") for i in range(8)]
    for decision in decisions:
        await collector.track(decision, cost=0.001)
    assert await collector.get_pending_count() == 5
    assert store.evicted == 3
    for decision in decisions[:3]:
        with pytest.raises(NotFound):
            await collector.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
    for decision in decisions[3:]:
        await collector.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
    with pytest.raises(ValueError, match="max_pending"):
        InMemoryFeedbackStore(max_pending=0)


async def test_memory_store_memory_stays_bounded_while_it_evicts() -> None:
    # An evicted query used to leave its expiry item (a tuple holding its id) behind until
    # its old expiry time, an hour by default: memory grew with the rate of Routes, not
    # with max_pending (about 190 bytes per evicted query, 3.8 MB for the 20,000 here).
    store = InMemoryFeedbackStore(max_pending=50)
    template = await routed(make_collector(store))
    for i in range(1_000):
        await store.log_decision(dataclasses.replace(template, query_id=f"warm-{i}"), 3600.0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):
            await store.log_decision(dataclasses.replace(template, query_id=f"q-{i}"), 3600.0)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 250_000, grown
    assert await store.pending_count() == 50 and store.evicted == 20_950
    # Expiry still works on the rebuilt index: short-lived entries go, the others stay.
    for i in range(10):
        await store.log_decision(dataclasses.replace(template, query_id=f"short-{i}"), 0.05)
    track = Contribution.signals([(1.0, 1.0)])
    await store.apply("q-19999", "track", track, Mark("track", 1.0, 1.0), ttl_s=0.05)
    await asyncio.sleep(0.1)
    assert await store.pending_count() == 39
    assert await store.get("short-0") is None and await store.get("q-19999") is None
    assert await store.get("q-19998") is not None


def unreachable_store(backend: str, tmp_path: object) -> FeedbackStore:
    # Port 9 (discard) has no listener on this machine: a real refused connection.
    if backend == "redis":
        from redis.asyncio import Redis

        return RedisFeedbackStore(Redis.from_url("redis://127.0.0.1:9/0"))
    if backend == "postgres":
        return PostgresFeedbackStore(
            database_url="postgresql://conduit@127.0.0.1:9/none", connect_timeout_s=2.0
        )
    return SqliteFeedbackStore(f"{tmp_path}/missing-dir/feedback.db")


@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgres"])
async def test_an_unreachable_store_raises_unavailable(backend: str, tmp_path: object) -> None:
    store = unreachable_store(backend, tmp_path)
    collector = make_collector(store)
    decision = await routed(collector)
    with pytest.raises(Unavailable) as info:
        await collector.track(decision, cost=0.001)
    assert "feedback store unreachable" in str(info.value)
    assert {"sqlite": "SQLite", "redis": "Redis", "postgres": "PostgreSQL"}[backend] in str(
        info.value
    )
    with pytest.raises(Unavailable):
        await collector.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
    await store.close()


async def test_a_hung_postgresql_is_unavailable_within_the_command_timeout(
    postgres_url: str,
) -> None:
    # A server that keeps the connection open and never answers (a hang or a partition,
    # through a relay that stops forwarding): log_decision used to wait forever, and Route
    # with it until the client's deadline.
    from urllib.parse import urlsplit

    from net_relay import FreezableRelay

    url = urlsplit(postgres_url)
    relay = FreezableRelay(url.hostname or "127.0.0.1", url.port or 5432)
    relayed = url._replace(netloc=f"{url.username}@127.0.0.1:{relay.port}").geturl()
    schema = f"conduit_test_{uuid.uuid4().hex[:12]}"
    store = PostgresFeedbackStore(database_url=relayed, schema=schema, command_timeout_s=1.0)
    try:
        await store.initialize()
        collector = make_collector(store)
        await collector.log_decision(await routed(collector))
        relay.frozen.set()
        decision = await routed(collector)
        started = asyncio.get_running_loop().time()
        with pytest.raises(Unavailable):
            await asyncio.wait_for(collector.log_decision(decision), timeout=30)
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        relay.close()  # the stalled connections fail at once, so close() does not wait
        await store.close()
        import asyncpg

        conn = await asyncpg.connect(postgres_url)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def test_redis_store_accepts_a_decoding_client(redis_url: str) -> None:
    from redis.asyncio import Redis

    prefix = f"conduit-test-{uuid.uuid4().hex[:12]}:"
    store = RedisFeedbackStore(Redis.from_url(redis_url, decode_responses=True), prefix=prefix)
    try:
        collector = make_collector(store)
        decision = await routed(collector, session_id="s")
        await collector.track(decision, cost=0.001, latency=0.2)
        result = await collector.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
        assert result.applied_weight == 1.0
        assert await store.session_query_ids("s") == [decision.query_id]
        assert (await collector.get_recent_feedback())[0].payload == {"value": "up"}
    finally:
        keys = [k async for k in store.redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await store.redis.delete(*keys)
        await store.close()


async def test_postgres_initialize_is_idempotent_and_safe_concurrently(
    postgres_url: str,
) -> None:
    schema = f"conduit_test_{uuid.uuid4().hex[:12]}"
    stores = [PostgresFeedbackStore(database_url=postgres_url, schema=schema) for _ in range(3)]
    try:
        await asyncio.gather(*(s.initialize() for s in stores))
        await stores[0].initialize()
        assert await stores[1].pending_count() == 0
    finally:
        for s in stores:
            await s.close()
        import asyncpg

        conn = await asyncpg.connect(postgres_url)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
    with pytest.raises(ValueError, match="schema"):
        PostgresFeedbackStore(database_url=postgres_url, schema="bad; DROP TABLE x")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_sql_stores_purge_expired_entries_and_trim_the_log(
    backend: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, postgres_url: str
) -> None:
    from conduit_sidecar.feedback.stores import postgres, sqlite

    monkeypatch.setattr(sqlite, "_PURGE_EVERY", 1)
    monkeypatch.setattr(postgres, "_PURGE_EVERY", 1)
    schema = f"conduit_test_{uuid.uuid4().hex[:12]}"
    store: FeedbackStore
    if backend == "sqlite":
        store = SqliteFeedbackStore(tmp_path / "f.db", history_limit=2)
    else:
        store = PostgresFeedbackStore(database_url=postgres_url, schema=schema, history_limit=2)
    try:
        collector = make_collector(store)
        old = await routed(collector, "old")
        await collector.track(old, ttl_seconds=0.5)
        await collector.record(FeedbackEvent(old.query_id, "thumbs", {"value": "up"}))
        await asyncio.sleep(0.7)
        fresh = await routed(collector, "fresh")
        await collector.track(fresh)
        for key in "abc":
            await collector.record(
                FeedbackEvent(fresh.query_id, "thumbs", {"value": "up"}, idempotency_key=key)
            )
        rows = await raw_rows(store)
        assert rows == {"queries": 1, "marks": 4, "feedback_log": 2}  # marks: track + 3 keys
        # The expired id can be tracked again from scratch: its old marks are gone.
        await collector.track(old)
        again = await collector.record(FeedbackEvent(old.query_id, "thumbs", {"value": "up"}))
        assert not again.duplicate
    finally:
        await store.close()
        if backend == "postgres":
            import asyncpg

            conn = await asyncpg.connect(postgres_url)
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.close()


async def raw_rows(store: FeedbackStore) -> dict[str, int]:
    tables = ("queries", "marks", "feedback_log")
    if isinstance(store, SqliteFeedbackStore):
        import sqlite3

        conn = sqlite3.connect(store.path)
        try:
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
        finally:
            conn.close()
    assert isinstance(store, PostgresFeedbackStore)
    import asyncpg

    pg = await asyncpg.connect(store.database_url)
    try:
        return {t: await pg.fetchval(f"SELECT count(*) FROM {store.schema}.{t}") for t in tables}
    finally:
        await pg.close()
