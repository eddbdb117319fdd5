"""A PostgreSQL outage under a running feedback store logs one clear warning, not a traceback
every second or two (asyncpg's pool retries its connection floor in the background and logged
each failure with its traceback), and one line when calls work again."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from net_relay import SwitchableRelay, postgres_store_behind

from conduit_sidecar import Query, Router
from conduit_sidecar.errors import Unavailable
from conduit_sidecar.feedback import FeedbackCollector
from conduit_sidecar.feedback.stores.postgres_pool import FLOOR_FILTER
from tests.conftest import POSTGRES_URL


async def test_an_outage_logs_one_warning_without_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay = SwitchableRelay.to(POSTGRES_URL)
    async with postgres_store_behind(
        relay, POSTGRES_URL, min_pool_size=2, connect_timeout_s=1.0, command_timeout_s=1.0
    ) as store:
        router = Router(models=["a", "b"], feature_dim=16)
        collector = FeedbackCollector(router, store)
        await store.initialize()
        await collector.log_decision(await router.route(Query(text="before")))
        caplog.set_level(logging.DEBUG)
        # An earlier outage test in this process may have warned less than 30 s ago.
        FLOOR_FILTER.reset()
        relay.cut()  # the server is gone: connections drop, new ones fail
        began = time.monotonic()
        failures = 0
        while time.monotonic() - began < 3.5:  # long enough for several pool retries
            with pytest.raises(Unavailable):
                await collector.log_decision(await router.route(Query(text="during")))
            failures += 1
            await asyncio.sleep(0.25)
        assert failures >= 8
        relay.down.clear()  # back: the next calls work without restarting anything
        deadline = time.monotonic() + 5
        while True:
            try:
                await collector.log_decision(await router.route(Query(text="after")))
                break
            except Unavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        await collector.log_decision(await router.route(Query(text="after again")))
    tracebacks = [r for r in caplog.records if r.exc_info or r.exc_text]
    assert tracebacks == []
    ours = [r for r in caplog.records if r.name == "conduit_sidecar.feedback.stores.postgres_pool"]
    assert [r.levelno for r in ours] == [logging.WARNING, logging.INFO], [
        r.getMessage() for r in ours
    ]
    assert "PostgreSQL unreachable" in ours[0].getMessage()
    assert "PostgreSQL reachable again" in ours[1].getMessage()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == ours[:1]
