"""FeedbackCollector semantics (in-memory store, real Router): the spec's API and behaviour.

Backend-specific guarantees (atomicity, TTL, durability) are in tests/test_stores.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

import numpy as np
import pytest

from conduit_sidecar import Constraints, Query, Router
from conduit_sidecar.errors import InvalidArgument, NotFound
from conduit_sidecar.feedback import (
    FeedbackAdapter,
    FeedbackCollector,
    FeedbackEvent,
    FeedbackResult,
    FeedbackStore,
    InMemoryFeedbackStore,
    RatingAdapter,
    RewardMapping,
    SessionFeedback,
    TaskSuccessAdapter,
    ThumbsAdapter,
    builtin_adapters,
)
from conduit_sidecar.feedback.observation import observation
from conduit_sidecar.query import RoutingDecision

MODELS = ["cheap-model", "mid-model", "strong-model"]


def small_router() -> Router:
    return Router(models=MODELS, feature_dim=16)


async def tracked(collector: FeedbackCollector, text: str = "What is Python?") -> RoutingDecision:
    router = collector.router
    assert isinstance(router, Router)
    decision = await router.route(Query(text=text))
    await collector.track(decision, cost=0.001, latency=0.5)
    return decision


class ConversionAdapter(FeedbackAdapter):
    """The spec's custom adapter example."""

    @property
    def signal_type(self) -> str:
        return "conversion"

    def to_reward(self, event: FeedbackEvent) -> RewardMapping:
        converted = event.payload.get("converted", False)
        return RewardMapping(reward=1.0 if converted else 0.3, confidence=1.0)


async def test_quick_start_flow_with_the_default_router() -> None:
    router = Router()
    collector = FeedbackCollector(router)
    decision = await router.route(Query(text="What is Python?"))
    await collector.track(decision, cost=0.001, latency=0.5)
    result = await collector.record(
        FeedbackEvent(query_id=decision.query_id, signal_type="thumbs", payload={"value": "up"})
    )
    assert isinstance(result, FeedbackResult)
    assert (result.reward, result.confidence, result.duplicate) == (1.0, 1.0, False)
    assert result.applied_weight == 1.0
    assert router.stats()[decision.selected_model].weight_sum == 1.0


def test_only_thumbs_is_registered_by_default() -> None:
    collector = FeedbackCollector(small_router())
    assert list(collector.adapters) == ["thumbs"]
    assert isinstance(collector.adapters["thumbs"], ThumbsAdapter)
    collector.register_adapter(RatingAdapter())
    collector.register_adapter(TaskSuccessAdapter())
    assert sorted(collector.adapters) == ["rating", "task_success", "thumbs"]
    # `adapters` is a view for monitoring, not a way to register.
    collector.adapters.clear()
    assert len(collector.adapters) == 3
    every = FeedbackCollector(small_router(), adapters=builtin_adapters())
    assert len(every.adapters) == 5


def test_register_adapter_refuses_non_adapters_and_reserved_names() -> None:
    collector = FeedbackCollector(small_router())
    with pytest.raises(InvalidArgument, match="adapter"):
        collector.register_adapter("thumbs")  # type: ignore[arg-type]

    class Track(ConversionAdapter):
        @property
        def signal_type(self) -> str:
            return "track"

    with pytest.raises(InvalidArgument, match="reserved"):
        collector.register_adapter(Track())


async def test_custom_adapter_from_the_spec() -> None:
    collector = FeedbackCollector(small_router())
    collector.register_adapter(ConversionAdapter())
    decision = await tracked(collector)
    result = await collector.record(FeedbackEvent(decision.query_id, "conversion", {}))
    assert (result.reward, result.confidence) == (0.3, 1.0)


async def test_unregistered_signal_type_is_refused_and_names_the_field() -> None:
    collector = FeedbackCollector(small_router())
    decision = await tracked(collector)
    with pytest.raises(ValueError, match="signal_type") as info:
        await collector.record(FeedbackEvent(decision.query_id, "rating", {"rating": 5}))
    assert isinstance(info.value, InvalidArgument) and info.value.field == "signal_type"
    assert "thumbs" in str(info.value)  # says what is registered


