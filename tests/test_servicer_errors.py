"""Every bad input gets its status code and a message naming the field, over real gRPC.

One sidecar process (in-memory store) serves the whole module; each test routes its own
queries, so they are independent of each other's order.
"""

from __future__ import annotations

import math
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_fixtures import Sidecar, sidecar, stub

from conduit_sidecar._proto import conduit_pb2 as pb
from conduit_sidecar._proto import conduit_pb2_grpc as pb_grpc
from tests.conftest import StoreFactory

__all__ = ["sidecar", "stub"]  # fixtures imported for pytest
FEATURE_DIM = 64


def expect(code: grpc.StatusCode, field: str, call: Callable[[], Any]) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()
    error: Any = info.value
    assert error.code() == code, error.details()
    details: str = error.details()
    assert field in details, details
    return details


def payload(**values: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def routed(stub: Any, **kwargs: Any) -> pb.RouteResponse:
    response: pb.RouteResponse = stub.Route(pb.RouteRequest(text="What is Python?", **kwargs))
    return response


def test_route_refuses_empty_and_oversized_text(stub: Any) -> None:
    expect(grpc.StatusCode.INVALID_ARGUMENT, "text", lambda: stub.Route(pb.RouteRequest()))
    details = expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        "text",
        lambda: stub.Route(pb.RouteRequest(text="x" * 100_001)),
    )
    assert details.startswith("text") and "100000" in details


@pytest.mark.parametrize(
    ("features", "why"),
    [([0.1] * (FEATURE_DIM - 1), "length"), ([math.nan] * FEATURE_DIM, "nan")],
)
def test_route_refuses_bad_features(stub: Any, features: list[float], why: str) -> None:
    request = pb.RouteRequest(text="hello", features=features)
    expect(grpc.StatusCode.INVALID_ARGUMENT, "features", lambda: stub.Route(request))


def test_route_refuses_bad_preference_weights_and_ttl(stub: Any) -> None:
    bad_pref = pb.RouteRequest(text="hello", preference="cheapest")
    expect(grpc.StatusCode.INVALID_ARGUMENT, "preference", lambda: stub.Route(bad_pref))
    zero = pb.RouteRequest(text="hello", reward_weights=pb.RewardWeights())
    expect(grpc.StatusCode.INVALID_ARGUMENT, "reward_weights", lambda: stub.Route(zero))
    negative = pb.RouteRequest(text="hello", reward_weights=pb.RewardWeights(quality=-1, cost=2))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "reward_weights", lambda: stub.Route(negative))
    ttl = pb.RouteRequest(text="hello", ttl_s=-1)
    expect(grpc.StatusCode.INVALID_ARGUMENT, "ttl_s", lambda: stub.Route(ttl))


def test_route_constraints(stub: Any) -> None:
    unknown = pb.RouteRequest(
        text="hello", constraints=pb.Constraints(allowed_models=["no-such-model"])
    )
    expect(grpc.StatusCode.INVALID_ARGUMENT, "no-such-model", lambda: stub.Route(unknown))
    nan_cost = pb.RouteRequest(text="hello", constraints=pb.Constraints(max_cost_usd=math.nan))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "max_cost_usd", lambda: stub.Route(nan_cost))
    negative = pb.RouteRequest(text="hello", constraints=pb.Constraints(max_latency_s=-2))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "max_latency_s", lambda: stub.Route(negative))
    # Valid constraints that leave no model: the request is fine, the catalogue is not.
    nothing = pb.RouteRequest(text="hello", constraints=pb.Constraints(max_cost_usd=1e-12))
    details = expect(
        grpc.StatusCode.FAILED_PRECONDITION, "max_cost_usd", lambda: stub.Route(nothing)
    )
    assert details


def test_track_refuses_bad_outcomes_and_unknown_queries(stub: Any) -> None:
    query_id = routed(stub).query_id
    for field, request in [
        ("cost_usd", pb.TrackRequest(query_id=query_id, cost_usd=math.nan)),
        ("cost_usd", pb.TrackRequest(query_id=query_id, cost_usd=-0.01)),
        ("latency_s", pb.TrackRequest(query_id=query_id, latency_s=math.inf)),
        ("ttl_s", pb.TrackRequest(query_id=query_id, ttl_s=0)),
    ]:
        expect(grpc.StatusCode.INVALID_ARGUMENT, field, lambda r=request: stub.Track(r))
    expect(
        grpc.StatusCode.NOT_FOUND,
        "no-such-query",
        lambda: stub.Track(pb.TrackRequest(query_id="no-such-query", cost_usd=0.001)),
    )
    # The message starts with the request's field, not the Python API's parameter
    # ("decision: must be a RoutingDecision or a query_id" meant nothing to a Go client).
    for blank in ("", "  "):
        request = pb.TrackRequest(query_id=blank, cost_usd=0.001)
        details = expect(
            grpc.StatusCode.INVALID_ARGUMENT, "query_id", lambda r=request: stub.Track(r)
        )
        assert details.startswith("query_id: "), details
    # Nothing above touched the query: it still takes its outcome.
    stub.Track(pb.TrackRequest(query_id=query_id, cost_usd=0.001, latency_s=0.4))


