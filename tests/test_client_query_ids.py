"""Which query_id the clients send: the same Query routed twice through a client is two
decisions, as through the embedded Router (Query.decision_id), and a retried Route RPC within
one route call carries the id of its first attempt (the sidecar answers the logged decision).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc_fixtures import Sidecar, serving, sidecar

from conduit_sidecar._proto import conduit_pb2 as pb
from conduit_sidecar._proto import conduit_pb2_grpc as pb_grpc
from conduit_sidecar.client import AsyncConduitClient, ConduitClient
from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.feedback import FeedbackEvent
from conduit_sidecar.query import Query

__all__ = ["sidecar"]  # fixture imported for pytest


def test_one_query_routed_twice_is_two_decisions(sidecar: Sidecar) -> None:
    with ConduitClient(sidecar.target) as client:
        query = Query(text="Summarise this paragraph, twice.")
        first = client.route(query)
        second = client.route(query)  # a regeneration of the same query
        assert first.query_id == query.query_id  # the generated id names the first one
        # It returned the first decision again: the second's Track and feedback were
        # credited to the first one's model.
        assert second.query_id != first.query_id
        client.track(first, cost=0.001, latency=0.5)
        client.track(second, cost=0.002, latency=0.7)
        for decision in (first, second):
            event = FeedbackEvent(decision.query_id, "thumbs", {"value": "up"})
            assert not client.record(event).duplicate  # each is a decision of its own
        assert client.route(query).query_id not in (first.query_id, second.query_id)


async def test_one_query_routed_twice_is_two_decisions_async(sidecar: Sidecar) -> None:
    async with AsyncConduitClient(sidecar.target) as client:
        query = Query(text="Translate this, twice.")
        first = await client.route(query)
        second = await client.route(query)
        assert first.query_id == query.query_id and second.query_id != first.query_id
        await client.track(second, cost=0.001, latency=0.5)
        event = FeedbackEvent(second.query_id, "thumbs", {"value": "down"})
        assert not (await client.record(event)).duplicate


def test_a_route_refused_before_sending_uses_up_no_id(sidecar: Sidecar) -> None:
    with ConduitClient(sidecar.target) as client:
        query = Query(text="First refused, then routed.")
        with pytest.raises(InvalidArgument, match="ttl_s"):
            client.route(query, ttl_s="soon")  # type: ignore[arg-type]
        # No decision was made: the first one still gets the query's own id, as through
        # the embedded Router.
        assert client.route(query).query_id == query.query_id


def test_an_id_the_caller_chose_names_every_decision(sidecar: Sidecar) -> None:
    with ConduitClient(sidecar.target) as client:
        query = Query(text="A request the caller names.", query_id="caller-chosen-id-1")
        first = client.route(query)
        again = client.route(query)  # the sidecar answers the decision it logged
        assert first.query_id == again.query_id == "caller-chosen-id-1"
        assert again.selected_model == first.selected_model


class _FlakyRoute(pb_grpc.ConduitServiceServicer):  # type: ignore[misc]
    """A real gRPC server on loopback whose first attempt of every Route fails UNAVAILABLE
    (a sidecar restarting at that moment) and that records each attempt's query_id: a lost
    attempt cannot be made to happen on demand against a running sidecar."""

    def __init__(self) -> None:
        self.query_ids: list[str] = []

    def Route(self, request: Any, context: Any) -> Any:
        self.query_ids.append(request.query_id)
        if len(self.query_ids) % 2 == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        weights = pb.RewardWeights(quality=1.0, cost=0.0, latency=0.0)
        return pb.RouteResponse(
            query_id=request.query_id, selected_model="m", confidence=1.0, reward_weights=weights
        )


def test_a_retried_route_keeps_its_id_and_the_next_route_gets_another() -> None:
    servicer = _FlakyRoute()
    with serving(servicer) as target:
        with ConduitClient(target, timeout_s=5.0, backoff_s=0.01) as client:
            query = Query(text="retried")
            first = client.route(query)
            second = client.route(query)
        a, a_retry, b, b_retry = servicer.query_ids
        assert a == a_retry == first.query_id == query.query_id  # one id per route call
        assert b == b_retry == second.query_id != a


async def test_a_retried_route_keeps_its_id_async() -> None:
    servicer = _FlakyRoute()
    with serving(servicer) as target:
        async with AsyncConduitClient(target, timeout_s=5.0, backoff_s=0.01) as client:
            query = Query(text="retried", query_id="caller-chosen-id-2")
            first = await client.route(query)
            second = await client.route(query)
        assert servicer.query_ids == ["caller-chosen-id-2"] * 4
        assert first.query_id == second.query_id == "caller-chosen-id-2"
