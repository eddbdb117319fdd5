"""The sidecar end to end over real gRPC: the whole flow, health, reflection, metrics,
graceful SIGTERM, and a restart on the SQLite default that keeps pending queries."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from google.protobuf import descriptor_pb2, struct_pb2
from grpc_fixtures import ROOT, Sidecar, sidecar, stub
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from net_relay import FreezableRelay

from conduit_sidecar._proto import conduit_pb2 as pb
from conduit_sidecar.app import SidecarApp
from conduit_sidecar.config import SidecarConfig
from conduit_sidecar.server import SERVICE_NAME, SidecarServer
from conduit_sidecar.sync.postgres_store import PostgresPolicyStateStore

__all__ = ["sidecar", "stub"]  # fixtures imported for pytest
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
POSTGRES_URL = os.environ.get(
    "CONDUIT_TEST_POSTGRES_URL", "postgresql://conduit@127.0.0.1:5440/conduit_test"
)


def payload(**values: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def thumbs(query_id: str, value: str = "up", key: str = "") -> pb.RecordFeedbackRequest:
    return pb.RecordFeedbackRequest(
        query_id=query_id, signal_type="thumbs", payload=payload(value=value), idempotency_key=key
    )


def test_health_reports_serving_for_the_server_and_the_service(sidecar: Sidecar) -> None:
    assert sidecar.health("") == SERVING
    assert sidecar.health(SERVICE_NAME) == SERVING
    with pytest.raises(grpc.RpcError) as info:
        sidecar.health("no.such.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services_and_describes_messages(sidecar: Sidecar) -> None:
    with sidecar.channel() as channel:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="conduit.v1.RouteRequest"
            ),
        ]
        listed, described = list(reflect.ServerReflectionInfo(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    conduit = next(f for f in files if f.package == "conduit.v1")
    assert "RouteRequest" in {m.name for m in conduit.message_type}
    assert [m.name for m in conduit.service[0].method] == [
        "Route", "Track", "RecordFeedback", "RecordSessionFeedback", "Update", "ListModels",
        "GetStats",
    ]  # fmt: skip


def test_the_whole_flow(stub: Any) -> None:
    catalogue = [m.id for m in stub.ListModels(pb.ListModelsRequest()).models]
    assert len(catalogue) >= 3 and len(set(catalogue)) == len(catalogue)
    before = stub.GetStats(pb.GetStatsRequest())

    decision = stub.Route(
        pb.RouteRequest(
            text="Summarise the plot of Hamlet in two sentences.",
            session_id="flow-session",
            user_id="u-1",
            metadata={"tenant": "acme"},
            preference="quality",
            include_features=True,
            constraints=pb.Constraints(allowed_models=catalogue[:3]),
        )
    )
    assert decision.selected_model in catalogue[:3]
    assert set(decision.scores) == set(catalogue[:3])
    assert 0.0 < decision.propensity <= 1.0 and 0.0 <= decision.confidence <= 1.0
    assert decision.reasoning and len(decision.query_id) >= 16
    assert len(decision.features) == 64
    w = decision.reward_weights
    assert w.quality > w.cost and abs(w.quality + w.cost + w.latency - 1.0) < 1e-9
    lean = stub.Route(pb.RouteRequest(text="hi", query_id="caller-chosen-id"))
    assert lean.query_id == "caller-chosen-id" and not lean.features

    stub.Track(pb.TrackRequest(query_id=decision.query_id, cost_usd=0.002, latency_s=1.2))
    first = stub.RecordFeedback(thumbs(decision.query_id))
    assert (first.reward, first.confidence, first.duplicate) == (1.0, 1.0, False)
    rating = stub.RecordFeedback(
        pb.RecordFeedbackRequest(
            query_id=decision.query_id, signal_type="rating", payload=payload(rating=4)
        )
    )
    assert rating.reward == pytest.approx(0.75) and not rating.duplicate
    again = stub.RecordFeedback(thumbs(decision.query_id, "down"))  # same (query, type)
    assert again.duplicate and again.reward == 1.0

    session = stub.RecordSessionFeedback(
        pb.RecordSessionFeedbackRequest(
            session_id="flow-session",
            signal_type="task_success",
            payload=payload(success=True),
            propagation_weight=0.5,
        )
    )
    assert [r.query_id for r in session.results] == [decision.query_id]
    assert session.results[0].confidence == pytest.approx(0.5)

    update = stub.Update(
        pb.UpdateRequest(
            model_id=catalogue[0],
            cost_usd=0.0005,
            quality_score=0.9,
            latency_s=0.8,
            features=decision.features,
            confidence=0.7,
        )
    )
    assert 0.0 < update.reward <= 1.0

    after = stub.GetStats(pb.GetStatsRequest())
    assert after.policy == "linucb" and after.policy_version > before.policy_version
    chosen = {m.model_id: m for m in after.models}[decision.selected_model]
    assert chosen.selections >= 1 and chosen.outcomes >= 1 and chosen.weight_sum > 0
    assert chosen.mean_cost_usd > 0 and chosen.mean_latency_s > 0
    for signal in ("thumbs", "rating", "task_success"):
        assert after.feedback_counts[signal] >= before.feedback_counts.get(signal, 0) + 1
    assert after.pending_queries >= 2


def test_metrics_endpoint_counts_rpcs_by_method_and_status(stub: Any, sidecar: Sidecar) -> None:
    stub.Route(pb.RouteRequest(text="metrics please"))
    with pytest.raises(grpc.RpcError):
        stub.Route(pb.RouteRequest())
    assert sidecar.metrics_port is not None
    url = f"http://127.0.0.1:{sidecar.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    assert 'conduit_rpc_duration_seconds_count{code="OK",method="Route"}' in text
    assert 'conduit_rpc_duration_seconds_count{code="INVALID_ARGUMENT",method="Route"}' in text
    assert "conduit_selections_total{model=" in text
    assert "conduit_pending_queries" in text
    assert "conduit_model_mean_reward{model=" in text


def test_a_call_abandoned_at_its_deadline_is_not_counted_ok(tmp_path: Path) -> None:
    db = tmp_path / "conduit.db"
    server = Sidecar(
        ["--store-url", f"sqlite:///{db}", "--metrics-port", "0"], tmp_path / "sidecar.log"
    )
    try:
        with server.channel() as channel:
            stub = server.stub(channel)
            query_id = stub.Route(pb.RouteRequest(text="warm up")).query_id
            stub.GetStats(pb.GetStatsRequest())  # the decision is on disk (buffered writes)
            # A stalled store (another process holds SQLite's write lock): the client gives
            # up at its deadline and grpc cancels the handler. The metrics used to count the
            # cancelled call as OK, so a stall looked like slow successes.
            lock = sqlite3.connect(db, timeout=1, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
            try:
                with pytest.raises(grpc.RpcError) as info:
                    stub.Track(pb.TrackRequest(query_id=query_id, latency_s=0.5), timeout=1)
                assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                time.sleep(0.5)
            finally:
                lock.execute("COMMIT")
                lock.close()
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert 'conduit_rpc_duration_seconds_count{code="CANCELLED",method="Track"}' in text
        assert 'code="OK",method="Track"' not in text
    finally:
        assert server.terminate() == 0


def test_sigterm_flips_health_first_then_drains_in_flight_calls(tmp_path: Path) -> None:
    db = tmp_path / "conduit.db"
    server = Sidecar(["--store-url", f"sqlite:///{db}", "--grace-s", "20"], tmp_path / "log")
    try:
        with server.channel() as channel:
            stub = server.stub(channel)
            query_id = stub.Route(pb.RouteRequest(text="warm up")).query_id
            stub.GetStats(pb.GetStatsRequest())  # the decision is on disk (buffered writes)
            time.sleep(0.1)
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=30)
            assert next(watch).status == SERVING
            # Hold SQLite's write lock, so the next Track is in flight inside the store, for
            # real, until the test lets go (the store waits on its busy timeout).
            lock = sqlite3.connect(db, timeout=1, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
            track = pb.TrackRequest(query_id=query_id, cost_usd=0.001, latency_s=0.5)
            in_flight = stub.Track.future(track, timeout=30)
            time.sleep(0.5)
            assert not in_flight.done()
            server.proc.terminate()  # SIGTERM
            assert next(watch).status == NOT_SERVING
            assert not in_flight.done()  # health flipped while the call was still running
            watch.cancel()
            lock.execute("COMMIT")
            lock.close()
            response = in_flight.result(timeout=20)
            assert response.query_id == query_id  # drained: answered OK, not cancelled
        assert server.proc.wait(timeout=30) == 0
    finally:
        server.stop()
    log = server.log()
    assert log.index("shutting down") < log.index("stopped after")


def test_feedback_still_in_the_store_when_the_grace_period_ends_is_learned(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'conduit.db'}"
    first = Sidecar(["--store-url", url, "--grace-s", "1"], tmp_path / "first.log")
    try:
        with first.channel() as channel:
            stub = first.stub(channel)
            decision = stub.Route(pb.RouteRequest(text="in flight at the end of the grace"))
            stub.GetStats(pb.GetStatsRequest())  # the decision is on disk (buffered writes)
            # A stalled store (another process holds SQLite's write lock) keeps the feedback
            # inside its store write past the 1 s grace, so grpc cancels the handler. The
            # collector finishes that write (it may commit), but shutdown used to publish the
            # last policy delta without waiting for it: the signal was stored and marked, its
            # learning lost, and the client's retry after the restart a duplicate.
            lock = sqlite3.connect(tmp_path / "conduit.db", timeout=1, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
            try:
                in_flight = stub.RecordFeedback.future(thumbs(decision.query_id), timeout=30)
                time.sleep(0.3)
                first.proc.terminate()  # SIGTERM
                time.sleep(2.5)  # past health flip + grace: the handler has been cancelled
            finally:
                lock.execute("COMMIT")
                lock.close()
            with pytest.raises(grpc.RpcError):
                in_flight.result(timeout=20)
        assert first.proc.wait(timeout=30) == 0
    finally:
        first.stop()
    second = Sidecar(["--store-url", url], tmp_path / "second.log")
    try:
        with second.channel() as channel:
            stub = second.stub(channel)
            # The client retries what failed; whether the first call landed or not, the
            # signal must now count exactly once, in the store and in the policy.
            stub.RecordFeedback(thumbs(decision.query_id))
            stats = stub.GetStats(pb.GetStatsRequest())
            assert dict(stats.feedback_counts) == {"thumbs": 1}
            weights = {m.model_id: m.weight_sum for m in stats.models}
            assert weights[decision.selected_model] == pytest.approx(1.0)
    finally:
        assert second.terminate() == 0


def test_restart_on_sqlite_keeps_pending_queries(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state' / 'conduit.db'}"
    first = Sidecar(["--store-url", url], tmp_path / "first.log")
    try:
        with first.channel() as channel:
            stub = first.stub(channel)
            decision = stub.Route(pb.RouteRequest(text="before the restart", session_id="s-r"))
            stub.Track(pb.TrackRequest(query_id=decision.query_id, cost_usd=0.001, latency_s=1))
    finally:
        assert first.terminate() == 0
    second = Sidecar(["--store-url", url], tmp_path / "second.log")
    try:
        with second.channel() as channel:
            stub = second.stub(channel)
            assert stub.GetStats(pb.GetStatsRequest()).pending_queries == 1
            result = stub.RecordFeedback(thumbs(decision.query_id))
            assert not result.duplicate and result.reward == 1.0
            stats = {m.model_id: m for m in stub.GetStats(pb.GetStatsRequest()).models}
            assert stats[decision.selected_model].weight_sum > 0  # it reached the policy
            session = stub.RecordSessionFeedback(
                pb.RecordSessionFeedbackRequest(
                    session_id="s-r", signal_type="rating", payload=payload(rating=5)
                )
            )
            assert [r.query_id for r in session.results] == [decision.query_id]
    finally:
        assert second.terminate() == 0


def serve_once(listen: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """`conduit-sidecar serve` in a child process, for settings it must refuse at start-up."""
    return subprocess.run(
        [sys.executable, "-m", "conduit_sidecar", "serve", "--listen", listen, *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_taken_port_is_a_clear_startup_error(sidecar: Sidecar) -> None:
    result = serve_once(sidecar.target, "--store-url", "memory://")
    assert result.returncode == 1
    assert f"listen: cannot bind {sidecar.target}" in result.stderr
    # The metrics port too: it used to say only "[Errno 98] Address already in use".
    assert sidecar.metrics_port is not None
    result = serve_once(
        "127.0.0.1:0", "--store-url", "memory://", "--metrics-port", str(sidecar.metrics_port)
    )
    assert result.returncode == 1
    assert f"metrics_port: cannot serve on 127.0.0.1:{sidecar.metrics_port}" in result.stderr


def test_an_unusable_tls_certificate_is_named_at_startup(tmp_path: Path) -> None:
    # grpc only reports that it failed to bind: the error used to blame "listen".
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    result = serve_once(
        "127.0.0.1:0", "--store-url", "memory://", "--tls-cert", str(cert), "--tls-key", str(key)
    )
    assert result.returncode == 1
    assert "tls_cert/tls_key: not a usable PEM certificate and private key" in result.stderr


async def test_shutdown_runs_every_hook_after_draining() -> None:
    config = SidecarConfig(listen="127.0.0.1:0", store_url="memory://").validate()
    server = SidecarServer(config, await SidecarApp.create(config), shutdown_delay_s=0.0)
    await server.start()
    calls: list[str] = []

    def sync_hook() -> None:
        calls.append("sync")

    def failing_hook() -> None:
        calls.append("failing")
        raise RuntimeError("disk full")

    async def async_hook() -> None:
        response = await server.health.Check(health_pb2.HealthCheckRequest(service=""), None)
        calls.append(f"async:{response.status}")

    server.on_shutdown += [sync_hook, failing_hook, async_hook]
    await server.shutdown()
    assert calls == ["sync", "failing", f"async:{NOT_SERVING}"]


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:1/0", "postgresql://conduit:pw@127.0.0.1:1/conduit"]
)
def test_an_unreachable_store_at_startup_exits_1_without_leaking_secrets(url: str) -> None:
    result = serve_once("127.0.0.1:0", "--store-url", url)
    assert result.returncode == 1
    assert "127.0.0.1:1" in result.stderr and "Traceback" not in result.stderr
    assert ":pw@" not in result.stderr


def test_a_file_that_is_not_a_database_is_named_at_startup(tmp_path: Path) -> None:
    # The store's refusal named the path but not the setting it came from.
    path = tmp_path / "conduit.db"
    path.write_bytes(b"not a database, " * 512)
    result = serve_once("127.0.0.1:0", "--store-url", f"sqlite:///{path}")
    assert result.returncode == 1
    assert result.stderr.startswith("conduit-sidecar: store_url: "), result.stderr
    assert "file is not a database" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:notaport/0",
        "redis://127.0.0.1:99999/0",
        "postgresql://conduit:pw@127.0.0.1:abc/conduit",
    ],
)
def test_a_malformed_store_url_is_a_setting_error_not_a_traceback(url: str) -> None:
    # The libraries' URL parsers raise a bare ValueError (Redis.from_url when the store is
    # built, asyncpg when its pool connects); it escaped serve as a traceback with exit 1.
    result = serve_once("127.0.0.1:0", "--store-url", url)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("conduit-sidecar: store_url: "), result.stderr
    assert "Traceback" not in result.stderr and ":pw@" not in result.stderr


def test_sigterm_with_a_hung_postgresql_still_exits(tmp_path: Path) -> None:
    namespace = "t" + os.urandom(8).hex()
    url = urlsplit(POSTGRES_URL)
    relay = FreezableRelay(url.hostname or "127.0.0.1", url.port or 5432)
    relayed = url._replace(netloc=f"{url.username}@127.0.0.1:{relay.port}").geturl()
    server = Sidecar(
        ["--store-url", relayed, "--state-namespace", namespace, "--grace-s", "1"],
        tmp_path / "sidecar.log",
    )
    try:
        with server.channel() as channel:
            stub = server.stub(channel)
            decision = stub.Route(pb.RouteRequest(text="before the partition"))
            stub.Track(pb.TrackRequest(query_id=decision.query_id, latency_s=0.5))
        relay.frozen.set()
        time.sleep(6)  # the pending-gauge refresh (every 5 s) is now waiting on the store
        server.proc.terminate()  # SIGTERM
        # Each step of shutdown is bounded; the closing connection pool waited for its
        # stalled connections forever (asyncpg: "Pool.close() is taking over 60 seconds").
        assert server.proc.wait(timeout=90) == 0
    finally:
        server.stop()
        relay.close()

        async def drop() -> None:
            import asyncpg

            state = PostgresPolicyStateStore(POSTGRES_URL, namespace=namespace)
            await state.delete_all()
            await state.close()
            conn = await asyncpg.connect(POSTGRES_URL)
            await conn.execute(f"DROP SCHEMA IF EXISTS {namespace} CASCADE")
            await conn.close()

        asyncio.run(drop())
    assert "stopped after" in server.log()


def test_a_sqlite_store_whose_directory_cannot_be_made_names_store_url(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'a-file' / 'state' / 'conduit.db'}"
    result = serve_once("127.0.0.1:0", "--store-url", url)
    assert result.returncode == 1, result.stderr
    # It said only "[Errno 20] Not a directory: '...'", naming no setting.
    assert result.stderr.startswith("conduit-sidecar: store_url: cannot create "), result.stderr


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    server = Sidecar(["--store-url", "memory://", "--json-logs"], tmp_path / "sidecar.log")
    assert server.terminate() == 0
    entries = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    messages = [e["msg"] for e in entries]
    assert any(m.startswith("serving conduit.v1.ConduitService on 127.0.0.1:") for m in messages)
    assert any(m.startswith("stopped after") for m in messages)
    assert {"ts", "level", "logger", "msg"} <= set(entries[0])


def test_the_serving_process_tunes_the_garbage_collector() -> None:
    import gc

    from conduit_sidecar.server import GC_THRESHOLDS, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # start-up objects are out of every collection
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