def test_feedback_refuses_bad_signals_and_keeps_the_query(stub: Any) -> None:
    query_id = routed(stub).query_id
    cases = [
        ("signal_type", pb.RecordFeedbackRequest(query_id=query_id, signal_type="smiley")),
        ("query_id", pb.RecordFeedbackRequest(signal_type="thumbs", payload=payload(value="up"))),
        (
            "payload",
            pb.RecordFeedbackRequest(
                query_id=query_id, signal_type="thumbs", payload=payload(value="sideways")
            ),
        ),
        (
            "rating",
            pb.RecordFeedbackRequest(query_id=query_id, signal_type="rating", payload=payload()),
        ),
        (
            "rating",
            pb.RecordFeedbackRequest(
                query_id=query_id, signal_type="rating", payload=payload(rating=9)
            ),
        ),
    ]
    for field, request in cases:
        expect(grpc.StatusCode.INVALID_ARGUMENT, field, lambda r=request: stub.RecordFeedback(r))
    missing = pb.RecordFeedbackRequest(
        query_id="never-routed", signal_type="thumbs", payload=payload(value="up")
    )
    expect(grpc.StatusCode.NOT_FOUND, "never-routed", lambda: stub.RecordFeedback(missing))
    good = pb.RecordFeedbackRequest(
        query_id=query_id, signal_type="thumbs", payload=payload(value="up")
    )
    first = stub.RecordFeedback(good)
    again = stub.RecordFeedback(good)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert (again.reward, again.confidence) == (first.reward, first.confidence) == (1.0, 1.0)


def test_errors_echoing_a_huge_value_keep_their_status(stub: Any) -> None:
    # The messages quote what the client sent; a status message travels in the trailers,
    # which clients cap (grpcio: 16 KiB hard, Java: 8 KiB), so a long echoed value used to
    # reach the client as RESOURCE_EXHAUSTED "Stream removed" instead of its status.
    query_id = routed(stub).query_id
    long_value = "v" * 20_000
    sideways = pb.RecordFeedbackRequest(
        query_id=query_id, signal_type="thumbs", payload=payload(value=long_value)
    )
    details = expect(
        grpc.StatusCode.INVALID_ARGUMENT, "vvvv", lambda: stub.RecordFeedback(sideways)
    )
    assert "truncated" in details and len(details.encode()) < 2_000
    unknown = pb.RecordFeedbackRequest(query_id=query_id, signal_type="\u00e9" * 6_000)
    details = expect(
        grpc.StatusCode.INVALID_ARGUMENT, "signal_type", lambda: stub.RecordFeedback(unknown)
    )
    assert details.startswith("signal_type")
    allowed = pb.RouteRequest(text="hi", constraints=pb.Constraints(allowed_models=[long_value]))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "allowed_models", lambda: stub.Route(allowed))


def test_a_reused_query_id_answers_the_logged_decision(stub: Any) -> None:
    # A caller-chosen query_id (the application's request id) that is already pending: a
    # retried Route, or an id reused by the application. The store keeps the first decision
    # and all feedback for the id updates its model; the second Route used to answer a fresh
    # decision, so the application called a model whose outcome was credited to another.
    def weight(model: str) -> float:
        stats = stub.GetStats(pb.GetStatsRequest())
        return next(m.weight_sum for m in stats.models if m.model_id == model)

    def route(model: str) -> pb.RouteResponse:
        only = pb.Constraints(allowed_models=[model])
        return routed(stub, query_id="app-request-17", constraints=only, include_features=True)

    def selections() -> dict[str, int]:
        return {m.model_id: m.selections for m in stub.GetStats(pb.GetStatsRequest()).models}

    counted = selections()
    first = route("gpt-4o-mini")
    again = route("gpt-4o")
    assert again.selected_model == first.selected_model == "gpt-4o-mini"
    # The model chosen once, by the first Route; the retry's own decision was never answered
    # (it used to count a selection of gpt-4o).
    after = selections()
    assert after["gpt-4o-mini"] == counted["gpt-4o-mini"] + 1
    assert after["gpt-4o"] == counted["gpt-4o"]
    assert (again.propensity, again.features) == (first.propensity, first.features)
    before = weight(again.selected_model)
    stub.RecordFeedback(
        pb.RecordFeedbackRequest(
            query_id="app-request-17", signal_type="thumbs", payload=payload(value="up")
        )
    )
    assert weight(again.selected_model) > before


