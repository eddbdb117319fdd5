"""Instructions per RPC, counted by valgrind's callgrind: a load-independent view of issue 4's
throughput targets on a machine where wall-clock numbers swing with the other jobs.

    python benches/callgrind_rpc.py                 # in-process handlers + server vs echo
    python benches/callgrind_rpc.py --skip-server   # in-process handlers only (~1 min)

What it counts, each in its own process under `valgrind --tool=callgrind --instr-atstart=no`,
with instrumentation switched on (`callgrind_control -i on`) only around the measured loop:

- in-process: the sidecar's servicer methods called directly on `memory://` (the same
  objects `serve` builds: Router, store, collector, metrics callbacks), with the request
  deserialised by the server's lenient deserializer and the response serialised, as grpc
  does: `Route` (N calls after 200 warm-up), then `Track` and `RecordFeedback` on the
  queries just routed;
- server: a whole `conduit-sidecar serve --store-url memory://` process and the bare grpc.aio
  echo server of bench_grpc.py, each answering 1,000 sequential calls from a client in
  another process (instrumented after 200 warm-up calls): instructions per request of the
  whole server process, transport included.

The ratio echo / Route of the server counts is the share of echo's throughput a CPU-bound
Route server reaches (the issue's target is 80%); in-process counts say where it goes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = (
    "What is the capital of France?",
    "Write a Python function that merges two sorted lists and explain its complexity.",
    "Prove that the square root of two is irrational, step by step.",
)


def _toggle(pid: int, on: bool) -> None:
    subprocess.run(
        ["callgrind_control", "-i", "on" if on else "off", str(pid)],
        check=True,
        capture_output=True,
    )


async def _inproc(phase: str, n: int) -> None:
    """Child: run one phase's loop with instrumentation on around it."""
    from google.protobuf import struct_pb2

    from conduit_sidecar._proto import conduit_pb2 as pb
    from conduit_sidecar.app import SidecarApp
    from conduit_sidecar.config import SidecarConfig
    from conduit_sidecar.metrics import SidecarMetrics
    from conduit_sidecar.servicer import ConduitServicer
    from conduit_sidecar.status import lenient_deserializer

    app = await SidecarApp.create(SidecarConfig(store_url="memory://"))
    metrics = SidecarMetrics()
    servicer = ConduitServicer(
        app.router,
        app.collector,
        observe_rpc=metrics.observe_rpc,
        on_selected=metrics.selected,
        on_feedback=metrics.feedback_recorded,
        on_reward=metrics.rewarded,
    )
    rng = random.Random(0)
    routes = [
        pb.RouteRequest(text=f"{rng.choice(PROMPTS)} (#{rng.randrange(10**6)})").SerializeToString()
        for _ in range(n + 200)
    ]
    route_in = lenient_deserializer(pb.RouteRequest)
    track_in = lenient_deserializer(pb.TrackRequest)
    feedback_in = lenient_deserializer(pb.RecordFeedbackRequest)
    thumbs = struct_pb2.Struct()
    thumbs.update({"value": "up"})

    async def route(raw: bytes) -> str:
        response = await servicer.Route(route_in(raw), None)
        response.SerializeToString()
        return str(response.query_id)

    for raw in routes[:200]:
        await route(raw)
    pid = os.getpid()
    gc.collect()
    gc.freeze()  # the cyclic GC's timing would otherwise differ from run to run
    if phase == "Route":
        _toggle(pid, True)
        for raw in routes[200:]:
            await route(raw)
        _toggle(pid, False)
        return
    ids = [await route(raw) for raw in routes[200:]]
    tracks = [
        pb.TrackRequest(query_id=q, cost_usd=0.001, latency_s=0.8).SerializeToString() for q in ids
    ]
    feedback = [
        pb.RecordFeedbackRequest(
            query_id=q, signal_type="thumbs", payload=thumbs
        ).SerializeToString()
        for q in ids
    ]
    if phase == "RecordFeedback":  # feedback arrives after the Track, as in the mix
        for raw in tracks:
            await servicer.Track(track_in(raw), None)
    _toggle(pid, True)
    if phase == "Track":
        for raw in tracks:
            (await servicer.Track(track_in(raw), None)).SerializeToString()
    else:
        for raw in feedback:
            (await servicer.RecordFeedback(feedback_in(raw), None)).SerializeToString()
    _toggle(pid, False)


