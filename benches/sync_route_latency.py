"""Route latency on a replica that syncs at feature_dim 386 (a measurement, not a test).

Open loop: Route is due every 1/rate s, and its latency runs from when it was due to when it
answered, so event-loop stalls (merges, compaction folds) show. Every routed query gets an
observation, so every sync interval has a delta to publish; a feeder process on the same
Redis namespace publishes its own for this one to merge. Snapshots every 10 s, deltas kept
5 s. Prints p50/p99/max from the fourth second on.

    python benches/sync_route_latency.py redis NAMESPACE 24 10 feeder &   # the other replica
    python benches/sync_route_latency.py redis NAMESPACE 22 10            # measured
    python benches/sync_route_latency.py sqlite /tmp/state.db 25 20       # one replica, SQLite

The Redis keys stay under the namespace (delete them with RedisPolicyStateStore.delete_all).

Measured on 27 Nov 2026 (2-core machine shared with other work), before (cef6e9f) / after:
Redis, two replicas at 10/s: p99 103-124 ms, max 202-221 ms / p99 6.3-7.0 ms, max 7-11 ms;
SQLite, 20/s: p99 107 ms, max 202 ms / p99 6.6 ms, max 14 ms.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time

import numpy as np

from conduit_sidecar.query import Query
from conduit_sidecar.router import Router
from conduit_sidecar.sync.redis_store import RedisPolicyStateStore
from conduit_sidecar.sync.sqlite_store import SqlitePolicyStateStore
from conduit_sidecar.sync.state_store import PolicyStateStore
from conduit_sidecar.sync.synchronizer import PolicySynchronizer

REDIS_URL = os.environ.get("CONDUIT_TEST_REDIS_URL", "redis://127.0.0.1:6390/0")


async def main(kind: str, where: str, duration_s: float, rate: float, feeder: bool) -> None:
    store: PolicyStateStore = (
        RedisPolicyStateStore.from_url(REDIS_URL, namespace=where)
        if kind == "redis"
        else SqlitePolicyStateStore(where)
    )
    await store.initialize()
    router = Router(feature_dim=386)
    sync = PolicySynchronizer(
        router, store, sync_interval_s=1.0, snapshot_interval_s=10.0, delta_retention_s=5.0
    )
    await sync.start()
    rng = random.Random(1 if feeder else 2)
    latencies_s: list[float] = []
    start = time.perf_counter()
    i = 0
    while (now := time.perf_counter()) - start < duration_s:
        due = start + i / rate
        if due > now:
            await asyncio.sleep(due - now)
        decision = await router.route(Query(text=f"query {i} {rng.random()} about code"))
        router.apply_observation(
            decision.selected_model, decision.features, None, (rng.random(), 1.0)
        )
        if not feeder and time.perf_counter() - start > 3.0:
            latencies_s.append(time.perf_counter() - due)
        i += 1
    await sync.stop()
    await store.close()
    if not feeder:
        ms = np.array(latencies_s) * 1e3
        print(
            f"{kind}: n={len(ms)} p50={np.percentile(ms, 50):.1f} p99={np.percentile(ms, 99):.1f}"
            f" max={ms.max():.1f} ms; merged={sync.status.merged}"
            f" compactions={sync.status.compactions}"
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) not in (4, 5) or args[0] not in ("redis", "sqlite"):
        sys.exit(__doc__)
    asyncio.run(main(args[0], args[1], float(args[2]), float(args[3]), len(args) > 4))