def test_expired_query_is_not_found(stub: Any) -> None:
    query_id = routed(stub, ttl_s=0.2).query_id
    time.sleep(0.5)
    request = pb.RecordFeedbackRequest(
        query_id=query_id, signal_type="thumbs", payload=payload(value="up")
    )
    expect(grpc.StatusCode.NOT_FOUND, query_id, lambda: stub.RecordFeedback(request))


def test_session_feedback_errors(stub: Any) -> None:
    empty = pb.RecordSessionFeedbackRequest(signal_type="thumbs", payload=payload(value="up"))
    expect(
        grpc.StatusCode.INVALID_ARGUMENT, "session_id", lambda: stub.RecordSessionFeedback(empty)
    )
    routed(stub, session_id="s-errors")
    weight = pb.RecordSessionFeedbackRequest(
        session_id="s-errors", signal_type="thumbs", payload=payload(value="up"),
        propagation_weight=1.5,
    )  # fmt: skip
    expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        "propagation_weight",
        lambda: stub.RecordSessionFeedback(weight),
    )
    nobody = pb.RecordSessionFeedbackRequest(
        session_id="s-nobody", signal_type="thumbs", payload=payload(value="up")
    )
    expect(grpc.StatusCode.NOT_FOUND, "s-nobody", lambda: stub.RecordSessionFeedback(nobody))


def test_update_refuses_bad_input(stub: Any) -> None:
    features = list(routed(stub, include_features=True).features)
    assert len(features) == FEATURE_DIM
    base = {"model_id": "gpt-4o-mini", "cost_usd": 0.001, "quality_score": 0.8, "latency_s": 1}
    cases = [
        ("model_id", {**base, "model_id": "no-such-model"}),
        # The request's field names, not the Python API's cost / latency parameters.
        ("cost_usd: ", {**base, "cost_usd": math.nan}),
        ("cost_usd: ", {**base, "cost_usd": -1.0}),
        ("quality_score", {**base, "quality_score": 1.5}),
        ("latency_s: ", {**base, "latency_s": -3.0}),
        ("confidence", {**base, "confidence": 2.0}),
    ]
    for field, values in cases:
        request = pb.UpdateRequest(features=features, **values)
        expect(grpc.StatusCode.INVALID_ARGUMENT, field, lambda r=request: stub.Update(r))
    no_features = pb.UpdateRequest(**base)
    expect(grpc.StatusCode.INVALID_ARGUMENT, "features", lambda: stub.Update(no_features))
    assert 0.0 <= stub.Update(pb.UpdateRequest(features=features, **base)).reward <= 1.0


