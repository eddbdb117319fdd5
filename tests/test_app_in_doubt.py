"""SidecarApp.close settles the collector's writes in doubt before the last policy delta is
published: a feedback write that timed out but landed (its mark kept, so the client's retry
is a duplicate) was otherwise learned only after the next write that works, which a sidecar
shutting down never makes.

The stalls are real, as in test_feedback_in_doubt: a private redis-server kept busy by a slow
script on another connection runs the timed-out write right after it, and a TCP relay in front
of PostgreSQL lets a COMMIT through and drops its acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import asyncpg
import pytest
from net_relay import CommitReplyDropper
from redis.asyncio import Redis
from sync_cluster import BUSY_SCRIPT

from conduit_sidecar import Query
from conduit_sidecar.app import SidecarApp
from conduit_sidecar.config import SidecarConfig
from conduit_sidecar.errors import Unavailable
from conduit_sidecar.feedback import FeedbackEvent
from tests.conftest import POSTGRES_URL


def _config(redis_url: str, namespace: str) -> SidecarConfig:
    # The stores' command timeout, shortened (redis-py reads it from the URL) so that a 1 s
    # stall outlasts it; no sync during the test (30 s), only the one close() publishes.
    return SidecarConfig(
        store_url=f"{redis_url}?socket_timeout=0.3",
        sync_interval_s=30.0,
        state_namespace=namespace,
    ).validate()


async def _stall(redis_url: str, microseconds: int) -> asyncio.Future[object]:
    admin = Redis.from_url(redis_url)
    await admin.ping()  # connected: the busy script goes out at once

    async def busy() -> object:
        try:
            return await admin.eval(BUSY_SCRIPT, 0, microseconds)  # type: ignore[misc]
        finally:
            await admin.aclose()

    stall = asyncio.ensure_future(busy())
    await asyncio.sleep(0.05)  # sent first: the server is in the script from here on
    return stall


async def test_close_learns_a_write_in_doubt_that_took_effect(private_redis: str) -> None:
    config = _config(private_redis, f"app_doubt_{uuid.uuid4().hex[:10]}")
    app = await SidecarApp.create(config)
    try:
        decision = await app.router.route(Query(text="stalled at shutdown"))
        await app.collector.track(decision)
        model = decision.selected_model
        assert app.router.policy.arm_stats()[model].updates == 0
        stall = await _stall(private_redis, 1_000_000)
        with pytest.raises(Unavailable):
            await app.collector.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
        await stall  # the server ran the timed-out write right after the script
        assert len(app.collector.in_doubt) == 1
        pending = await app.store.get(decision.query_id)
        assert pending is not None and pending.accumulators.quality_den == 1.0  # it landed
        assert app.router.policy.arm_stats()[model].updates == 0  # unlearned so far
    finally:
        await app.close()
    # close() settled it before publishing: learned here, and kept in the published state.
    assert len(app.collector.in_doubt) == 0
    assert app.router.policy.arm_stats()[model].updates == 1
    again = await SidecarApp.create(config)
    try:
        assert again.router.policy.arm_stats()[model].updates == 1
        assert again.router.policy.arm_stats()[model].weight_sum == pytest.approx(1.0)
        # The client's retry is a duplicate: without close() settling it, lost for good.
        result = await again.collector.record(
            FeedbackEvent(decision.query_id, "thumbs", {"value": "up"})
        )
        assert result.duplicate
    finally:
        await again.close()


async def test_close_logs_doubts_it_cannot_settle_and_goes_on(
    private_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(private_redis, f"app_doubt_{uuid.uuid4().hex[:10]}")
    app = await SidecarApp.create(config)
    closed = False
    try:
        decision = await app.router.route(Query(text="never reached"))
        await app.collector.track(decision)
        # A write that never reached the store (a closed port): no mark to find, so the
        # doubt stays; close() must neither raise nor wait past its bound for it.
        app.collector.in_doubt.add("0" * 24, decision.query_id, "signal:thumbs", None)
        with caplog.at_level(logging.WARNING, logger="conduit_sidecar.app"):
            await asyncio.wait_for(app.close(), 10.0)
            closed = True
        assert "1 of 1 feedback write(s) in doubt could not be settled" in caplog.text
        assert len(app.collector.in_doubt) == 1
    finally:
        if not closed:
            await app.close()


async def test_close_learns_a_postgres_commit_whose_acknowledgement_was_lost() -> None:
    relay = CommitReplyDropper.to(POSTGRES_URL)
    relayed = relay.relayed(POSTGRES_URL)
    namespace = f"app_doubt_{uuid.uuid4().hex[:10]}"
    # No sync during the test (30 s): the armed relay meets the feedback write's COMMIT.
    config = SidecarConfig(store_url=relayed, sync_interval_s=30.0, state_namespace=namespace)
    try:
        app = await SidecarApp.create(config.validate())
        try:
            decision = await app.router.route(Query(text="lost ack at shutdown"))
            await app.collector.track(decision)
            model = decision.selected_model
            relay.armed.set()
            with pytest.raises(Unavailable):  # after the store's 4 s command timeout
                await app.collector.record(
                    FeedbackEvent(decision.query_id, "thumbs", {"value": "up"})
                )
            assert not relay.armed.is_set()  # the COMMIT went through
            assert len(app.collector.in_doubt) == 1
            assert app.router.policy.arm_stats()[model].updates == 0
        finally:
            await app.close()
        assert len(app.collector.in_doubt) == 0
        assert app.router.policy.arm_stats()[model].updates == 1
        direct = SidecarConfig(store_url=POSTGRES_URL, state_namespace=namespace).validate()
        again = await SidecarApp.create(direct)
        try:
            assert again.router.policy.arm_stats()[model].updates == 1
        finally:
            await again.close()
    finally:
        relay.close()
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {namespace} CASCADE")
            for table in ("policy_base", "policy_deltas", "policy_published"):
                await conn.execute(f"DROP TABLE IF EXISTS {namespace}_{table}")
        finally:
            await conn.close()
