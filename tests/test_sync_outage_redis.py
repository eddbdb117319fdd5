"""Redis stopped under two running sidecars: Route keeps answering from the local policy,
Track and RecordFeedback fail fast with UNAVAILABLE, everything works again within seconds of
Redis returning without restarting the sidecars, and the replicas agree with a replay.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import grpc
import pytest
from sync_backends import unique_namespace
from sync_cluster import (
    PrivateRedis,
    RouteLoad,
    recovered,
    replay,
    route,
    routes_during_outage,
    start,
    thumbs,
    wait_until_agree,
)

from conduit_sidecar._proto import conduit_pb2 as pb


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_redis_outage_fails_fast_then_recovers_without_restart(tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path)
    ns = unique_namespace()
    sidecars = [start(tmp_path, f"s{k}", redis.url, ns) for k in range(2)]
    channels = [s.channel() for s in sidecars]
    try:
        a, b = (s.stub(c) for s, c in zip(sidecars, channels, strict=True))
        routed = [route(a, i) for i in range(6)]
        for r in routed:
            b.Track(
                pb.TrackRequest(query_id=r.query_id, cost_usd=r.cost_usd, latency_s=r.latency_s)
            )
            b.RecordFeedback(thumbs(r.query_id, r.thumbs), timeout=10)
        wait_until_agree([a, b], replay(routed))

        with RouteLoad([a, b]) as load:  # Route traffic on both replicas throughout
            redis.stop()
            for call in (
                lambda: b.Track(
                    pb.TrackRequest(query_id=routed[0].query_id, latency_s=1.0), timeout=10
                ),
                lambda: b.RecordFeedback(thumbs(routed[1].query_id, "down"), timeout=10),
            ):
                began = time.monotonic()
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
                assert time.monotonic() - began < 5.0  # fails fast, does not hang
                assert info.value.details()  # a message, not an empty status
            routes_during_outage(a)
            time.sleep(1.0)  # a few sync rounds fail meanwhile; the sidecars must keep running

            redis.start()
            more = [recovered(a, b)]
        assert load.failures == [], load.failures[:5]
        assert load.ok > 20
        r = more[0]
        assert not b.RecordFeedback(thumbs(r.query_id, r.thumbs), timeout=10).duplicate
        wait_until_agree([a, b], replay(routed + more))
        for s in sidecars:
            assert "policy sync recovered" in s.log(), s.log()
    finally:
        for c in channels:
            c.close()
        for s in sidecars:
            assert s.terminate() == 0
        redis.stop()