def _callgrind(argv: list[str], out: Path) -> list[str]:
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        *argv,
    ]


def _total(out: Path) -> int:
    match = re.search(r"^totals:\s+(\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no totals in {out}")
    return int(match.group(1))


def inproc(phase: str, n: int, tmp: Path) -> float:
    out = tmp / f"inproc-{phase}.out"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    argv = [sys.executable, __file__, "child", phase, str(n)]
    subprocess.run(_callgrind(argv, out), check=True, env=env, capture_output=True)
    return _total(out) / n


def _client(port: int, pid: int, echo: bool) -> None:
    import grpc

    from conduit_sidecar._proto import conduit_pb2 as pb
    from conduit_sidecar._proto import conduit_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=180)
    rng = random.Random(0)
    requests = [
        pb.RouteRequest(text=f"{rng.choice(PROMPTS)} (#{rng.randrange(10**6)})")
        for _ in range(1200)
    ]
    if echo:
        echo_call = channel.unary_unary("/bench.Echo/Echo")
        for request in requests[:200]:
            echo_call(request.SerializeToString())
        _toggle(pid, True)
        for request in requests[200:]:
            echo_call(request.SerializeToString())
    else:
        stub = pb_grpc.ConduitServiceStub(channel)
        for request in requests[:200]:
            stub.Route(request)
        _toggle(pid, True)
        for request in requests[200:]:
            stub.Route(request)
    _toggle(pid, False)
    channel.close()


def server(echo: bool, tmp: Path) -> float:
    out = tmp / ("echo.out" if echo else "sidecar.out")
    port = free_port()
    if echo:
        argv = [sys.executable, str(ROOT / "benches" / "echo_server.py")]
        argv += ["--listen", f"127.0.0.1:{port}"]
    else:
        argv = [sys.executable, "-m", "conduit_sidecar", "serve"]
        argv += ["--listen", f"127.0.0.1:{port}", "--store-url", "memory://"]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(
        _callgrind(argv, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _client(port, proc.pid, echo)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    return _total(out) / 1000


def free_port() -> int:
    """A free loopback port (released before the server binds it)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        asyncio.run(_inproc(sys.argv[2], int(sys.argv[3])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="measured calls per phase")
    parser.add_argument("--skip-server", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        counts = {
            phase: inproc(phase, args.n, tmp) for phase in ("Route", "Track", "RecordFeedback")
        }
        print("in-process handler, memory://, instructions per call (callgrind):")
        for phase, count in counts.items():
            print(f"  {phase:15s} {count:10,.0f}")
        mix = (counts["Route"] + counts["Track"] + 0.3 * counts["RecordFeedback"]) / 2.3
        print(f"  {'mix per RPC':15s} {mix:10,.0f}   (1 Route : 1 Track : 0.3 RecordFeedback)")
        if not args.skip_server:
            echo, route = server(True, tmp), server(False, tmp)
            print("whole server process, instructions per request (1,000 sequential calls):")
            print(f"  echo            {echo:10,.0f}")
            print(f"  sidecar Route   {route:10,.0f}")
            share = echo / route
            verdict = "PASS" if share >= 0.80 else "FAIL"
            print(f"  {verdict}  Route at {share:.1%} of echo's capacity (target >= 80%)")
            mix_share = echo / (echo + mix)
            verdict = "PASS" if mix_share >= 0.75 else "FAIL"
            print(
                f"  {verdict}  mix at {mix_share:.1%} of echo's capacity, estimated as echo's "
                "transport plus the in-process mix handler per RPC (target >= 75%)"
            )
    print(f"# {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
