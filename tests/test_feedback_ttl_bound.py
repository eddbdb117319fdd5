"""The stores' own TTL bound: a TTL Redis or PostgreSQL cannot take is refused with
InvalidArgument naming the field, for Python API users as well as at the gRPC edge."""

from __future__ import annotations

import pytest

from conduit_sidecar import Query, Router
from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.feedback import FeedbackCollector, builtin_adapters
from conduit_sidecar.feedback.stores.base import MAX_TTL_SECONDS, check_ttl
from tests.conftest import StoreFactory

ELEVEN_YEARS_S = 11 * 365 * 86400.0


def test_check_ttl_bounds_the_ttl_and_names_the_field() -> None:
    assert check_ttl(MAX_TTL_SECONDS) == MAX_TTL_SECONDS
    assert MAX_TTL_SECONDS == 10 * 365 * 86400.0
    for bad in (ELEVEN_YEARS_S, 1e300, float("inf"), float("nan"), 0.0, -1.0):
        with pytest.raises(InvalidArgument) as info:
            check_ttl(bad, "ttl_s")
        assert info.value.field == "ttl_s"
    with pytest.raises(InvalidArgument) as info:
        check_ttl("60")  # type: ignore[arg-type]
    assert info.value.field == "ttl_seconds"
    with pytest.raises(InvalidArgument, match="ten years"):
        check_ttl(10**12)


async def test_python_api_refuses_a_ttl_beyond_ten_years(store_factory: StoreFactory) -> None:
    # Every backend, the real Redis and PostgreSQL servers included.
    store = await store_factory.open()
    router = Router(models=["a", "b"], feature_dim=16)
    collector = FeedbackCollector(router, store, adapters=builtin_adapters())
    decision = await router.route(Query(text="hello"))
    with pytest.raises(InvalidArgument) as info:
        await collector.log_decision(decision, ttl_seconds=ELEVEN_YEARS_S)
    assert info.value.field == "ttl_seconds"
    with pytest.raises(InvalidArgument) as info:
        await collector.track(decision, cost=0.001, ttl_seconds=ELEVEN_YEARS_S)
    assert info.value.field == "ttl_seconds"
    # The stores themselves (a caller that skips the collector) refuse it too.
    with pytest.raises(InvalidArgument) as info:
        await store.log_decision(decision, ELEVEN_YEARS_S)
    assert info.value.field == "ttl_s"
    with pytest.raises(InvalidArgument):
        FeedbackCollector(router, store, ttl_seconds=ELEVEN_YEARS_S)
    assert await store.get(decision.query_id) is None
    # The bound itself is accepted: the decision is logged, and Track keeps it pending.
    assert await store.log_decision(decision, MAX_TTL_SECONDS)
    await collector.track(decision.query_id, cost=0.001, ttl_seconds=MAX_TTL_SECONDS)
    pending = await store.get(decision.query_id)
    assert pending is not None and pending.expires_at > ELEVEN_YEARS_S
