"""The Python clients against a real sidecar: the API mirrors the library, errors come back as
the library's exceptions, and retries ride out a sidecar restart."""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_fixtures import Sidecar, serving, sidecar

from conduit_sidecar._proto import conduit_pb2 as pb
from conduit_sidecar._proto import conduit_pb2_grpc as pb_grpc
from conduit_sidecar.client import AsyncConduitClient, ConduitClient
from conduit_sidecar.errors import InvalidArgument, NoEligibleModel, NotFound, Unavailable
from conduit_sidecar.feedback import FeedbackEvent, SessionFeedback
from conduit_sidecar.query import Constraints, Query
from conduit_sidecar.reward import RewardWeights

__all__ = ["sidecar"]  # fixture imported for pytest


def test_sync_client_mirrors_the_python_api(sidecar: Sidecar) -> None:
    with ConduitClient(sidecar.target) as client:
        models = client.list_models()
        assert len(models) >= 3 and models[0].id
        query = Query(
            text="Explain recursion to a child.",
            session_id="client-session",
            metadata={"tenant": "acme"},
            reward_weights=RewardWeights(2, 1, 1),
            constraints=Constraints(allowed_models=[m.id for m in models[:2]]),
        )
        decision = client.route(query, include_features=True)
        assert decision.query_id == query.query_id  # the client fixed it before sending
        assert decision.selected_model in {m.id for m in models[:2]}
        assert decision.session_id == "client-session" and decision.metadata == {"tenant": "acme"}
        assert decision.reward_weights.quality == pytest.approx(0.5)
        assert len(decision.features) == 64
        client.track(decision, cost=0.001, latency=0.5)
        event = FeedbackEvent(
            query_id=decision.query_id, signal_type="thumbs", payload={"value": "up"}
        )
        result = client.record(event)
        assert (result.reward, result.confidence, result.duplicate) == (1.0, 1.0, False)
        assert client.record(event).duplicate
        results = client.record_session_feedback(
            SessionFeedback(
                session_id="client-session", signal_type="rating", payload={"rating": 5}
            )
        )
        assert [r.query_id for r in results] == [decision.query_id]
        assert results[0].confidence == pytest.approx(0.5)  # the spec's default propagation
        reward = client.update(
            model_id=decision.selected_model, cost=0.001, quality_score=0.9, latency=0.5,
            features=decision.features,
        )  # fmt: skip
        assert 0.0 < reward <= 1.0
        stats = client.get_stats()
        assert stats.models[decision.selected_model].selections >= 1
        assert stats.feedback_counts["thumbs"] >= 1 and stats.pending_queries >= 1


async def test_async_client_mirrors_the_python_api(sidecar: Sidecar) -> None:
    async with AsyncConduitClient(sidecar.target) as client:
        decision = await client.route(Query(text="What is Python?"))
        assert decision.features == []  # not requested: responses stay small
        await client.track(decision.query_id, cost=0.002, latency=1.0, retries=1)
        result = await client.record(
            FeedbackEvent(decision.query_id, "quality_score", {"score": 0.25}, "my-key-1")
        )
        assert result.reward == 0.25 and not result.duplicate
        assert (await client.get_stats()).policy == "linucb"
        assert len(await client.list_models()) >= 3


def test_errors_are_the_library_exceptions(sidecar: Sidecar) -> None:
    with ConduitClient(sidecar.target) as client:
        with pytest.raises(InvalidArgument) as bad:
            client.route(Query(text=""))
        assert bad.value.field == "text"
        with pytest.raises(NotFound, match="no-such-query"):
            client.record(FeedbackEvent("no-such-query", "thumbs", {"value": "up"}))
        with pytest.raises(NoEligibleModel):
            client.route(Query(text="hi", constraints=Constraints(max_cost_usd=1e-12)))
        with pytest.raises(InvalidArgument) as signal:
            client.record(FeedbackEvent("q", "smiley", {}))
        assert signal.value.field == "signal_type"
        # Spec compatibility: both are ValueErrors, as the library raises them.
        assert issubclass(NotFound, ValueError) and issubclass(InvalidArgument, ValueError)


def test_arguments_that_cannot_be_sent_are_invalid_argument(sidecar: Sidecar) -> None:
    # What protobuf cannot encode used to escape as its own TypeError / ValueError ("Value
    # out of range: -1", "bad argument type for built-in operation"), naming no field; a
    # TypeError is not even caught by the spec's `except ValueError`.
    with ConduitClient(sidecar.target) as client:
        decision = client.route(Query(text="encoding checks"))
        thumbs = FeedbackEvent(decision.query_id, "thumbs", {1: "up"})  # type: ignore[dict-item]
        cases: list[tuple[str, Callable[[], object]]] = [
            ("retries", lambda: client.track(decision, retries=-1)),
            ("retries", lambda: client.track(decision, retries=2**32)),
            ("cost_usd", lambda: client.track(decision, cost="cheap")),  # type: ignore[arg-type]
            ("payload", lambda: client.record(thumbs)),
            (
                "payload",
                lambda: client.record_session_feedback(
                    SessionFeedback("s", "thumbs", {"value": object()})
                ),
            ),
            ("features", lambda: client.update("gpt-4o-mini", 0.1, 0.5, 1.0, None)),  # type: ignore[arg-type]
            ("max_cost_usd", lambda: client.route(Query("hi", constraints=Constraints("1")))),  # type: ignore[arg-type]
        ]
        for field, call in cases:
            with pytest.raises(InvalidArgument) as info:
                call()
            assert info.value.field == field, info.value
        client.track(decision, cost=0.001, retries=1)  # nothing above reached the query


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_nothing_listening_is_unavailable_after_bounded_retries() -> None:
    started = time.monotonic()
    with ConduitClient(f"127.0.0.1:{_closed_port()}", timeout_s=2.0, max_attempts=3) as client:
        with pytest.raises(Unavailable, match="UNAVAILABLE"):
            client.get_stats()
    assert time.monotonic() - started < 5.0


