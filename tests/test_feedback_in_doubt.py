"""Writes in doubt: a store write whose answer never reached the collector (a timeout, a lost
commit acknowledgement) but which the store carried out anyway.

The policy never received that write's delta, and the client's retry finds the write's mark.
The retry must then apply the delta once (not answer a bare duplicate and lose the signal),
and a retry of a write that WAS applied must stay a plain duplicate. Both stalls are real:
Redis busy with a slow script on another connection (it runs the timed-out script when it
gets to it; a private redis-server, so the stall reaches no other test), and PostgreSQL
behind a TCP relay that lets a COMMIT through and drops the server's reply.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from net_relay import CommitReplyDropper, postgres_store_behind
from redis.asyncio import Redis
from sync_cluster import BUSY_SCRIPT

from conduit_sidecar import Query, Router, RoutingDecision
from conduit_sidecar.errors import Unavailable
from conduit_sidecar.feedback import (
    FeedbackCollector,
    FeedbackEvent,
    FeedbackStore,
    PostgresFeedbackStore,
    RedisFeedbackStore,
    SessionFeedback,
    SqliteFeedbackStore,
    builtin_adapters,
)
from conduit_sidecar.feedback.observation import observation
from conduit_sidecar.feedback.stores import in_doubt
from conduit_sidecar.feedback.stores.base import PendingQuery
from conduit_sidecar.feedback.stores.in_doubt import InDoubtWrites
from tests.conftest import POSTGRES_URL, StoreFactory

MODELS = ["a", "b"]


def _learned(router: Router) -> tuple[float, float, int]:
    stats = router.policy.arm_stats()
    return (
        sum(s.weight_sum for s in stats.values()),
        sum(s.reward_sum for s in stats.values()),
        sum(s.updates for s in stats.values()),
    )


@pytest.fixture
async def redis_stalling(private_redis: str) -> AsyncIterator[tuple[RedisFeedbackStore, Redis]]:
    prefix = f"conduit-test-{uuid.uuid4().hex[:12]}:"
    # The store's command timeout, shortened so a 1 s stall outlasts it.
    store = RedisFeedbackStore(Redis.from_url(private_redis, socket_timeout=0.3), prefix=prefix)
    admin = Redis.from_url(private_redis)
    await admin.ping()  # connected: its busy script goes out at once when sent
    try:
        yield store, admin
    finally:
        await store.close()
        keys = [k async for k in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


@pytest.fixture
async def postgres_dropping() -> AsyncIterator[tuple[PostgresFeedbackStore, CommitReplyDropper]]:
    relay = CommitReplyDropper.to(POSTGRES_URL)
    async with postgres_store_behind(relay, POSTGRES_URL, command_timeout_s=1.0) as store:
        yield store, relay


async def _stall_redis(admin: Redis) -> asyncio.Future[object]:
    busy = asyncio.ensure_future(admin.eval(BUSY_SCRIPT, 0, 1_000_000))  # type: ignore[misc]
    await asyncio.sleep(0.05)  # sent first: the server is in the script from here on
    return busy


async def _record_during_stall(
    admin: Redis, collector: FeedbackCollector, event: FeedbackEvent
) -> None:
    """Records `event` while the Redis server is busy: the call times out, and the server
    runs the timed-out script right after the stall (awaited here)."""
    busy = await _stall_redis(admin)
    with pytest.raises(Unavailable):
        await collector.record(event)
    await busy


def _collector(store: FeedbackStore) -> tuple[Router, FeedbackCollector]:
    router = Router(models=MODELS, feature_dim=16)
    return router, FeedbackCollector(router, store, adapters=builtin_adapters())


async def _tracked(
    store: FeedbackStore, text: str, session_id: str | None = None
) -> tuple[Router, FeedbackCollector, RoutingDecision]:
    """A router and its collector on `store`, and one of its decisions, tracked."""
    router, collector = _collector(store)
    decision = await router.route(Query(text=text, session_id=session_id))
    await collector.track(decision)
    return router, collector, decision


def _thumbs_up(decision: RoutingDecision) -> FeedbackEvent:
    return FeedbackEvent(decision.query_id, "thumbs", {"value": "up"})


async def _check_learned_once_after_retry(
    store: FeedbackStore, collector: FeedbackCollector, router: Router, event: FeedbackEvent
) -> None:
    pending = await store.get(event.query_id)
    assert pending is not None
    assert pending.accumulators.quality_den == 1.0  # the store recorded the signal...
    assert _learned(router) == (0.0, 0.0, 0)  # ...the policy never heard of it
    result = await collector.record(event)  # the client's retry
    assert not result.duplicate  # this call is the one that made the signal count
    expected = observation(pending.accumulators, pending.decision.reward_weights)
    assert expected is not None
    assert (result.applied_reward, result.applied_weight) == expected
    assert _learned(router) == (expected[1], expected[0] * expected[1], 1)
    again = await collector.record(event)  # a further retry changes nothing
    assert again.duplicate
    assert _learned(router) == (expected[1], expected[0] * expected[1], 1)


async def test_redis_write_run_after_its_timeout_is_learned_once_on_retry(
    redis_stalling: tuple[RedisFeedbackStore, Redis],
) -> None:
    store, admin = redis_stalling
    router, collector, decision = await _tracked(store, "stalled")
    event = _thumbs_up(decision)
    await _record_during_stall(admin, collector, event)
    await _check_learned_once_after_retry(store, collector, router, event)


async def test_postgres_commit_whose_acknowledgement_was_lost_is_learned_once_on_retry(
    postgres_dropping: tuple[PostgresFeedbackStore, CommitReplyDropper],
) -> None:
    store, relay = postgres_dropping
    router, collector, decision = await _tracked(store, "lost ack")
    event = _thumbs_up(decision)
    relay.armed.set()
    with pytest.raises(Unavailable):
        await collector.record(event)
    assert not relay.armed.is_set()  # the COMMIT went through the relay
    await _check_learned_once_after_retry(store, collector, router, event)


async def test_a_retry_of_a_write_that_was_applied_stays_a_duplicate(
    redis_stalling: tuple[RedisFeedbackStore, Redis],
) -> None:
    store, _ = redis_stalling
    router, collector, decision = await _tracked(store, "fine", session_id="s-1")
    event = _thumbs_up(decision)
    first = await collector.record(event)
    learned = _learned(router)
    assert learned[2] == 1 and not first.duplicate
    # Another collector (a second replica, or this one restarted) sees the same marks.
    other = FeedbackCollector(router, store, adapters=builtin_adapters())
    for retry_collector in (collector, other):
        assert (await retry_collector.record(event)).duplicate
    session = SessionFeedback("s-1", "rating", {"rating": 4})
    await collector.record_session_feedback(session)
    learned = _learned(router)
    for retry_collector in (collector, other):
        [again] = await retry_collector.record_session_feedback(session)
        assert again.duplicate
    assert _learned(router) == learned


async def test_a_write_in_doubt_whose_retry_reached_another_replica_is_settled_by_its_writer(
    redis_stalling: tuple[RedisFeedbackStore, Redis],
) -> None:
    store, admin = redis_stalling
    router, collector = _collector(store)
    _, replica = _collector(store)
    # In a session: Track then sends its script at once (no lookup of the session first).
    decision = await router.route(Query(text="stalled", session_id="s-1"))
    await collector.log_decision(decision)
    # A Track given the decision first reads the pending one (is it this decision?); the
    # stall starts right after that read, so the script is what meets it. Only the timing
    # is the test's: the stall is the real server's.
    read_pending = store.get
    stalls: list[asyncio.Future[object]] = []

    async def read_then_stall(query_id: str) -> PendingQuery | None:
        pending = await read_pending(query_id)
        stalls.append(await _stall_redis(admin))
        return pending

    store.get = read_then_stall  # type: ignore[method-assign]
    try:
        with pytest.raises(Unavailable):
            await collector.track(decision, cost=0.002, latency=1.5, error=True)
    finally:
        del store.get
    await stalls[0]
    assert len(collector.in_doubt) == 1
    # The client's retry lands on another replica: a plain duplicate there (the other
    # replica cannot know whether the writer applied it), and nothing learned anywhere.
    await replica.track(decision, cost=0.002, latency=1.5, error=True)
    assert _learned(router) == (0.0, 0.0, 0)
    # The writer settles it as soon as the store answers: once.
    assert await collector.resolve_in_doubt() == 1
    assert len(collector.in_doubt) == 0
    assert _learned(router)[0] == pytest.approx(0.8) and _learned(router)[2] == 1
    assert router.stats()[decision.selected_model].outcomes == 1  # its outcome counted once
    assert await collector.resolve_in_doubt() == 0
    assert _learned(router)[2] == 1


async def test_writes_in_doubt_are_settled_after_the_next_write_that_works(
    redis_stalling: tuple[RedisFeedbackStore, Redis],
) -> None:
    store, admin = redis_stalling
    router, collector = _collector(store)
    first, second = [await router.route(Query(text=f"turn {i}")) for i in range(2)]
    for decision in (first, second):
        await collector.track(decision)
    await _record_during_stall(admin, collector, _thumbs_up(first))
    # No retry of that one; the next write works and the check follows in the background.
    await collector.record(FeedbackEvent(second.query_id, "thumbs", {"value": "down"}))
    assert await collector.settle(5.0) == 0
    assert len(collector.in_doubt) == 0
    assert _learned(router)[2] == 2


async def test_a_route_settles_writes_in_doubt_too(
    redis_stalling: tuple[RedisFeedbackStore, Redis],
) -> None:
    store, admin = redis_stalling
    router, collector, decision = await _tracked(store, "stalled")
    rating = FeedbackEvent(decision.query_id, "rating", {"rating": 5})
    await _record_during_stall(admin, collector, rating)
    # Only Routes after the stall (the sidecar logs each decision): they settle it.
    await collector.log_decision(await router.route(Query(text="next")))
    assert await collector.settle(5.0) == 0
    assert len(collector.in_doubt) == 0 and _learned(router)[2] == 1


async def test_a_write_that_never_reached_the_store_stays_unapplied(
    redis_stalling: tuple[RedisFeedbackStore, Redis],
) -> None:
    store, _ = redis_stalling
    router, _, decision = await _tracked(store, "refused")
    event = _thumbs_up(decision)
    # A store that refuses connections (a closed port): the write never happens.
    down = RedisFeedbackStore(
        Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2),
        prefix=store.prefix,
    )
    offline = FeedbackCollector(router, down, adapters=builtin_adapters())
    with pytest.raises(Unavailable):
        await offline.record(event)
    await down.close()
    offline.store = store  # the server is reachable again
    assert await offline.resolve_in_doubt() == 0
    assert len(offline.in_doubt) == 1  # no mark: it stays in doubt (it might still land)
    result = await offline.record(event)  # the retry is a first write, applied normally
    assert not result.duplicate and _learned(router)[2] == 1
    assert await offline.resolve_in_doubt() == 0
    assert len(offline.in_doubt) == 0  # the key holds the retry's mark: forgotten
    assert await offline.settle(5.0) == 0  # the check the retry started in the background
    assert _learned(router)[2] == 1


# What the previous version stored as marks (no `before`, no `attempt`): Redis's script wrote
# the numbers as strings, the SQL stores wrote mark_to_json's numbers.
OLD_REDIS_MARK = (
    '{"signal_type":"thumbs","reward":"1.0","confidence":"1.0",'
    '"after":{"num":"1","den":"1","weight":"1.0","cost":"","lat":""}}'
)
OLD_SQL_MARK = (
    '{"signal_type":"thumbs","reward":1.0,"confidence":1.0,'
    '"after":{"num":1.0,"den":1.0,"weight":1.0,"cost":null,"lat":null}}'
)


async def _store_old_mark(store: FeedbackStore, query_id: str, key: str) -> None:
    if isinstance(store, RedisFeedbackStore):
        await store.redis.hset(f"{store.prefix}m:{query_id}", key, OLD_REDIS_MARK)  # type: ignore[misc]
    elif isinstance(store, PostgresFeedbackStore):
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(
                f"UPDATE {store.schema}.marks SET mark = $3 WHERE query_id = $1 AND key = $2",
                query_id,
                key,
                OLD_SQL_MARK,
            )
        finally:
            await conn.close()
    else:
        assert isinstance(store, SqliteFeedbackStore)
        await store.writer.call(
            lambda conn: conn.execute(
                "UPDATE marks SET mark = ? WHERE query_id = ? AND key = ?",
                (OLD_SQL_MARK, query_id, key),
            ),
            write=True,
        )


async def test_marks_stored_by_the_previous_version_are_read_and_stay_duplicates(
    durable_store_factory: StoreFactory,
) -> None:
    store = await durable_store_factory.open()
    router, collector, decision = await _tracked(store, "upgraded")
    event = _thumbs_up(decision)
    await collector.record(event)
    await _store_old_mark(store, decision.query_id, "signal:thumbs")
    old = await store.read_mark(decision.query_id, "signal:thumbs")
    assert old is not None and old.attempt is None and old.before is None
    assert old.after is not None and old.after.quality_den == 1.0
    learned = _learned(router)
    # A retry (even by a collector with writes in doubt for that key) is a plain duplicate.
    collector.in_doubt.add("0" * 24, decision.query_id, "signal:thumbs", None)
    again = await collector.record(event)
    assert again.duplicate and again.reward == 1.0 and again.applied_weight == 1.0
    assert _learned(router) == learned
    # Further signals for the query apply on top of what the old version stored.
    rating = await collector.record(FeedbackEvent(decision.query_id, "rating", {"rating": 1}))
    assert not rating.duplicate and _learned(router)[2] == 1
    pending = await store.get(decision.query_id)
    assert pending is not None and pending.accumulators.quality_den == 2.0


def test_the_ledger_is_bounded_in_size_and_age(monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = InDoubtWrites(limit=3)
    for i in range(5):
        ledger.add(f"attempt-{i}", f"q-{i}", "track", None)
    assert [a for a, _ in ledger.oldest(10)] == ["attempt-2", "attempt-3", "attempt-4"]
    ledger.postpone("attempt-2")
    assert [a for a, _ in ledger.oldest(2)] == ["attempt-3", "attempt-4"]
    monkeypatch.setattr(in_doubt, "MAX_DOUBT_AGE_S", 0.0)
    assert ledger.oldest(10) == [] and len(ledger) == 0


async def test_a_failed_sqlite_write_is_not_in_doubt(tmp_path: Path) -> None:
    # SQLite's group commit stores nothing of a batch that failed: no doubt to settle.
    (tmp_path / "feedback.db").mkdir()  # a directory where the database file should be
    store = SqliteFeedbackStore(tmp_path / "feedback.db")
    router, collector = _collector(store)
    with pytest.raises(Unavailable):
        await collector.track(await router.route(Query(text="nowhere")))
    assert len(collector.in_doubt) == 0
    await store.close()