async def test_same_event_twice_counts_once_and_returns_the_first_result() -> None:
    collector = FeedbackCollector(small_router())
    decision = await tracked(collector)
    qid = decision.query_id
    first = await collector.record(FeedbackEvent(qid, "thumbs", {"value": "up"}))
    second = await collector.record(FeedbackEvent(qid, "thumbs", {"value": "up"}))
    assert not first.duplicate and second.duplicate
    assert second == FeedbackResult(**{**first.__dict__, "duplicate": True})
    # One reaction per signal type: a changed mind is a duplicate of the first reaction.
    changed = await collector.record(FeedbackEvent(qid, "thumbs", {"value": "down"}))
    assert changed.duplicate and changed.reward == 1.0
    assert await collector.feedback_counts() == {"thumbs": 1}


async def test_different_signal_types_are_recorded_separately() -> None:
    collector = FeedbackCollector(small_router(), adapters=[RatingAdapter()])
    decision = await tracked(collector)
    qid = decision.query_id
    thumbs = await collector.record(FeedbackEvent(qid, "thumbs", {"value": "up"}))
    rating = await collector.record(FeedbackEvent(qid, "rating", {"rating": 1}))
    assert not thumbs.duplicate and not rating.duplicate
    assert rating.applied_reward is not None and thumbs.applied_reward is not None
    assert rating.applied_reward < thumbs.applied_reward  # the blend moved down
    # A duplicate reports the first result, not the query's state now.
    again = await collector.record(FeedbackEvent(qid, "thumbs", {"value": "up"}))
    assert again.applied_reward == thumbs.applied_reward


async def test_explicit_idempotency_keys_override_the_default() -> None:
    collector = FeedbackCollector(small_router())
    decision = await tracked(collector)
    qid = decision.query_id
    a = await collector.record(FeedbackEvent(qid, "thumbs", {"value": "up"}, idempotency_key="k1"))
    b = await collector.record(
        FeedbackEvent(qid, "thumbs", {"value": "down"}, idempotency_key="k2")
    )
    c = await collector.record(
        FeedbackEvent(qid, "thumbs", {"value": "down"}, idempotency_key="k1")
    )
    assert (a.duplicate, b.duplicate, c.duplicate) == (False, False, True)
    assert c.reward == 1.0
    assert await collector.feedback_counts() == {"thumbs": 2}


class Broken(FeedbackAdapter):
    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour

    @property
    def signal_type(self) -> str:
        return "broken"

    def to_reward(self, event: FeedbackEvent) -> RewardMapping:
        if self.behaviour == "keyerror":
            return RewardMapping(reward=event.payload["missing"])
        if self.behaviour == "out-of-range":
            return RewardMapping(reward=2.0)
        if self.behaviour == "huge-int":
            return RewardMapping(reward=10**400)
        if self.behaviour == "zero-division":  # a ratio over an empty payload
            return RewardMapping(reward=1.0 / len(event.payload))
        if self.behaviour == "index-error":
            return RewardMapping(reward=event.payload.get("scores", [])[0])
        return 0.5  # type: ignore[return-value]


@pytest.mark.parametrize(
    "behaviour",
    ["keyerror", "out-of-range", "wrong-type", "huge-int", "zero-division", "index-error"],
)
async def test_a_misbehaving_custom_adapter_is_refused_cleanly(behaviour: str) -> None:
    collector = FeedbackCollector(small_router(), adapters=[Broken(behaviour)])
    decision = await tracked(collector)
    with pytest.raises(InvalidArgument):
        await collector.record(FeedbackEvent(decision.query_id, "broken", {}))
    assert await collector.feedback_counts() == {}


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (FeedbackEvent("q", "thumbs", payload=[1, 2]), "payload"),  # type: ignore[arg-type]
        (FeedbackEvent("q", "thumbs", payload={"value": float("nan")}), "payload"),
        (FeedbackEvent("q", "thumbs", payload={1: "up"}), "payload"),  # type: ignore[dict-item]
        (FeedbackEvent("q", "thumbs", payload={"v": object()}), "payload"),
        (FeedbackEvent("q", "", payload={}), "signal_type"),
        (FeedbackEvent(None, "thumbs"), "query_id"),  # type: ignore[arg-type]
        (FeedbackEvent("q", "thumbs", {"value": "up"}, idempotency_key=""), "idempotency_key"),
        (FeedbackEvent("q", "thumbs", {"value": "up"}, timestamp=float("inf")), "timestamp"),
        (FeedbackEvent("q", "thumbs", {"value": "up"}, timestamp=10**400), "timestamp"),
    ],
)
async def test_malformed_events_are_refused_naming_the_field(
    event: FeedbackEvent, field: str
) -> None:
    collector = FeedbackCollector(small_router())
    with pytest.raises(InvalidArgument) as info:
        await collector.record(event)
    assert info.value.field == field


