"""One contract suite for every feedback store: memory, SQLite, Redis and PostgreSQL.

Each test runs once per backend (`store_factory` in conftest.py) against real servers on
loopback. The policy is a real Router, so "applied exactly once" is checked where it matters:
in the bandit's own statistics.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from conduit_sidecar import Query, Router
from conduit_sidecar.errors import InvalidArgument, NotFound
from conduit_sidecar.feedback import (
    FeedbackAdapter,
    FeedbackCollector,
    FeedbackEvent,
    FeedbackStore,
    RewardMapping,
    SessionFeedback,
    builtin_adapters,
)
from conduit_sidecar.feedback.observation import observation
from conduit_sidecar.query import RoutingDecision
from tests.conftest import StoreFactory

MODELS = ["cheap-model", "mid-model", "strong-model"]


def make_router() -> Router:
    return Router(models=MODELS, feature_dim=16)


def make_collector(store: FeedbackStore, router: Router | None = None) -> FeedbackCollector:
    return FeedbackCollector(router or make_router(), store, adapters=builtin_adapters())


async def routed(
    collector: FeedbackCollector, text: str = "What is Python?", **kwargs: object
) -> RoutingDecision:
    router = collector.router
    assert isinstance(router, Router)
    return await router.route(Query(text=text, **kwargs))  # type: ignore[arg-type]


def arm(collector: FeedbackCollector, model_id: str) -> tuple[float, float, int]:
    router = collector.router
    assert isinstance(router, Router)
    stats = router.policy.arm_stats()[model_id]
    return stats.weight_sum, stats.reward_sum, stats.updates


def policy_version(collector: FeedbackCollector) -> int:
    router = collector.router
    assert isinstance(router, Router)
    return router.policy.version


async def test_200_concurrent_identical_records_apply_exactly_once(store: FeedbackStore) -> None:
    collector = make_collector(store)
    decision = await routed(collector)
    await collector.track(decision, cost=0.001, latency=0.5)
    version = policy_version(collector)
    event = {"query_id": decision.query_id, "signal_type": "thumbs", "payload": {"value": "up"}}

    results = await asyncio.gather(
        *(collector.record(FeedbackEvent(**event)) for _ in range(200))  # type: ignore[arg-type]
    )

    assert sum(not r.duplicate for r in results) == 1
    assert {(r.reward, r.confidence, r.applied_reward) for r in results} == {
        (results[0].reward, 1.0, results[0].applied_reward)
    }
    weight_sum, _, updates = arm(collector, decision.selected_model)
    assert (weight_sum, updates) == (1.0, 1)
    assert policy_version(collector) == version + 1
    assert await collector.feedback_counts() == {"thumbs": 1}
    assert len(await collector.get_recent_feedback(500)) == 1


async def test_concurrent_different_signals_all_land_exactly(store: FeedbackStore) -> None:
    collector = make_collector(store)
    decision = await routed(collector)
    await collector.track(decision, cost=0.002, latency=1.0)
    qid = decision.query_id
    events = [
        FeedbackEvent(qid, "thumbs", {"value": "up"}),
        FeedbackEvent(qid, "rating", {"rating": 2}),
        FeedbackEvent(qid, "task_success", {"success": False}),
        FeedbackEvent(qid, "regeneration", {"regenerated": True}),
        FeedbackEvent(qid, "quality_score", {"score": 0.9}),
        FeedbackEvent(qid, "thumbs", {"value": "down"}, idempotency_key="second-reaction"),
    ]
    results = await asyncio.gather(*(collector.record(e) for e in events))
    assert not any(r.duplicate for r in results)

    # The blend a sequential process would reach: sum c*q / sum c, weight max c.
    pairs = [(1.0, 1.0), (0.25, 1.0), (0.0, 0.8), (0.0, 0.8), (0.9, 1.0), (0.0, 1.0)]
    blend = sum(q * c for q, c in pairs) / sum(c for _, c in pairs)
    from conduit_sidecar.reward import compose_reward

    expected = compose_reward(decision.reward_weights, blend, 0.002, 1.0)
    weight_sum, reward_sum, _ = arm(collector, decision.selected_model)
    assert weight_sum == pytest.approx(1.0, abs=1e-12)
    assert reward_sum == pytest.approx(expected, abs=1e-9)
    pending = await store.get(qid)
    assert pending is not None
    assert observation(pending.accumulators, decision.reward_weights) == pytest.approx(
        (expected, 1.0), abs=1e-12
    )
    assert sum((await collector.feedback_counts()).values()) == 6


async def test_pending_queries_expire_after_their_ttl(store_factory: StoreFactory) -> None:
    store = await store_factory.open(ttl_seconds=1.5)
    collector = make_collector(store)
    short = await routed(collector, "short")
    default = await routed(collector, "default")
    await collector.track(short, ttl_seconds=0.6)
    await collector.track(default)  # the store's TTL (1.5 s)
    long = await routed(collector, "long")
    await collector.log_decision(long, ttl_seconds=30)
    assert await collector.get_pending_count() == 3
    await asyncio.sleep(0.8)
    with pytest.raises(ValueError, match=short.query_id):
        await collector.record(FeedbackEvent(short.query_id, "thumbs", {"value": "up"}))
    await collector.record(FeedbackEvent(default.query_id, "thumbs", {"value": "up"}))
    await asyncio.sleep(1.0)
    with pytest.raises(NotFound) as info:
        await collector.record(FeedbackEvent(default.query_id, "rating", {"rating": 5}))
    assert info.value.query_id == default.query_id
    assert await collector.get_pending_count() == 1
    await collector.record(FeedbackEvent(long.query_id, "thumbs", {"value": "down"}))


async def test_a_track_call_restarts_the_ttl(store_factory: StoreFactory) -> None:
    collector = make_collector(await store_factory.open())
    decision = await routed(collector)
    await collector.log_decision(decision, ttl_seconds=1.0)
    await collector.track(decision.query_id, cost=0.001, ttl_seconds=30)
    await asyncio.sleep(1.3)
    result = await collector.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
    assert not result.duplicate


async def test_session_feedback_reaches_pending_queries_of_that_session_once(
    store: FeedbackStore,
) -> None:
    collector = make_collector(store)
    in_session = [await routed(collector, f"turn {i}", session_id="s-1") for i in range(3)]
    other = await routed(collector, "elsewhere", session_id="s-2")
    for decision in [*in_session, other]:
        await collector.track(decision, cost=0.001, latency=0.4)
    assert await store.session_query_ids("s-1") == [d.query_id for d in in_session]

    feedback = SessionFeedback("s-1", "rating", {"rating": 5}, propagation_weight=0.5)
    results = await collector.record_session_feedback(feedback)
    assert [r.query_id for r in results] == [d.query_id for d in in_session]
    assert all((r.reward, r.confidence, r.duplicate) == (1.0, 0.5, False) for r in results)
    again = await collector.record_session_feedback(feedback)
    assert all(r.duplicate for r in again)
    assert await store.get(other.query_id) is not None
    untouched = await store.get(other.query_id)
    assert untouched is not None and untouched.accumulators.quality_den == 0.0
    # Per-query feedback still counts on top of the session's (a different signal).
    direct = await collector.record(FeedbackEvent(in_session[0].query_id, "rating", {"rating": 1}))
    assert not direct.duplicate and direct.applied_weight == 1.0
    with pytest.raises(NotFound, match="s-unknown"):
        await collector.record_session_feedback(SessionFeedback("s-unknown", "thumbs"))


async def test_durable_backends_survive_a_reopen(durable_store_factory: StoreFactory) -> None:
    router = make_router()
    first = make_collector(await durable_store_factory.open(), router)
    decision = await routed(first, session_id="s-durable")
    await first.track(decision, cost=0.003, latency=2.0)
    recorded = await first.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
    await first.store.close()

    second = make_collector(await durable_store_factory.open(), router)
    assert await second.get_pending_count() == 1
    pending = await second.store.get(decision.query_id)
    assert pending is not None
    assert pending.decision == decision
    assert pending.accumulators.cost_usd == 0.003
    again = await second.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
    assert again.duplicate and again.applied_reward == recorded.applied_reward
    assert await second.store.session_query_ids("s-durable") == [decision.query_id]
    assert await second.feedback_counts() == {"thumbs": 1}
    assert [e.signal_type for e in await second.get_recent_feedback()] == ["thumbs"]


class EngagementAdapter(FeedbackAdapter):
    """A weak implicit signal (spec: confidence 0.5), e.g. time spent reading the answer."""

    @property
    def signal_type(self) -> str:
        return "engagement"

    def to_reward(self, event: FeedbackEvent) -> RewardMapping:
        return RewardMapping(reward=0.0 if event.payload["seconds"] < 5 else 1.0, confidence=0.5)


async def test_low_confidence_moves_the_policy_less(store_factory: StoreFactory) -> None:
    moves = []
    for signal_type, payload in (("thumbs", {"value": "down"}), ("engagement", {"seconds": 1})):
        collector = make_collector(await store_factory.open())
        collector.register_adapter(EngagementAdapter())
        decision = await routed(collector, "How do I sort a list?")
        await collector.track(decision, cost=0.001, latency=0.3)
        x = np.asarray(decision.features)
        model = decision.selected_model
        before = collector.router.policy.select(x).scores[model]  # type: ignore[attr-defined]
        result = await collector.record(FeedbackEvent(decision.query_id, signal_type, payload))
        after = collector.router.policy.select(x).scores[model]  # type: ignore[attr-defined]
        assert result.reward == 0.0
        assert arm(collector, model)[0] == result.confidence
        moves.append((result.confidence, before - after))
    (c_strong, move_strong), (c_weak, move_weak) = moves
    assert (c_strong, c_weak) == (1.0, 0.5)
    assert 0.0 < move_weak < move_strong


async def test_influence_of_one_query_is_bounded(store: FeedbackStore) -> None:
    collector = make_collector(store)
    decision = await routed(collector, session_id="s-bounded")
    await collector.track(decision, cost=0.001, latency=0.5, error=True, retries=2)
    qid = decision.query_id
    for i in range(30):
        await collector.record(
            FeedbackEvent(qid, "thumbs", {"value": "up"}, idempotency_key=f"click-{i}")
        )
        await collector.record(
            FeedbackEvent(qid, "rating", {"rating": 5}, idempotency_key=f"rate-{i}")
        )
        await collector.record_session_feedback(
            SessionFeedback("s-bounded", "quality_score", {"score": 1.0}, idempotency_key=str(i))
        )
    weight_sum, reward_sum, _ = arm(collector, decision.selected_model)
    assert weight_sum == pytest.approx(1.0, abs=1e-12)
    assert 0.0 < reward_sum <= 1.0
    pending = await store.get(qid)
    assert pending is not None and pending.accumulators.weight == 1.0


async def test_every_error_leaves_recorded_state_intact(store: FeedbackStore) -> None:
    collector = make_collector(store)
    decision = await routed(collector)
    qid = decision.query_id
    await collector.track(decision, cost=0.001, latency=0.5)
    await collector.record(FeedbackEvent(qid, "thumbs", {"value": "up"}))
    snapshot = await store.get(qid)
    stats = arm(collector, decision.selected_model)
    version = policy_version(collector)
    history = await collector.get_recent_feedback()

    bad: list[tuple[FeedbackEvent, str]] = [
        (FeedbackEvent(qid, "rating", {"rating": 7}), "payload.rating"),
        (FeedbackEvent(qid, "rating", {"stars": 4}), "payload.rating"),
        (FeedbackEvent(qid, "rating", {"rating": "5"}), "payload.rating"),
        (FeedbackEvent(qid, "quality_score", {"score": math.nan}), "payload"),
        (FeedbackEvent(qid, "quality_score", {"score": 1.5}), "payload.score"),
        (FeedbackEvent(qid, "task_success", {"success": "yes"}), "payload.success"),
        (FeedbackEvent(qid, "thumbs", {"value": "sideways"}), "payload.value"),
        (FeedbackEvent(qid, "conversion", {"converted": True}), "signal_type"),
        (FeedbackEvent("", "thumbs", {"value": "up"}), "query_id"),
    ]
    for event, field_name in bad:
        with pytest.raises(InvalidArgument) as info:
            await collector.record(event)
        assert info.value.field == field_name
        assert field_name in str(info.value)
    with pytest.raises(NotFound, match="no-such-query"):
        await collector.record(FeedbackEvent("no-such-query", "thumbs", {"value": "up"}))
    with pytest.raises(InvalidArgument, match="cost_usd"):
        await collector.track(qid, cost=-1.0)
    with pytest.raises(InvalidArgument, match="retries"):
        await collector.track(qid, retries=-2)

    now = await store.get(qid)
    assert now is not None and snapshot is not None
    # (expires_at is derived from the server's remaining TTL in Redis: compare the rest.)
    assert (now.decision, now.accumulators) == (snapshot.decision, snapshot.accumulators)
    assert arm(collector, decision.selected_model) == stats
    assert policy_version(collector) == version
    assert await collector.get_recent_feedback() == history
    # The query still takes new feedback and a late Track.
    result = await collector.record(FeedbackEvent(qid, "rating", {"rating": 4}))
    assert not result.duplicate


async def test_a_late_track_reapplies_the_net_delta(store: FeedbackStore) -> None:
    collector = make_collector(store)
    decision = await routed(collector)
    await collector.log_decision(decision)
    result = await collector.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
    assert result.applied_reward == 1.0  # no outcome yet: quality carries every weight
    await collector.track(decision.query_id, cost=0.02, latency=8.0)
    from conduit_sidecar.reward import compose_reward

    expected = compose_reward(decision.reward_weights, 1.0, 0.02, 8.0)
    weight_sum, reward_sum, _ = arm(collector, decision.selected_model)
    assert (weight_sum, reward_sum) == (1.0, pytest.approx(expected, abs=1e-12))
    # Track counts once per query.
    await collector.track(decision.query_id, cost=0.0001, latency=0.1, error=True)
    assert arm(collector, decision.selected_model)[:2] == (1.0, pytest.approx(expected, abs=1e-12))


async def test_recent_feedback_is_newest_first_and_counts_by_type(store: FeedbackStore) -> None:
    collector = make_collector(store)
    decisions = [await routed(collector, f"q{i}") for i in range(3)]
    for decision in decisions:
        await collector.track(decision)
    await collector.record(FeedbackEvent(decisions[0].query_id, "thumbs", {"value": "up"}))
    await collector.record(FeedbackEvent(decisions[1].query_id, "rating", {"rating": 3}))
    await collector.track(decisions[2].query_id, error=True)  # a repeat: counts nothing
    await collector.record(FeedbackEvent(decisions[2].query_id, "thumbs", {"value": "down"}))
    recent = await collector.get_recent_feedback(limit=2)
    assert [(e.query_id, e.signal_type) for e in recent] == [
        (decisions[2].query_id, "thumbs"),
        (decisions[1].query_id, "rating"),
    ]
    assert recent[0].payload == {"value": "down"}
    assert await collector.feedback_counts() == {"thumbs": 2, "rating": 1}
    assert await collector.get_recent_feedback(limit=0) == []


async def test_implicit_signals_from_track_are_recorded(store: FeedbackStore) -> None:
    collector = make_collector(store)
    decision = await routed(collector)
    await collector.track(decision, cost=0.001, latency=12.0, error=True, retries=1)
    pending = await store.get(decision.query_id)
    assert pending is not None
    acc = pending.accumulators
    assert (acc.quality_num, acc.quality_den, acc.weight) == (0.0, pytest.approx(1.3), 0.8)
    assert await collector.feedback_counts() == {"error": 1, "retries": 1}
    weight_sum, _, _ = arm(collector, decision.selected_model)
    assert weight_sum == 0.8


async def test_replicas_sharing_a_store_apply_each_event_once(
    durable_store_factory: StoreFactory,
) -> None:
    """Two sidecars (own Router, own store client) on one database: feedback may reach
    either, and an event still counts exactly once across the two."""
    first = make_collector(await durable_store_factory.open())
    second = make_collector(await durable_store_factory.open())
    decision = await routed(first)
    await first.track(decision, cost=0.001, latency=0.5)
    events = [
        FeedbackEvent(decision.query_id, "rating", {"rating": 4}, idempotency_key="req-1")
        for _ in range(100)
    ]
    results = await asyncio.gather(
        *(collector.record(e) for e, collector in zip(events, [first, second] * 50, strict=True))
    )
    assert sum(not r.duplicate for r in results) == 1
    total = arm(first, decision.selected_model)[0] + arm(second, decision.selected_model)[0]
    assert total == 1.0
    # The second replica sees the first one's Track (a repeat counts nothing).
    await second.track(decision.query_id, cost=0.5, error=True)
    pending = await second.store.get(decision.query_id)
    assert pending is not None and pending.accumulators.cost_usd == 0.001