def test_feedback_retries_ride_out_a_sidecar_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conduit.db'}"
    first = Sidecar(["--store-url", url], tmp_path / "first.log")
    port = first.port
    with ConduitClient(first.target, timeout_s=30.0, max_attempts=100, backoff_s=0.1) as client:
        decision = client.route(Query(text="before the restart"))
        assert first.terminate() == 0
        servers: list[Sidecar] = []

        def restart() -> None:
            time.sleep(1.0)
            servers.append(Sidecar(["--listen", f"127.0.0.1:{port}", "--store-url", url],
                                   tmp_path / "second.log"))  # fmt: skip

        thread = threading.Thread(target=restart)
        thread.start()
        try:
            result = client.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
            assert result.reward == 1.0 and not result.duplicate
        finally:
            thread.join()
            for server in servers:
                assert server.terminate() == 0


def test_client_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        ConduitClient(timeout_s=0)
    # An infinite (or past ~292 years) timeout was accepted, and grpc then failed every call
    # at once with DEADLINE_EXCEEDED, reported as Unavailable; a NaN backoff made the first
    # retry's sleep raise.
    for timeout_s in (math.inf, math.nan, 1e12):
        with pytest.raises(ValueError, match="timeout_s"):
            ConduitClient(timeout_s=timeout_s)
    for backoff_s in (math.inf, math.nan):
        with pytest.raises(ValueError, match="backoff_s"):
            ConduitClient(backoff_s=backoff_s)
    # grpc accepted anything, then failed every call until the deadline ("Failed to create
    # security handshaker", retried as UNAVAILABLE).
    with pytest.raises(ValueError, match="root_certificates"):
        ConduitClient(root_certificates=b"not a certificate")
    # No header can carry these: every call failed, the async client's with grpc's own
    # ExecuteBatchError instead of a domain exception.
    for token in ("t\u00f6k\u00e9n", "a\nb", "tab\there"):
        with pytest.raises(ValueError, match="token must be printable ASCII"):
            AsyncConduitClient(token=token)


class _StoppingSidecar(pb_grpc.ConduitServiceServicer):  # type: ignore[misc]
    """A real gRPC server on loopback whose first call of each method is cancelled, as a
    sidecar that is shutting down does to calls arriving at that moment (grpc/grpc#41785): a
    failure a running sidecar cannot be made to produce on demand."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def _first_is_cancelled(self, method: str, context: Any) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        if self.calls[method] == 1:
            context.abort(grpc.StatusCode.CANCELLED, "the sidecar is shutting down")

    def RecordFeedback(self, request: Any, context: Any) -> Any:
        self._first_is_cancelled("RecordFeedback", context)
        return pb.RecordFeedbackResponse(
            query_id=request.query_id, signal_type=request.signal_type, reward=1.0, confidence=1.0
        )

    def Update(self, request: Any, context: Any) -> Any:
        self._first_is_cancelled("Update", context)
        return pb.UpdateResponse(reward=0.5)


def test_a_call_the_server_cancelled_is_retried_when_a_retry_is_safe() -> None:
    servicer = _StoppingSidecar()
    with serving(servicer) as target:
        with ConduitClient(target, timeout_s=5.0, backoff_s=0.01) as client:
            # Feedback is idempotent: it used to fail at once with "CANCELLED".
            result = client.record(FeedbackEvent("q-1", "thumbs", {"value": "up"}))
            assert result.reward == 1.0 and servicer.calls["RecordFeedback"] == 2
            # Update is not: a cancelled attempt may have been applied, so it is not repeated.
            with pytest.raises(Unavailable, match="CANCELLED"):
                client.update("m", cost=0.0, quality_score=1.0, latency=0.1, features=[0.0] * 64)
            assert servicer.calls["Update"] == 1


def test_an_async_client_made_outside_an_event_loop_works_in_one(sidecar: Sidecar) -> None:
    # Made at import time or in a synchronous factory (the usual application global), its
    # channel was bound to another loop: every call failed with "attached to a different
    # loop". A second asyncio.run (a new loop) works too.
    client = AsyncConduitClient(sidecar.target)

    async def use() -> int:
        return len(await client.list_models())

    assert asyncio.run(use()) >= 3
    assert asyncio.run(use()) >= 3
    asyncio.run(client.close())
