"""ConduitServicer.Route in-process: the text-only fast path and the general path translate
the same way, and the response's reward weights are the decision's (a preset, the router's
default or the request's own)."""

from __future__ import annotations

import pytest

from conduit_sidecar._proto import conduit_pb2 as pb
from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.feedback import FeedbackCollector
from conduit_sidecar.feedback.stores.memory import InMemoryFeedbackStore
from conduit_sidecar.reward import PRESETS
from conduit_sidecar.router import Router
from conduit_sidecar.servicer import ConduitServicer


def make() -> tuple[ConduitServicer, InMemoryFeedbackStore]:
    router = Router(["gpt-4o-mini", "gpt-4o", "claude-3-5-haiku"])
    store = InMemoryFeedbackStore()
    return ConduitServicer(router, FeedbackCollector(router, store)), store


def weights_of(response: pb.RouteResponse) -> tuple[float, float, float]:
    w = response.reward_weights
    return (w.quality, w.cost, w.latency)


async def test_text_only_and_general_requests_answer_alike() -> None:
    servicer, store = make()
    text = "Summarise the plot of Hamlet in two sentences."
    fast = await servicer.Route(pb.RouteRequest(text=text), None)
    # include_features moves the request off the text-only path; nothing else differs.
    general = await servicer.Route(pb.RouteRequest(text=text, include_features=True), None)
    assert len(general.features) == 64 and not fast.features
    for response in (fast, general):
        pending = await store.get(response.query_id)
        assert pending is not None
        decision = pending.decision
        assert response.selected_model == decision.selected_model
        assert response.reasoning == decision.reasoning
        assert dict(response.scores) == decision.scores
        assert (response.confidence, response.propensity) == (
            decision.confidence,
            decision.propensity,
        )
        assert decision.session_id is None and decision.user_id is None
        assert decision.metadata == {}
        assert weights_of(response) == (0.6, 0.2, 0.2)  # the router's default: balanced


async def test_oversized_text_is_refused_on_the_text_only_path() -> None:
    servicer, _ = make()
    servicer.max_text_chars = 10
    route = ConduitServicer.Route.__wrapped__  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument, match="too long: 11 characters, limit 10") as info:
        await route(servicer, pb.RouteRequest(text="x" * 11), None)
    assert info.value.field == "text"


@pytest.mark.parametrize("preference", ["", "cost", "quality"])
async def test_response_weights_follow_the_decision_on_every_call(preference: str) -> None:
    servicer, _ = make()
    expected = PRESETS[preference or "balanced"]
    for _ in range(3):
        response = await servicer.Route(
            pb.RouteRequest(text="What is Python?", preference=preference), None
        )
        assert weights_of(response) == (expected.quality, expected.cost, expected.latency)
    explicit = pb.RewardWeights(quality=2, cost=1, latency=1)
    for _ in range(2):
        response = await servicer.Route(
            pb.RouteRequest(text="What is Python?", reward_weights=explicit), None
        )
        assert weights_of(response) == (0.5, 0.25, 0.25)