async def test_unknown_query_error_names_the_query_id() -> None:
    collector = FeedbackCollector(small_router())
    with pytest.raises(ValueError, match="Unknown query_id 'q-404'") as info:
        await collector.record(FeedbackEvent("q-404", "thumbs", {"value": "up"}))
    assert isinstance(info.value, NotFound) and info.value.query_id == "q-404"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cost": float("nan")}, "cost_usd"),
        ({"cost": "0.1"}, "cost_usd"),
        ({"latency": -0.5}, "latency_s"),
        ({"cost": 10**400}, "cost_usd"),
        ({"error": "yes"}, "error"),
        ({"retries": True}, "retries"),
        ({"retries": 1.5}, "retries"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": float("inf")}, "ttl_seconds"),
    ],
)
async def test_track_refuses_bad_arguments(kwargs: dict[str, Any], field: str) -> None:
    router = small_router()
    collector = FeedbackCollector(router)
    decision = await router.route(Query(text="hi"))
    with pytest.raises(InvalidArgument) as info:
        await collector.track(decision, **kwargs)
    assert info.value.field == field
    assert await collector.get_pending_count() == 0


async def test_track_by_id_needs_a_logged_decision() -> None:
    router = small_router()
    collector = FeedbackCollector(router)
    with pytest.raises(NotFound, match="never-logged"):
        await collector.track("never-logged", cost=0.1)
    with pytest.raises(InvalidArgument, match="decision"):
        await collector.track(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="decision"):
        await collector.log_decision("q1")  # type: ignore[arg-type]
    decision = await router.route(Query(text="hi"))
    await collector.log_decision(decision)
    await collector.log_decision(decision)  # logging twice keeps one pending entry
    assert await collector.get_pending_count() == 1
    await collector.track(decision.query_id, cost=0.004, latency=1.5)
    await collector.track(decision.query_id, cost=0.004, latency=1.5)
    stats = router.stats()[decision.selected_model]
    assert (stats.outcomes, stats.cost_usd_sum, stats.latency_s_sum) == (1, 0.004, 1.5)


async def test_collector_ttl_applies_to_every_track() -> None:
    collector = FeedbackCollector(small_router(), ttl_seconds=0.2)
    assert collector.ttl_seconds == 0.2
    decision = await tracked(collector)
    await asyncio.sleep(0.35)
    with pytest.raises(NotFound):
        await collector.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
    assert FeedbackCollector(small_router()).ttl_seconds == 3600.0
    with pytest.raises(InvalidArgument, match="ttl_seconds"):
        FeedbackCollector(small_router(), ttl_seconds=-1)


