"""SIGTERM against real sidecar processes with clients attached: streams that stay open
(health Watch, reflection) do not hold the drain, repeated signals do not cut it short, load
loses nothing acknowledged, and a store that fails to close does not stop it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_fixtures import Sidecar
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conduit_sidecar._proto import conduit_pb2 as pb
from conduit_sidecar._proto import conduit_pb2_grpc as pb_grpc
from conduit_sidecar.app import SidecarApp
from conduit_sidecar.config import SidecarConfig
from conduit_sidecar.feedback import SqliteFeedbackStore
from conduit_sidecar.query import Query
from conduit_sidecar.server import SERVICE_NAME

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_a_health_watcher_does_not_hold_the_shutdown_for_the_whole_grace(tmp_path: Path) -> None:
    # A Watch stream never ends by itself and server.stop(grace_s) waits for every call: one
    # watcher (Envoy, a gRPC client with health checking) kept every SIGTERM waiting the full
    # grace period (here 20 s) and then had its stream cancelled.
    server = Sidecar(
        ["--store-url", f"sqlite:///{tmp_path / 'conduit.db'}", "--grace-s", "20"],
        tmp_path / "log",
    )
    try:
        with server.channel() as channel:
            stub = server.stub(channel)
            query_id = stub.Route(pb.RouteRequest(text="before the SIGTERM")).query_id
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=60
            )
            assert next(watch).status == SERVING
            started = time.monotonic()
            server.proc.terminate()  # SIGTERM
            assert next(watch).status == NOT_SERVING  # the watcher sees it leaving first
            # Then its stream ends cleanly (OK, not CANCELLED at the end of the grace).
            assert list(watch) == []
            assert watch.code() == grpc.StatusCode.OK
            assert server.proc.wait(timeout=15) == 0
            assert time.monotonic() - started < 10.0  # not the 20 s grace period
    finally:
        server.stop()
    second = Sidecar(["--store-url", f"sqlite:///{tmp_path / 'conduit.db'}"], tmp_path / "log2")
    try:
        with second.channel() as channel:  # the shutdown persisted what it had
            track = pb.TrackRequest(query_id=query_id, cost_usd=0.001, latency_s=0.1)
            assert second.stub(channel).Track(track).query_id == query_id
    finally:
        assert second.terminate() == 0


def test_a_second_sigterm_during_the_shutdown_does_not_cut_it_short(tmp_path: Path) -> None:
    # The signal handlers were removed once the shutdown began, so a second SIGTERM (or a
    # second Ctrl-C) killed the process mid-drain (exit -15): the 20 signals below were in
    # the store, marked, but never learned, and their retries were duplicates.
    url = f"sqlite:///{tmp_path / 'conduit.db'}"
    server = Sidecar(["--store-url", url, "--sync-interval-s", "30"], tmp_path / "log")
    try:
        with server.channel() as channel:
            stub = server.stub(channel)
            for i in range(20):
                query_id = stub.Route(pb.RouteRequest(text=f"query {i}")).query_id
                stub.RecordFeedback(
                    pb.RecordFeedbackRequest(
                        query_id=query_id, signal_type="thumbs", payload=_thumbs_up()
                    )
                )
        server.proc.terminate()
        time.sleep(0.1)  # inside the 0.2 s health flip: the shutdown has begun
        server.proc.terminate()
        assert server.proc.wait(timeout=30) == 0
    finally:
        server.stop()
    assert "SIGTERM during shutdown: ignored" in server.log()
    second = Sidecar(["--store-url", url], tmp_path / "log2")
    try:
        with second.channel() as channel:
            stats = second.stub(channel).GetStats(pb.GetStatsRequest())
        assert dict(stats.feedback_counts) == {"thumbs": 20}
        assert sum(m.weight_sum for m in stats.models) == 20.0  # every signal was learned
    finally:
        assert second.terminate() == 0


def _thumbs_up() -> struct_pb2.Struct:
    payload = struct_pb2.Struct()
    payload.update({"value": "up"})
    return payload


async def test_a_policy_store_that_fails_to_close_does_not_stop_the_shutdown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The failure is injected (a real SQLite close cannot be made to fail on demand): the
    # policy state store's close raised out of SidecarApp.close, so the feedback store was
    # never closed (its buffered decisions not flushed) and serve ended in a traceback.
    path = tmp_path / "conduit.db"
    config = SidecarConfig(listen="127.0.0.1:0", store_url=f"sqlite:///{path}").validate()
    app = await SidecarApp.create(config)
    assert app.synchronizer is not None

    async def failing_close() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    app.synchronizer.store.close = failing_close  # type: ignore[method-assign]
    decision = app.router.decide(Query(text="routed just before SIGTERM"))
    await app.collector.log_decision(decision)
    await app.close()  # raised OperationalError
    assert "closing the policy state store failed" in caplog.text
    store = SqliteFeedbackStore(path)
    await store.initialize()
    try:
        assert await store.get(decision.query_id) is not None
    finally:
        await store.close()


async def test_sigterm_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    # 16 clients in a closed loop (Route, Track, thumbs) when SIGTERM arrives: calls fail
    # only as UNAVAILABLE or CANCELLED (grpc/grpc#41785), never UNKNOWN or INTERNAL; the
    # process exits 0; after a restart every acknowledged signal is in the store (its
    # retry is a duplicate) and in the policy.
    url = f"sqlite:///{tmp_path / 'conduit.db'}"
    server = Sidecar(["--store-url", url, "--sync-interval-s", "30"], tmp_path / "log")
    acked: list[str] = []
    codes: set[grpc.StatusCode] = set()
    stopping = asyncio.Event()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = pb_grpc.ConduitServiceStub(channel)

            async def client(i: int) -> None:
                while not stopping.is_set():
                    try:
                        decision = await stub.Route(pb.RouteRequest(text=f"{i}"), timeout=20)
                        track = pb.TrackRequest(query_id=decision.query_id, latency_s=0.1)
                        await stub.Track(track, timeout=20)
                        await stub.RecordFeedback(_thumbs(decision.query_id), timeout=20)
                        acked.append(decision.query_id)
                    except grpc.aio.AioRpcError as error:
                        codes.add(error.code())
                        await asyncio.sleep(0.02)

            clients = [asyncio.create_task(client(i)) for i in range(16)]
            await asyncio.sleep(0.6)
            server.proc.terminate()
            code = await asyncio.to_thread(server.proc.wait, 30)
            stopping.set()
            await asyncio.gather(*clients)
    finally:
        server.stop()
    assert code == 0
    assert acked and codes <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    second = Sidecar(["--store-url", url], tmp_path / "log2")
    try:
        with second.channel() as channel:
            stub = second.stub(channel)
            stats = stub.GetStats(pb.GetStatsRequest())
            assert stats.feedback_counts["thumbs"] >= len(acked)
            assert sum(m.weight_sum for m in stats.models) == stats.feedback_counts["thumbs"]
            for query_id in acked:
                assert stub.RecordFeedback(_thumbs(query_id)).duplicate
    finally:
        assert second.terminate() == 0


def _thumbs(query_id: str) -> pb.RecordFeedbackRequest:
    return pb.RecordFeedbackRequest(query_id=query_id, signal_type="thumbs", payload=_thumbs_up())


async def test_an_open_reflection_stream_does_not_hold_the_shutdown(tmp_path: Path) -> None:
    # A reflection stream ends when its client closes it; one kept open (a GUI tool)
    # held every SIGTERM for the whole grace period (20 s here), as a health Watch did.
    server = Sidecar(["--store-url", "memory://", "--grace-s", "20"], tmp_path / "log")
    requests: asyncio.Queue[reflection_pb2.ServerReflectionRequest | None] = asyncio.Queue()

    async def until_closed() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        while (request := await requests.get()) is not None:
            yield request

    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                until_closed()
            )
            await requests.put(reflection_pb2.ServerReflectionRequest(list_services=""))
            listed = (await stream.read()).list_services_response.service
            assert SERVICE_NAME in [service.name for service in listed]
            started = time.monotonic()
            server.proc.terminate()
            assert await asyncio.to_thread(server.proc.wait, 15) == 0
            assert time.monotonic() - started < 10.0  # not the 20 s grace period
            assert await stream.code() == grpc.StatusCode.OK  # ended, not cancelled
            await requests.put(None)
    finally:
        server.stop()
