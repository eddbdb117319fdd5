"""What a Route costs when the CPU caches are cold, step by step (a diagnostic for issue 4).

Under load a server's Route handler costs several times its in-process time: between two
requests the transport's threads and the load generator run on the same two cores and evict
the handler's code and data. This script reproduces that in one process: before each Route it
writes a buffer larger than the L2 cache (`--evict-bytes`, 0 for warm caches), then times the
handler's steps one by one (the servicer's own sequence on memory://, as in gc_route.py).

    python benches/cold_route.py [--routes 4000] [--evict-bytes 8000000] [--repeat 2]

Each setting runs in a fresh process, alternating warm and cold, `repeat` times; printed: the
mean microseconds per Route of each step and in total. The eviction is not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import time

STEPS = ("parse", "query", "decide", "log", "selected", "response", "serialize", "observe")


async def child(routes: int, evict_bytes: int) -> list[float]:
    import grpc
    import numpy as np

    from conduit_sidecar._proto import conduit_pb2 as pb
    from conduit_sidecar.app import SidecarApp
    from conduit_sidecar.config import SidecarConfig
    from conduit_sidecar.metrics import SidecarMetrics
    from conduit_sidecar.query import Query
    from conduit_sidecar.server import tune_gc
    from conduit_sidecar.servicer import route_response
    from conduit_sidecar.status import lenient_deserializer

    app = await SidecarApp.create(SidecarConfig(store_url="memory://"))
    router, collector, metrics = app.router, app.collector, SidecarMetrics()
    rng = random.Random(0)
    requests = [
        pb.RouteRequest(text=f"Write a function number {rng.randrange(10**6)}").SerializeToString()
        for _ in range(routes)
    ]
    parse = lenient_deserializer(pb.RouteRequest)
    tune_gc()
    evict = np.zeros(max(evict_bytes // 8, 1))
    totals = [0.0] * (len(STEPS) + 1)
    clock = time.perf_counter
    for raw in requests:
        if evict_bytes:
            evict += 1.0
        # The servicer's Route for a text-only request, unrolled so each step can be timed.
        t0 = clock()
        request = parse(raw)
        t1 = clock()
        query = Query(request.ListFields()[0][1])
        t2 = clock()
        decision = router.decide(query)
        t3 = clock()
        await collector.log_decision(decision, ttl_seconds=None)
        t4 = clock()
        metrics.selected(decision.selected_model)
        t5 = clock()
        response = route_response(decision, False)
        t6 = clock()
        response.SerializeToString()
        t7 = clock()
        metrics.observe_rpc("Route", grpc.StatusCode.OK, t7 - t0)
        t8 = clock()
        stamps = (t0, t1, t2, t3, t4, t5, t6, t7, t8)
        for i in range(len(STEPS)):
            totals[i] += stamps[i + 1] - stamps[i]
        totals[-1] += t8 - t0
    await app.close()
    return [t / routes * 1e6 for t in totals]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        print(" ".join(f"{v:.2f}" for v in asyncio.run(child(int(sys.argv[2]), int(sys.argv[3])))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", type=int, default=4000)
    parser.add_argument("--evict-bytes", type=int, default=8_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print("| run | " + " | ".join(STEPS) + " | total |")
    print("|---|" + "---|" * (len(STEPS) + 1))
    for _ in range(args.repeat):
        for label, evict in (
            ("warm", 0),
            (f"cold ({args.evict_bytes} B evicted)", args.evict_bytes),
        ):
            out = subprocess.run(
                [sys.executable, __file__, "child", str(args.routes), str(evict)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            print(f"| {label} | " + " | ".join(f"{float(v):.1f}" for v in out) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