async def test_concurrent_feedback_ends_exactly_where_sequential_feedback_does() -> None:
    """Many queries, several signals each, recorded concurrently in shuffled order, versus
    the same signals recorded one by one: the two policies hold the same statistics."""
    rng = random.Random(7)
    concurrent = FeedbackCollector(small_router(), adapters=builtin_adapters())
    sequential = FeedbackCollector(small_router(), adapters=builtin_adapters())
    events: list[FeedbackEvent] = []
    for i in range(40):
        decision = await concurrent.router.route(Query(text=f"question {i}"))  # type: ignore[attr-defined]
        for collector in (concurrent, sequential):
            await collector.track(decision, cost=0.0005 * (i + 1), latency=0.1 * (i + 1))
        qid = decision.query_id
        events += [
            FeedbackEvent(qid, "thumbs", {"value": rng.choice(["up", "down"])}),
            FeedbackEvent(qid, "rating", {"rating": rng.randint(1, 5)}),
            FeedbackEvent(qid, "regeneration", {"regenerated": rng.random() < 0.3}),
        ]
    for event in events:
        await sequential.record(event)
    shuffled = list(events)
    rng.shuffle(shuffled)
    await asyncio.gather(*(concurrent.record(e) for e in shuffled))

    a = concurrent.router.policy  # type: ignore[attr-defined]
    b = sequential.router.policy  # type: ignore[attr-defined]
    for model in MODELS:
        sa, sb = a.arm_stats()[model], b.arm_stats()[model]
        assert sa.weight_sum == pytest.approx(sb.weight_sum, abs=1e-9)
        assert sa.reward_sum == pytest.approx(sb.reward_sum, abs=1e-9)
    probe_decision = await sequential.router.route(Query(text="probe"))  # type: ignore[attr-defined]
    probe = np.asarray(probe_decision.features)
    scores_a, scores_b = a.select(probe).scores, b.select(probe).scores
    assert scores_a == pytest.approx(scores_b, abs=1e-9)


def _policy_lag(router: Router, store_view: list[tuple[RoutingDecision, Any]]) -> float:
    """How far the router's policy is from one rebuilt from the stored accumulators."""
    rebuilt = small_router()
    for decision, accumulators in store_view:
        obs = observation(accumulators, decision.reward_weights)
        if obs is not None:
            rebuilt.policy.update(decision.selected_model, decision.features, *obs)
    lag = 0.0
    for model in MODELS:
        a, b = router.policy.arm_stats()[model], rebuilt.policy.arm_stats()[model]
        lag = max(lag, abs(a.weight_sum - b.weight_sum), abs(a.reward_sum - b.reward_sum))
    return lag


async def test_a_cancelled_caller_does_not_lose_the_policy_update(
    store_factory: Any,
) -> None:
    """A gRPC deadline cancels the handler while the store write is in flight. The write
    still commits, so its policy delta must be applied too: otherwise the signal is lost
    (a retry is a duplicate) and the query's later deltas leave the policy off for good."""
    store: FeedbackStore = await store_factory.open()
    router = small_router()
    collector = FeedbackCollector(router, store, adapters=builtin_adapters())
    decisions = []
    for yields in range(12):  # cancel after 0..11 loop turns: before, during, after the write
        decision = await router.route(Query(text=f"question {yields}"))
        await collector.track(decision, cost=0.001, latency=0.5)
        decisions.append(decision)
        for event in (
            FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}),
            FeedbackEvent(decision.query_id, "rating", {"rating": 2}),
        ):
            task = asyncio.create_task(collector.record(event))
            for _ in range(yields):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    # The client retries after its deadline: applied once whatever happened before.
    for decision in decisions:
        await collector.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
        await collector.record(FeedbackEvent(decision.query_id, "rating", {"rating": 2}))
    deadline = time.monotonic() + 5.0
    while True:  # work a cancelled caller left in flight may still be finishing
        view = []
        for decision in decisions:
            pending = await store.get(decision.query_id)
            assert pending is not None
            view.append((decision, pending.accumulators))
        lag = _policy_lag(router, view)
        if lag < 1e-9 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert lag < 1e-9
    assert all(acc.quality_den == 2.0 for _, acc in view)  # each signal stored exactly once


async def test_feedback_for_a_removed_model_is_stored_without_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = small_router()
    collector = FeedbackCollector(router)
    decision = await tracked(collector)
    router.remove_model(decision.selected_model)
    with caplog.at_level(logging.WARNING, logger="conduit_sidecar.feedback.collector"):
        result = await collector.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
    assert not result.duplicate
    assert "not applied to the policy" in caplog.text
    assert await collector.feedback_counts() == {"thumbs": 1}


