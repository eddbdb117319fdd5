"""Proto <-> domain translation for the clients (`conduit_sidecar.client`), shared by the
async and the blocking client. The server's side of the same translation is `servicer.py`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2

from ._proto import conduit_pb2 as _pb
from .errors import InvalidArgument
from .feedback.events import FeedbackEvent, FeedbackResult, SessionFeedback, check_payload
from .models import ModelSpec
from .query import Query, RoutingDecision
from .reward import RewardWeights, resolve_weights


@dataclass(frozen=True)
class RemoteModelStats:
    """GetStats for one model (see ModelStats in the proto)."""

    model_id: str
    selections: int
    mean_reward: float
    weight_sum: float
    cost_usd_sum: float
    latency_s_sum: float
    outcomes: int
    mean_cost_usd: float
    mean_latency_s: float


@dataclass(frozen=True)
class SidecarStats:
    models: dict[str, RemoteModelStats]
    pending_queries: int
    feedback_counts: dict[str, int]
    policy: str
    policy_version: int


def _struct(payload: dict[str, Any]) -> struct_pb2.Struct:
    # The library's own check first: its refusals name the payload and its messages are the
    # embedded library's (non-string keys, values that are not JSON, non-finite numbers).
    message = struct_pb2.Struct()
    message.update(check_payload(payload))
    return message


def _set(message: Any, **values: Any) -> None:
    """Sets fields of `message`; what protobuf cannot encode (a negative uint32, a str for a
    double, a non-iterable repeated field, ...) is InvalidArgument naming the field, the
    exception the library raises for bad input, instead of protobuf's own TypeError or
    ValueError."""
    fields = message.DESCRIPTOR.fields_by_name
    for name, value in values.items():
        try:
            if fields[name].is_repeated:  # a repeated or map field: filled, not assigned
                target = getattr(message, name)
                target.update(value) if isinstance(value, dict) else target.extend(value)
            else:
                setattr(message, name, value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidArgument(name, f"cannot be sent: {exc}") from None


def _expect(value: object, kind: type, field: str, what: str) -> None:
    """The library's refusal of an argument of the wrong type (InvalidArgument naming it),
    where reading its attributes raised AttributeError."""
    if not isinstance(value, kind):
        shown = type(value).__name__ if field == "query" else repr(value)
        raise InvalidArgument(field, f"must be {what}, got {shown}")


def route_request(query: Query, include_features: bool, ttl_s: float | None) -> _pb.RouteRequest:
    _expect(query, Query, "query", "a Query")
    request = _pb.RouteRequest()
    _set(
        request,
        text=query.text,
        session_id=query.session_id or "",
        user_id=query.user_id or "",
        metadata={str(k): str(v) for k, v in query.metadata.items()},
        features=query.features if query.features is not None else (),
        preference=query.preference or "",
        include_features=include_features,
    )
    if query.reward_weights is not None:
        w = query.reward_weights
        _set(request.reward_weights, quality=w.quality, cost=w.cost, latency=w.latency)
    c = query.constraints
    if c is not None:
        request.constraints.SetInParent()
        if c.max_cost_usd is not None:
            _set(request.constraints, max_cost_usd=c.max_cost_usd)
        if c.max_latency_s is not None:
            _set(request.constraints, max_latency_s=c.max_latency_s)
        _set(
            request.constraints,
            allowed_models=c.allowed_models or (),
            excluded_models=c.excluded_models or (),
        )
    if ttl_s is not None:
        _set(request, ttl_s=ttl_s)
    # Once per route call, before its retries (a retried RPC carries the same id and the
    # sidecar answers the decision it logged): a generated id names the first decision only,
    # as the embedded Router's (Query.decision_id). Last, so that a request refused above
    # uses up no id, as the Router takes it only when it decides.
    request.query_id = query.decision_id()
    return request


def decision_from(response: _pb.RouteResponse, query: Query) -> RoutingDecision:
    w = response.reward_weights
    return RoutingDecision(
        query_id=response.query_id,
        selected_model=response.selected_model,
        confidence=response.confidence,
        features=list(response.features),
        scores=dict(response.scores),
        propensity=response.propensity,
        reasoning=response.reasoning,
        policy_version=response.policy_version,
        reward_weights=RewardWeights(w.quality, w.cost, w.latency),
        session_id=query.session_id,
        user_id=query.user_id,
        metadata=dict(query.metadata),
    )


def track_request(
    decision: RoutingDecision | str,
    cost: float | None,
    latency: float | None,
    error: bool,
    retries: int,
    ttl_seconds: float | None,
) -> _pb.TrackRequest:
    if not isinstance(decision, str):
        _expect(decision, RoutingDecision, "decision", "a RoutingDecision or a query_id")
    query_id = decision if isinstance(decision, str) else decision.query_id
    request = _pb.TrackRequest()
    _set(request, query_id=query_id, error=error, retries=retries)
    if cost is not None:
        _set(request, cost_usd=cost)
    if latency is not None:
        _set(request, latency_s=latency)
    if ttl_seconds is not None:
        _set(request, ttl_s=ttl_seconds)
    return request


def feedback_request(event: FeedbackEvent) -> _pb.RecordFeedbackRequest:
    _expect(event, FeedbackEvent, "event", "a FeedbackEvent")
    request = _pb.RecordFeedbackRequest(payload=_struct(event.payload))
    _set(
        request,
        query_id=event.query_id,
        signal_type=event.signal_type,
        idempotency_key=event.idempotency_key or "",
    )
    return request


def session_request(feedback: SessionFeedback) -> _pb.RecordSessionFeedbackRequest:
    _expect(feedback, SessionFeedback, "feedback", "a SessionFeedback")
    request = _pb.RecordSessionFeedbackRequest(payload=_struct(feedback.payload))
    _set(
        request,
        session_id=feedback.session_id,
        signal_type=feedback.signal_type,
        propagation_weight=feedback.propagation_weight,
        idempotency_key=feedback.idempotency_key or "",
    )
    return request


def result_from(r: _pb.RecordFeedbackResponse) -> FeedbackResult:
    return FeedbackResult(r.query_id, r.signal_type, r.reward, r.confidence, r.duplicate)


def update_request(
    model_id: str,
    cost: float,
    quality_score: float,
    latency: float,
    features: Sequence[float],
    confidence: float,
    reward_weights: RewardWeights | str | None,
) -> _pb.UpdateRequest:
    request = _pb.UpdateRequest()
    _set(
        request,
        model_id=model_id,
        cost_usd=cost,
        quality_score=quality_score,
        latency_s=latency,
        features=features,
        confidence=confidence,
    )
    if reward_weights is not None:
        # A preset name is resolved here, as the library does: the message carries weights.
        w = resolve_weights(reward_weights, "reward_weights")
        _set(request.reward_weights, quality=w.quality, cost=w.cost, latency=w.latency)
    return request


def models_from(response: _pb.ListModelsResponse) -> list[ModelSpec]:
    return [
        ModelSpec(
            m.id,
            m.provider,
            m.input_usd_per_mtok,
            m.output_usd_per_mtok,
            m.expected_latency_s,
            m.quality_prior,
        )
        for m in response.models
    ]


def stats_from(r: _pb.GetStatsResponse) -> SidecarStats:
    models = {
        m.model_id: RemoteModelStats(
            m.model_id,
            m.selections,
            m.mean_reward,
            m.weight_sum,
            m.cost_usd_sum,
            m.latency_s_sum,
            m.outcomes,
            m.mean_cost_usd,
            m.mean_latency_s,
        )
        for m in r.models
    }
    return SidecarStats(
        models, r.pending_queries, dict(r.feedback_counts), r.policy, r.policy_version
    )