def test_garbage_bytes_are_invalid_argument_not_internal(sidecar: Sidecar) -> None:
    # Invalid UTF-8 inside field 1 (text, a proto3 string) and a truncated varint.
    for data in (b"\x0a\x02\xff\xfe", b"\x08\xff"):
        with sidecar.channel() as channel:
            raw = channel.unary_unary(
                "/conduit.v1.ConduitService/Route",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            expect(
                grpc.StatusCode.INVALID_ARGUMENT, "request", lambda d=data, r=raw: r(d, timeout=5)
            )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_store_is_unavailable(tmp_path: Path) -> None:
    # A private Redis that this test owns, so it can be stopped under a running sidecar.
    port = _free_port()
    redis = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        server = Sidecar(["--store-url", f"redis://127.0.0.1:{port}/0"], tmp_path / "sidecar.log")
        try:
            with server.channel() as channel:
                stub = server.stub(channel)
                query_id = stub.Route(pb.RouteRequest(text="hello")).query_id
                redis.terminate()
                redis.wait(timeout=10)
                track = pb.TrackRequest(query_id=query_id, cost_usd=0.001)
                expect(grpc.StatusCode.UNAVAILABLE, "", lambda: stub.Track(track, timeout=10))
                # Routing never depends on the store: the local policy answers (issue 5).
                assert stub.Route(pb.RouteRequest(text="hello"), timeout=10).selected_model
        finally:
            assert server.terminate() == 0
    finally:
        if redis.poll() is None:
            redis.kill()
            redis.wait()


def test_locked_sqlite_store_is_unavailable_then_recovers(tmp_path: Path) -> None:
    db = tmp_path / "conduit.db"
    server = Sidecar(["--store-url", f"sqlite:///{db}"], tmp_path / "sidecar.log")
    try:
        with server.channel() as channel:
            stub = server.stub(channel)
            query_id = stub.Route(pb.RouteRequest(text="creates the tables")).query_id
            # Another process holding the write lock past the store's busy timeout (10 s).
            lock = sqlite3.connect(db, timeout=1, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
            try:
                track = pb.TrackRequest(query_id=query_id, latency_s=0.5)
                expect(
                    grpc.StatusCode.UNAVAILABLE,
                    "database is locked",
                    lambda: stub.Track(track, timeout=30),
                )
            finally:
                lock.execute("COMMIT")
                lock.close()
            assert stub.Route(pb.RouteRequest(text="works again")).selected_model
    finally:
        assert server.terminate() == 0


async def test_store_keys_and_ttl_are_checked_the_same_on_every_backend(
    store_factory: StoreFactory,
) -> None:
    # Found on real servers: PostgreSQL text cannot hold a NUL and its B-tree refuses an
    # index row past ~2.7 KB, and Redis refuses a PEXPIRE past 2**63 ms. A client's NUL or
    # huge id, or ttl_s=1e300, came back UNAVAILABLE ("safe to retry", so the client retried
    # a request that can never succeed) or, on Route, answered OK with the decision silently
    # unlogged (its Track then NOT_FOUND). The memory and SQLite stores took them.
    from conduit_sidecar.config import MAX_TTL_S
    from conduit_sidecar.feedback import FeedbackCollector
    from conduit_sidecar.feedback.adapters import builtin_adapters
    from conduit_sidecar.router import Router
    from conduit_sidecar.server import add_conduit_service
    from conduit_sidecar.servicer import ConduitServicer

    router = Router()
    collector = FeedbackCollector(router, await store_factory.open())
    for adapter in builtin_adapters():
        collector.register_adapter(adapter)
    server = grpc.aio.server()
    add_conduit_service(ConduitServicer(router, collector), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ConduitServiceStub(channel)

            async def refused(field: str, method: Any, request: Any) -> None:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await method(request, timeout=20)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
                assert (info.value.details() or "").startswith(field), info.value.details()

            # 128 distinct 4-byte characters: 512 bytes of UTF-8, the longest id allowed.
            longest = "".join(chr(0x1F300 + i) for i in range(128))
            too_long = "".join(chr(0x4E00 + i) for i in range(3_000))  # 9,000 bytes
            for field, request in [
                ("query_id", pb.RouteRequest(text="hi", query_id="a\x00b")),
                ("query_id", pb.RouteRequest(text="hi", query_id=too_long)),
                ("session_id", pb.RouteRequest(text="hi", session_id="s\x00")),
                ("session_id", pb.RouteRequest(text="hi", session_id=too_long)),
                ("ttl_s", pb.RouteRequest(text="hi", ttl_s=1e300)),
            ]:
                await refused(field, stub.Route, request)
            query_id = longest[:100] + "-q"
            decision = await stub.Route(
                pb.RouteRequest(text="hi", query_id=query_id, session_id=longest, ttl_s=MAX_TTL_S)
            )
            assert decision.query_id == query_id
            await refused(
                "query_id", stub.Track, pb.TrackRequest(query_id="a\x00b", cost_usd=0.001)
            )
            await refused("ttl_s", stub.Track, pb.TrackRequest(query_id=query_id, ttl_s=1e300))
            thumbs = {"signal_type": "thumbs", "payload": payload(value="up")}
            for key in ("k\x00", too_long):
                await refused(
                    "idempotency_key",
                    stub.RecordFeedback,
                    pb.RecordFeedbackRequest(query_id=query_id, idempotency_key=key, **thumbs),
                )
                await refused(
                    "idempotency_key",
                    stub.RecordSessionFeedback,
                    pb.RecordSessionFeedbackRequest(
                        session_id=longest, idempotency_key=key, **thumbs
                    ),
                )
            # Nothing above reached the query; the longest ids and TTL work everywhere.
            await stub.Track(pb.TrackRequest(query_id=query_id, cost_usd=0.001, ttl_s=MAX_TTL_S))
            results = await stub.RecordSessionFeedback(
                pb.RecordSessionFeedbackRequest(
                    session_id=longest, idempotency_key=longest, **thumbs
                )
            )
            assert [(r.query_id, r.duplicate) for r in results.results] == [(query_id, False)]
    finally:
        await server.stop(None)


def test_struct_payloads_read_as_message_to_dict_reads_them() -> None:
    from google.protobuf import json_format, struct_pb2

    from conduit_sidecar.servicer import _struct

    payload = struct_pb2.Struct()
    payload.update(
        {
            "value": "up",
            "rating": 5,
            "ok": True,
            "none": None,
            "nested": {"a": [1, "x", False, None, {"b": 2.5}], "empty": {}},
            "list": [],
        }
    )
    payload.fields["unset"].CopyFrom(struct_pb2.Value())  # a Value with no kind
    assert _struct(payload) == json_format.MessageToDict(payload)
