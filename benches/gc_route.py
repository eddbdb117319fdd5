"""What the garbage collector costs the Route handler: CPU time per Route in an in-process
loop (the sidecar's servicer on memory://), with CPython's default collector settings, with
the serving process's settings (`server.tune_gc`), and with the collector off.

    python benches/gc_route.py [--routes 60000] [--repeat 3]

Each setting runs in a fresh process, alternating, `repeat` times; printed: the mean CPU
time per Route over chunks of 20,000 Routes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import subprocess
import sys
import time

CHUNK = 20_000


async def child(mode: str, routes: int) -> float:
    from conduit_sidecar._proto import conduit_pb2 as pb
    from conduit_sidecar.app import SidecarApp
    from conduit_sidecar.config import SidecarConfig
    from conduit_sidecar.metrics import SidecarMetrics
    from conduit_sidecar.server import tune_gc
    from conduit_sidecar.servicer import ConduitServicer
    from conduit_sidecar.status import lenient_deserializer

    app = await SidecarApp.create(SidecarConfig(store_url="memory://"))
    metrics = SidecarMetrics()
    servicer = ConduitServicer(
        app.router, app.collector, observe_rpc=metrics.observe_rpc, on_selected=metrics.selected
    )
    rng = random.Random(0)
    requests = [
        pb.RouteRequest(text=f"Write a function number {rng.randrange(10**6)}").SerializeToString()
        for _ in range(routes)
    ]
    parse = lenient_deserializer(pb.RouteRequest)
    if mode == "tuned":
        tune_gc()
    elif mode == "off":
        gc.disable()
    started = time.process_time()
    for raw in requests:
        (await servicer.Route(parse(raw), None)).SerializeToString()
    return (time.process_time() - started) / routes


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        print(asyncio.run(child(sys.argv[2], int(sys.argv[3]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", type=int, default=3 * CHUNK)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.repeat):
        line = []
        for mode in ("default", "tuned", "off"):
            out = subprocess.run(
                [sys.executable, __file__, "child", mode, str(args.routes)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            line.append(f"{mode} {float(out) * 1e6:5.1f} us")
        print("CPU per Route: " + ", ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
