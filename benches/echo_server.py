"""The ceiling for bench_grpc.py: a bare grpc.aio server whose unary method `Echo` returns
its request bytes untouched (no protobuf, no interceptors, no application code), configured
like the sidecar (same message size options, so_reuseport off, same garbage-collector
settings).

A second method, `Proto`, is a diagnostic: it parses a conduit.v1.RouteRequest and returns a
constant, realistic RouteResponse (11 scores), so `Echo` -> `Proto` is the cost of protobuf
and `Proto` -> the sidecar's `Route` is the cost of the sidecar's own code.

    python benches/echo_server.py [--listen 127.0.0.1:0]

Prints `echo listening on HOST:PORT` once serving; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc

METHOD = "/bench.Echo/Echo"


async def _echo(request: bytes, context: object) -> bytes:
    return request


def _proto_handler() -> grpc.RpcMethodHandler:
    from conduit_sidecar._proto import conduit_pb2 as pb

    response = pb.RouteResponse(
        query_id="0" * 32,
        selected_model="gpt-4o-mini",
        confidence=0.62,
        propensity=1.0,
        scores={f"model-{i}": 0.5 + i / 100 for i in range(11)},
        reasoning="gpt-4o-mini: highest upper confidence bound for this context",
        policy_version=12345,
        reward_weights=pb.RewardWeights(quality=0.6, cost=0.2, latency=0.2),
    )

    async def proto(request: object, context: object) -> object:
        return response

    return grpc.unary_unary_rpc_method_handler(
        proto,
        request_deserializer=pb.RouteRequest.FromString,
        response_serializer=pb.RouteResponse.SerializeToString,
    )


async def serve(listen: str) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
    )
    handler = grpc.unary_unary_rpc_method_handler(
        _echo, request_deserializer=None, response_serializer=None
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Echo", {"Echo": handler, "Proto": _proto_handler()}
            ),
        )
    )
    port = server.add_insecure_port(listen)
    await server.start()
    # The sidecar's serving process tunes the garbage collector; so does its ceiling.
    from conduit_sidecar.server import tune_gc

    tune_gc()
    print(f"echo listening on {listen.rpartition(':')[0]}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    asyncio.run(serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()
