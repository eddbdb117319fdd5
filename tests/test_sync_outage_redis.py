"""Redis stopped under two running sidecars: Route keeps answering from the local policy,
Track and RecordFeedback fail fast with UNAVAILABLE, everything works again within seconds of
Redis returning without restarting the sidecars, and the replicas agree with a replay.
"""

from __future__ import annotations

from pathlib import Path

from sync_backends import unique_namespace
from sync_cluster import PrivateRedis, outage_fails_fast_then_recovers


def test_redis_outage_fails_fast_then_recovers_without_restart(tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path)
    try:
        outage_fails_fast_then_recovers(
            tmp_path, redis, redis.url, unique_namespace(), call_timeout_s=10, fail_bound_s=5.0
        )
    finally:
        redis.stop()
