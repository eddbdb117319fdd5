"""feedback/sink.py: what the collector needs from a router, checked at construction."""

from __future__ import annotations

from typing import Any

import pytest

from conduit_sidecar import Query, Router
from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.feedback import FeedbackCollector, FeedbackEvent, ThumbsAdapter


def small_router() -> Router:
    return Router(models=["cheap-model", "mid-model", "strong-model"], feature_dim=16)


class _DuckRouter:
    """A custom router: only the two methods the collector calls, no Router base."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, Any, Any]] = []
        self.outcomes: list[tuple[str, float | None, float | None]] = []

    def apply_observation(
        self,
        model_id: str,
        features: Any,
        old: tuple[float, float] | None,
        new: tuple[float, float],
        *,
        routed_at: float | None = None,
    ) -> None:
        self.applied.append((model_id, old, new))

    def record_outcome(
        self, model_id: str, cost_usd: float | None, latency_s: float | None
    ) -> None:
        self.outcomes.append((model_id, cost_usd, latency_s))


class _NoOutcomes:
    def apply_observation(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.mark.parametrize("router", [None, object(), "router", _NoOutcomes(), Router, _DuckRouter])
async def test_a_collector_without_a_usable_router_is_refused_at_construction(
    router: Any,
) -> None:
    # The spec's troubleshooting: "verify the collector has a router reference". Accepted,
    # such a collector wrote each Track and signal to the store and then raised
    # AttributeError: the retry was a duplicate, so the learning was lost for good.
    with pytest.raises(InvalidArgument) as info:
        FeedbackCollector(router)
    assert info.value.field == "router"


@pytest.mark.parametrize("store", [object(), "redis://127.0.0.1:6390/0", {}])
def test_a_store_that_is_no_feedback_store_is_refused_naming_it(store: Any) -> None:
    with pytest.raises(InvalidArgument) as info:  # was AttributeError: 'ttl_seconds'
        FeedbackCollector(small_router(), store=store)
    assert info.value.field == "store"


async def test_a_custom_router_with_the_two_methods_is_accepted() -> None:
    real = small_router()
    duck = _DuckRouter()
    collector = FeedbackCollector(duck)
    decision = await real.route(Query(text="hi"))
    await collector.track(decision, cost=0.001, latency=0.5)
    await collector.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
    assert duck.outcomes == [(decision.selected_model, 0.001, 0.5)]
    assert [model for model, _, _ in duck.applied] == [decision.selected_model]


@pytest.mark.parametrize("adapters", [5, ThumbsAdapter()])
def test_adapters_must_be_a_list_of_adapters(adapters: Any) -> None:
    with pytest.raises(InvalidArgument) as info:  # was TypeError: not iterable
        FeedbackCollector(small_router(), adapters=adapters)
    assert info.value.field == "adapters"
