"""feedback/decisions.py: a hand-built or edited RoutingDecision is refused, naming the
field, before the collector writes anything (every backend: the durable stores encode the
decision, the in-memory one keeps it as given)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from conduit_sidecar import Constraints, Query, Router
from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.feedback import FeedbackCollector, FeedbackEvent, FeedbackStore
from conduit_sidecar.feedback.decisions import check_decision
from conduit_sidecar.query import RoutingDecision
from conduit_sidecar.reward import RewardWeights

MODELS = ["cheap-model", "mid-model", "strong-model"]

BAD_FIELDS: list[tuple[str, Any]] = [
    ("reward_weights", None),
    ("reward_weights", {"quality": 1.0, "cost": 0.0, "latency": 0.0}),
    ("scores", None),
    ("scores", {"cheap-model": "high"}),
    ("scores", {"cheap-model": float("nan")}),
    ("scores", {object(): 1.0}),
    ("features", None),
    ("features", "0.5"),
    ("features", iter([0.5] * 16)),  # would be used up by a check
    ("features", ["a"] * 16),
    ("features", [float("nan")] * 16),
    ("features", [0.5] * 15),  # another router's dimension: stored, never learned from
    ("features", (0.5,) * 17),
    ("created_at", "yesterday"),
    ("created_at", None),
    ("created_at", float("inf")),
    ("confidence", None),
    ("propensity", "1"),
    ("policy_version", "3"),
    ("policy_version", True),
    ("reasoning", None),
    ("selected_model", None),
    ("selected_model", ""),
    ("query_id", ""),
    ("query_id", "a\x00b"),
    ("session_id", 7),
    ("user_id", 7),
    ("user_id", "\udc80"),  # not valid Unicode: the durable stores could not encode it
    ("metadata", {"at": object()}),
    ("metadata", ["not", "a", "mapping"]),
]
BAD = BAD_FIELDS


def _router() -> Router:
    return Router(models=MODELS, feature_dim=16)


@pytest.mark.parametrize(("field", "value"), BAD, ids=[f"{f}={v!r}"[:40] for f, v in BAD])
async def test_a_bad_field_is_refused_naming_it_before_anything_is_stored(
    store: FeedbackStore, field: str, value: Any
) -> None:
    router = _router()
    collector = FeedbackCollector(router, store=store)
    decision = await router.route(Query(text="What is Python?"))
    bad = dataclasses.replace(decision, **{field: value})
    with pytest.raises(InvalidArgument) as info:
        await collector.log_decision(bad)
    assert info.value.field == f"decision.{field}"
    with pytest.raises(InvalidArgument) as info:
        await collector.track(bad, cost=0.001, latency=0.5, error=True)
    assert info.value.field == f"decision.{field}"
    assert await store.pending_count() == 0
    stats = router.stats()[decision.selected_model]
    assert (stats.outcomes, stats.weight_sum) == (0, 0.0)
    # The same decision, mended, is learned from in full: nothing was half-recorded.
    await collector.track(decision, cost=0.001, latency=0.5, error=True)
    await collector.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
    stats = router.stats()[decision.selected_model]
    assert (stats.outcomes, stats.weight_sum) == (1, 1.0)


def test_an_edit_in_place_is_seen_too() -> None:
    decision = _router().decide(Query(text="hi"))
    decision.features[3] = "x"  # type: ignore[call-overload]
    with pytest.raises(InvalidArgument, match=r"decision\.features"):
        check_decision(decision)
    decision = _router().decide(Query(text="hi"))
    decision.scores["mid-model"] = None  # type: ignore[assignment]
    with pytest.raises(InvalidArgument, match=r"decision\.scores"):
        check_decision(decision)


def test_valid_decisions_of_other_shapes_pass() -> None:
    """Not only the Router's exact types: tuples, ints, +inf scores (an unplayed arm),
    non-ASCII model ids, metadata, and huge but finite features whose sum overflows."""
    decision = _router().decide(Query(text="hi", session_id="s1", metadata={"k": [1, 2]}))
    assert check_decision(decision) is decision
    variants: list[dict[str, Any]] = [
        {"features": tuple(decision.features)},
        {"features": np.array(decision.features)},
        {"features": [1e308] * 16},
        {"features": [1] * 16, "confidence": 1, "propensity": 1, "created_at": 1},
        {"scores": {"cheap-model": float("inf"), "mid-model": 0.5}},
        {"scores": {}},
        {"selected_model": "modèle-é", "reasoning": "chosen: modèle-é", "user_id": "ü"},
        {"reward_weights": RewardWeights(1.0, 0.0, 0.0), "policy_version": 0},
    ]
    for change in variants:
        variant = dataclasses.replace(decision, **change)
        assert check_decision(variant) is variant


def test_what_is_not_a_decision_is_named_decision() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_decision({"query_id": "q1"})
    assert info.value.field == "decision"


async def test_the_decisions_of_a_hand_built_record_are_still_accepted() -> None:
    """A RoutingDecision built by hand with valid values is logged as before."""
    router = _router()
    collector = FeedbackCollector(router)
    decision = RoutingDecision(
        query_id="hand-built",
        selected_model="mid-model",
        confidence=0.5,
        features=[0.0] * 15 + [1.0],
        scores={"mid-model": 0.7},
        propensity=1.0,
        reasoning="by hand",
        policy_version=0,
        reward_weights=RewardWeights(1.0, 0.0, 0.0),
    )
    await collector.track(decision, cost=0.01, latency=1.0)
    result = await collector.record(FeedbackEvent("hand-built", "thumbs", {"value": "up"}))
    assert result.applied_weight == 1.0
    assert router.stats()["mid-model"].weight_sum == 1.0


async def test_track_refuses_another_decision_for_a_pending_caller_chosen_id(
    store: FeedbackStore,
) -> None:
    """A caller-chosen id routed twice names two decisions; the store keeps the first, so
    the second's Track would be credited to the first one's model: refused, naming the
    field, before anything is written."""
    router = _router()
    collector = FeedbackCollector(router, store=store)
    query = Query(text="hi", query_id="order-17")
    query.constraints = Constraints(allowed_models=[MODELS[0]])
    first = await router.route(query)
    query.constraints = Constraints(allowed_models=[MODELS[1]])
    second = await router.route(query)
    assert first.query_id == second.query_id == "order-17"
    await collector.log_decision(first)
    await collector.log_decision(second)  # keeps the first (the sidecar answers it)
    for outcomes in (0, 1):  # logged only, then tracked
        with pytest.raises(InvalidArgument) as info:
            await collector.track(second, cost=0.5, latency=1.0, error=True)
        assert info.value.field == "decision.query_id"
        assert MODELS[0] in str(info.value)
        stats = router.stats()[MODELS[0]]
        assert (stats.outcomes, stats.weight_sum) == (outcomes, 0.0)
        await collector.track(first, cost=0.001, latency=0.5)
        await collector.track(first.query_id, cost=0.001, latency=0.5)  # by id: the first
    pending = await store.get("order-17")
    assert pending is not None and pending.decision.selected_model == MODELS[0]
    assert router.stats()[MODELS[0]].outcomes == 1
    assert router.stats()[MODELS[1]].outcomes == 0
