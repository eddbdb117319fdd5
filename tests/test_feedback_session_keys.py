"""Session feedback's idempotency keys: an explicit key never collides with a signal type,
and a retry of a signal stored under the old key format is still a duplicate."""

from __future__ import annotations

from conduit_sidecar import Query, Router, RoutingDecision
from conduit_sidecar.feedback import (
    FeedbackCollector,
    FeedbackEvent,
    FeedbackStore,
    SessionFeedback,
    builtin_adapters,
)
from conduit_sidecar.feedback.observation import Contribution
from conduit_sidecar.feedback.stores.base import Mark
from tests.conftest import StoreFactory

MODELS = ["a", "b"]


def _weight_sum(router: Router) -> float:
    return sum(s.weight_sum for s in router.policy.arm_stats().values())


def _collector(store: FeedbackStore) -> tuple[Router, FeedbackCollector]:
    router = Router(models=MODELS, feature_dim=16)
    return router, FeedbackCollector(router, store, adapters=builtin_adapters())


async def _tracked_turn(
    router: Router, collector: FeedbackCollector, session_id: str
) -> RoutingDecision:
    """A decision for a turn of session `session_id`, tracked (the session's latest turn)."""
    decision = await router.route(Query(text="turn", session_id=session_id))
    await collector.track(decision, cost=0.001)
    return decision


async def test_an_explicit_key_named_like_a_signal_type_is_its_own_signal(
    store_factory: StoreFactory,
) -> None:
    router, collector = _collector(await store_factory.open())
    await _tracked_turn(router, collector, "s:1")
    keyed = SessionFeedback("s:1", "rating", {"rating": 5}, idempotency_key="thumbs")
    [first] = await collector.record_session_feedback(keyed)
    assert not first.duplicate
    # An un-keyed thumbs signal is a different signal from the explicit key "thumbs".
    [second] = await collector.record_session_feedback(
        SessionFeedback("s:1", "thumbs", {"value": "down"})
    )
    assert not second.duplicate and second.signal_type == "thumbs"
    # And each is still idempotent on its own.
    [again] = await collector.record_session_feedback(keyed)
    assert again.duplicate and again.signal_type == "rating"
    [again] = await collector.record_session_feedback(
        SessionFeedback("s:1", "thumbs", {"value": "down"})
    )
    assert again.duplicate and again.signal_type == "thumbs"
    # Session ids containing the separator do not collide with one another either.
    await _tracked_turn(router, collector, "s")
    [own] = await collector.record_session_feedback(
        SessionFeedback("s", "thumbs", {"value": "up"}, idempotency_key="1:thumbs")
    )
    assert not own.duplicate


async def test_a_retry_of_a_signal_stored_under_the_old_key_format_is_a_duplicate(
    store_factory: StoreFactory,
) -> None:
    store = await store_factory.open()
    router, collector = _collector(store)
    decision = await _tracked_turn(router, collector, "sess")
    # What the previous version wrote for SessionFeedback("sess", "thumbs") and for
    # SessionFeedback("sess", "rating", idempotency_key="k-1"): `session:{sid}:{key or type}`.
    for old_key, signal, reward in (
        ("session:sess:thumbs", "thumbs", 1.0),
        ("session:sess:k-1", "rating", 0.75),
    ):
        applied = await store.apply(
            decision.query_id,
            old_key,
            Contribution.signals([(reward, 0.5)]),
            Mark(signal, reward, 0.5),
            [FeedbackEvent(decision.query_id, signal, {})],
        )
        assert not applied.duplicate
    pending = await store.get(decision.query_id)
    assert pending is not None
    before = _weight_sum(router), pending.accumulators
    [result] = await collector.record_session_feedback(
        SessionFeedback("sess", "thumbs", {"value": "up"})
    )
    assert result.duplicate and result.reward == 1.0
    [result] = await collector.record_session_feedback(
        SessionFeedback("sess", "rating", {"rating": 4}, idempotency_key="k-1")
    )
    assert result.duplicate and result.reward == 0.75
    pending = await store.get(decision.query_id)
    assert pending is not None
    assert (_weight_sum(router), pending.accumulators) == before
    # A signal the old version never stored is applied as usual.
    [fresh] = await collector.record_session_feedback(
        SessionFeedback("sess", "rating", {"rating": 2}, idempotency_key="k-2")
    )
    assert not fresh.duplicate