async def test_a_model_added_again_does_not_learn_from_its_earlier_arms_queries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = small_router()
    collector = FeedbackCollector(router)
    before = await tracked(collector)
    model = before.selected_model
    await collector.record(FeedbackEvent(before.query_id, "thumbs", {"value": "up"}))
    router.remove_model(model)
    router.add_model(model)
    # A second signal for the old query used to re-apply its net delta to the fresh arm,
    # subtracting an observation that arm never had (theta went negative).
    with caplog.at_level(logging.WARNING, logger="conduit_sidecar.feedback.collector"):
        result = await collector.record(
            FeedbackEvent(before.query_id, "thumbs", {"value": "down"}, idempotency_key="again")
        )
    assert not result.duplicate
    assert "added again" in caplog.text
    theta = router.policy.theta(model)
    assert theta is not None and not np.any(theta)
    assert router.stats()[model].updates == 0
    # Queries routed to the new arm learn as usual.
    after = await router.route(
        Query(text="What is Python?", constraints=Constraints(allowed_models=[model]))
    )
    await collector.track(after, cost=0.001, latency=0.5)
    await collector.record(FeedbackEvent(after.query_id, "thumbs", {"value": "up"}))
    assert router.stats()[model].updates == 1


async def test_session_feedback_with_a_bad_payload_changes_nothing() -> None:
    router = small_router()
    collector = FeedbackCollector(router, adapters=[RatingAdapter()])
    for i in range(3):
        decision = await router.route(Query(text=f"turn {i}", session_id="chat"))
        await collector.track(decision)
    version = router.policy.version
    with pytest.raises(InvalidArgument, match=r"payload\.rating"):
        await collector.record_session_feedback(SessionFeedback("chat", "rating", {"rating": 9}))
    with pytest.raises(InvalidArgument, match="propagation_weight"):
        await collector.record_session_feedback(
            SessionFeedback("chat", "rating", {"rating": 4}, propagation_weight=1.5)
        )
    with pytest.raises(InvalidArgument, match="signal_type"):
        await collector.record_session_feedback(SessionFeedback("chat", "quality_score"))
    assert router.policy.version == version
    assert await collector.get_recent_feedback() == []
    results = await collector.record_session_feedback(
        SessionFeedback("chat", "rating", {"rating": 4})
    )
    assert [r.confidence for r in results] == [0.5, 0.5, 0.5]  # default propagation 0.5


async def test_monitoring_calls() -> None:
    collector = FeedbackCollector(small_router())
    decision = await tracked(collector)
    assert await collector.get_pending_count() == 1
    await collector.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
    history = await collector.get_recent_feedback(limit=100)
    assert [(e.query_id, e.payload) for e in history] == [(decision.query_id, {"value": "up"})]
    with pytest.raises(InvalidArgument, match="limit"):
        await collector.get_recent_feedback(limit=-1)
    assert {a.signal_type for a in collector.adapters.values()} == {"thumbs"}


async def test_history_is_capped() -> None:
    collector = FeedbackCollector(
        small_router(), InMemoryFeedbackStore(history_limit=3), adapters=builtin_adapters()
    )
    decision = await tracked(collector)
    for key in "abcde":
        await collector.record(
            FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}, idempotency_key=key)
        )
    assert [e.idempotency_key for e in await collector.get_recent_feedback()] == ["e", "d", "c"]
    assert await collector.feedback_counts() == {"thumbs": 5}


async def test_a_query_routed_twice_credits_each_decision_to_its_own_model() -> None:
    router = small_router()
    collector = FeedbackCollector(router)
    query = Query(text="What is Python?", constraints=Constraints(allowed_models=[MODELS[0]]))
    first = await router.route(query)
    query.constraints = Constraints(allowed_models=[MODELS[2]])
    second = await router.route(query)
    assert (first.selected_model, second.selected_model) == (MODELS[0], MODELS[2])
    await collector.track(first, cost=0.001, latency=0.5)
    await collector.track(second, cost=0.02, latency=2.0)
    await collector.record(FeedbackEvent(first.query_id, "thumbs", {"value": "down"}))
    await collector.record(FeedbackEvent(second.query_id, "thumbs", {"value": "up"}))
    stats = router.stats()
    assert (stats[MODELS[0]].outcomes, stats[MODELS[0]].cost_usd_sum) == (1, 0.001)
    assert (stats[MODELS[2]].outcomes, stats[MODELS[2]].cost_usd_sum) == (1, 0.02)
    assert stats[MODELS[0]].weight_sum == stats[MODELS[2]].weight_sum == 1.0
