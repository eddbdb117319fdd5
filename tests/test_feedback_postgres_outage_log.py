"""A PostgreSQL outage under a running feedback store logs one clear warning, not a traceback
every second or two (asyncpg's pool retries its connection floor in the background and logged
each failure with its traceback)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from urllib.parse import urlsplit

import asyncpg
import pytest

from conduit_sidecar import Query, Router
from conduit_sidecar.errors import Unavailable
from conduit_sidecar.feedback import FeedbackCollector, PostgresFeedbackStore
from conduit_sidecar.feedback.stores import postgres_pool
from tests.conftest import POSTGRES_URL
from tests.net_relay import FreezableRelay


async def test_an_outage_logs_one_warning_without_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = urlsplit(POSTGRES_URL)
    relay = FreezableRelay(url.hostname or "127.0.0.1", url.port or 5432)
    relayed = url._replace(netloc=f"{url.username}@127.0.0.1:{relay.port}").geturl()
    schema = f"conduit_test_{uuid.uuid4().hex[:12]}"
    store = PostgresFeedbackStore(
        relayed, schema=schema, min_pool_size=2, connect_timeout_s=0.5, command_timeout_s=0.5
    )
    router = Router(models=["a", "b"], feature_dim=16)
    collector = FeedbackCollector(router, store)
    try:
        await store.initialize()
        await collector.log_decision(await router.route(Query(text="before")))
        caplog.set_level(logging.DEBUG)
        # An earlier outage test in this process may have warned less than 30 s ago.
        postgres_pool._FILTER.reset()
        relay.close()  # the server is gone: connections drop, new ones are refused
        began = time.monotonic()
        failures = 0
        while time.monotonic() - began < 3.5:  # long enough for several pool retries
            with pytest.raises(Unavailable):
                await collector.log_decision(await router.route(Query(text="during")))
            failures += 1
            await asyncio.sleep(0.25)
        assert failures >= 10
    finally:
        await store.close()
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()
    tracebacks = [r for r in caplog.records if r.exc_info or r.exc_text]
    assert tracebacks == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "PostgreSQL" in message and "unreachable" in message
    assert warnings[0].name == "conduit_sidecar.feedback.stores.postgres_pool"
