"""Diagnostic: the sidecar with its Route handler replaced by a constant answer (same
server, wrapper, status mapping and response size), to split a Route's server CPU under
load into the transport and the handler.

    python benches/route_const_server.py const|native|real PORT

`native` answers the same constant after running the policy's native decision for the text
(featurise, select, runner-up: `BanditPolicy.route`), to see what the Rust core alone adds.

Drive it with `bench_grpc.py load --target 127.0.0.1:PORT --workload route ...` and read
the process's CPU time from /proc/PID/stat (BENCHMARKS.md shows the run).
"""

from __future__ import annotations

import sys
from typing import Any

from conduit_sidecar import servicer
from conduit_sidecar._proto import conduit_pb2 as pb
from conduit_sidecar.cli import main
from conduit_sidecar.status import grpc_method

CONSTANT = pb.RouteResponse(
    query_id="0" * 32,
    selected_model="gpt-4o-mini",
    confidence=0.6,
    propensity=1.0,
    scores={f"model-{i}": 0.5 for i in range(11)},
    reasoning="linucb: gpt-4o-mini (score 0.5, margin 0 over model-1, uncertainty 1.41)",
    policy_version=1,
)


@grpc_method
async def constant_route(self: Any, request: Any, context: Any) -> Any:
    return CONSTANT


@grpc_method
async def native_route(self: Any, request: Any, context: Any) -> Any:
    router = self.router
    router.policy.route(router._hasher, request.text, None)
    return CONSTANT


if __name__ == "__main__":
    mode, port = sys.argv[1], sys.argv[2]
    if mode == "const":
        servicer.ConduitServicer.Route = constant_route  # type: ignore[method-assign]
    elif mode == "native":
        servicer.ConduitServicer.Route = native_route  # type: ignore[method-assign]
    elif mode != "real":
        sys.exit(f"unknown mode {mode!r}: const, native or real")
    sys.exit(main(["serve", "--listen", f"127.0.0.1:{port}", "--store-url", "memory://"]))
