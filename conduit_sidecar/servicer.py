"""ConduitService: protobuf messages to domain objects and back, nothing else.

Every method is wrapped by `status.grpc_method`, the one place where domain errors become
status codes. The only checks made here are the ones the domain cannot make because they are
about the transport: the text length limit, proto3 presence (an unset `optional` field is
None, never a silent 0), and ttl_s's upper bound (`_ttl`). The ids the stores key by are
checked by the domain (`query.check_id`), for the Python API as well.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._proto import conduit_pb2 as _pb
from ._proto import conduit_pb2_grpc as _pb_grpc
from .config import MAX_TTL_S
from .errors import InvalidArgument, Unavailable
from .feedback import FeedbackEvent, SessionFeedback
from .query import Constraints, Query, RoutingDecision
from .reward import RewardWeights, check_non_negative
from .status import RpcObserver, grpc_method

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .feedback import FeedbackCollector
    from .router import Router


_ROUTE_TEXT = _pb.RouteRequest.DESCRIPTOR.fields_by_name["text"]


def _weights(message: _pb.RewardWeights) -> RewardWeights:
    return RewardWeights(message.quality, message.cost, message.latency)


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def _ttl(message: Any) -> float | None:
    ttl = _optional(message, "ttl_s")
    if ttl is not None and (not math.isfinite(ttl) or ttl <= 0):
        raise InvalidArgument("ttl_s", f"must be finite and > 0, got {ttl!r}")
    if ttl is not None and ttl > MAX_TTL_S:
        # Redis cannot expire a key that late: the decision would go unlogged.
        raise InvalidArgument("ttl_s", f"must be at most {MAX_TTL_S:.0f} (ten years), got {ttl!r}")
    return ttl  # type: ignore[no-any-return]


def _payload(message: Any) -> dict[str, Any]:
    # Struct numbers are doubles on the wire; the adapters accept 5.0 for a rating of 5.
    return _struct(message.payload) if message.HasField("payload") else {}


def _struct(struct: Any) -> dict[str, Any]:
    """A google.protobuf.Struct as the dict `json_format.MessageToDict` gives, without its
    generic descriptor walk (every RecordFeedback converts one; benches/micro_python.py)."""
    return {key: _value(value) for key, value in struct.fields.items()}


def _value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise InvalidArgument("payload", f"numbers must be finite, got {number}")
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _struct(value.struct_value)
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    return None  # null_value, or a Value with no kind set (as MessageToDict reads it)


def _constraints(request: _pb.RouteRequest) -> Constraints | None:
    if not request.HasField("constraints"):
        return None
    c = request.constraints
    return Constraints(
        max_cost_usd=_optional(c, "max_cost_usd"),
        max_latency_s=_optional(c, "max_latency_s"),
        allowed_models=list(c.allowed_models) or None,
        excluded_models=list(c.excluded_models) or None,
    )


def route_response(decision: RoutingDecision, include_features: bool) -> _pb.RouteResponse:
    """The RouteResponse for a decision (the features only when asked for)."""
    # Filled field by field: on the hot path this is about twice as fast as passing the map
    # and the sub-message to the constructor.
    response = _pb.RouteResponse(
        query_id=decision.query_id,
        selected_model=decision.selected_model,
        confidence=decision.confidence,
        propensity=decision.propensity,
        reasoning=decision.reasoning,
        policy_version=decision.policy_version,
    )
    # A plain loop: the map's update() is MutableMapping's, with more Python per entry.
    scores = response.scores
    for model, score in decision.scores.items():
        scores[model] = score
    weights, fixed = response.reward_weights, decision.reward_weights
    weights.quality, weights.cost, weights.latency = fixed.quality, fixed.cost, fixed.latency
    if include_features:
        response.features.extend(decision.features)
    return response


def _result_message(result: Any) -> _pb.RecordFeedbackResponse:
    return _pb.RecordFeedbackResponse(
        query_id=result.query_id,
        signal_type=result.signal_type,
        reward=result.reward,
        confidence=result.confidence,
        duplicate=result.duplicate,
    )


class ConduitServicer(_pb_grpc.ConduitServiceServicer):
    """Serves conduit.v1.ConduitService from a Router and a FeedbackCollector."""

    def __init__(
        self,
        router: Router,
        collector: FeedbackCollector,
        *,
        max_text_chars: int = 100_000,
        observe_rpc: RpcObserver | None = None,
        on_selected: Callable[[str], None] | None = None,
        on_feedback: Callable[[str, bool], None] | None = None,
        on_reward: Callable[[str, float], None] | None = None,
    ) -> None:
        self.router = router
        self.collector = collector
        self.max_text_chars = max_text_chars
        self.observe_rpc = observe_rpc  # read by status.grpc_method
        self._on_selected = on_selected
        self._on_feedback = on_feedback
        self._on_reward = on_reward
        self._unlogged_warned_at = -math.inf

    def _text_too_long(self, text: str) -> InvalidArgument:
        return InvalidArgument(
            "text", f"too long: {len(text)} characters, limit {self.max_text_chars}"
        )

    @grpc_method
    async def Route(self, request: _pb.RouteRequest, context: Any) -> _pb.RouteResponse:
        # Reading a field costs about as much as listing the set ones, and the usual request
        # sets only the text: one ListFields() instead of eleven reads (value identical).
        present = request.ListFields()
        if len(present) == 1 and present[0][0] is _ROUTE_TEXT:
            text = present[0][1]
            if len(text) > self.max_text_chars:
                raise self._text_too_long(text)
            query = Query(text)
            ttl_s = None
            include_features = chosen_id = False
        else:
            text = request.text  # each read of a proto string field builds a new str
            if len(text) > self.max_text_chars:
                raise self._text_too_long(text)
            constraints = _constraints(request)
            ttl_s = _ttl(request)
            query = Query(
                text=text,
                session_id=request.session_id or None,
                user_id=request.user_id or None,
                # Converting an empty repeated or map field still costs a microsecond or so.
                metadata=dict(request.metadata) if request.metadata else {},
                features=list(request.features) if request.features else None,
                preference=request.preference or None,
                reward_weights=(
                    _weights(request.reward_weights) if request.HasField("reward_weights") else None
                ),
                constraints=constraints,
                query_id=request.query_id or None,
            )
            include_features = request.include_features
            chosen_id = bool(request.query_id)
        decision: RoutingDecision = self.router.decide(query)  # route() without a coroutine
        try:
            await self.collector.log_decision(decision, ttl_seconds=ttl_s)
            if chosen_id:
                # A client-chosen id may already be pending (a retried Route, an id reused by
                # the application): the store keeps the first decision and every Track and
                # signal for the id will update its model, so that decision is the answer.
                pending = await self.collector.store.get(decision.query_id)
                if pending is not None and pending.decision.created_at != decision.created_at:
                    self.router.retract_selection(decision.selected_model)
                    decision = pending.decision
        except Unavailable as exc:
            # Routing never depends on the store (docs/OPERATIONS.md, failure behaviour): the
            # local policy answers; this decision is not logged, so feedback for it will be
            # NOT_FOUND. Warn at most every 30 s, an outage would otherwise flood the log.
            now = time.monotonic()
            if now - self._unlogged_warned_at >= 30.0:
                self._unlogged_warned_at = now
                _log.warning("Route answered without logging the decision: %s", exc)
        if self._on_selected is not None:
            self._on_selected(decision.selected_model)
        return route_response(decision, include_features)

    @grpc_method
    async def Track(self, request: _pb.TrackRequest, context: Any) -> _pb.TrackResponse:
        query_id = request.query_id
        await self.collector.track(
            query_id,
            cost=_optional(request, "cost_usd"),
            latency=_optional(request, "latency_s"),
            error=request.error,
            retries=request.retries,
            ttl_seconds=_ttl(request),
        )
        return _pb.TrackResponse(query_id=query_id)

    @grpc_method
    async def RecordFeedback(
        self, request: _pb.RecordFeedbackRequest, context: Any
    ) -> _pb.RecordFeedbackResponse:
        event = FeedbackEvent(
            query_id=request.query_id,
            signal_type=request.signal_type,
            payload=_payload(request),
            idempotency_key=request.idempotency_key or None,
        )
        result = await self.collector.record(event)
        if self._on_feedback is not None:
            self._on_feedback(result.signal_type, result.duplicate)
        return _result_message(result)

    @grpc_method
    async def RecordSessionFeedback(
        self, request: _pb.RecordSessionFeedbackRequest, context: Any
    ) -> _pb.RecordSessionFeedbackResponse:
        session = SessionFeedback(
            session_id=request.session_id,
            signal_type=request.signal_type,
            payload=_payload(request),
            idempotency_key=request.idempotency_key or None,
        )
        weight = _optional(request, "propagation_weight")
        if weight is not None:
            session.propagation_weight = weight
        results = await self.collector.record_session_feedback(session)
        if self._on_feedback is not None:
            for result in results:
                self._on_feedback(result.signal_type, result.duplicate)
        return _pb.RecordSessionFeedbackResponse(results=[_result_message(r) for r in results])

    @grpc_method
    async def Update(self, request: _pb.UpdateRequest, context: Any) -> _pb.UpdateResponse:
        if not request.features:
            raise InvalidArgument(
                "features", "required: the query's feature vector (RouteRequest.include_features)"
            )
        confidence = _optional(request, "confidence")
        reward = await self.router.update(
            model_id=request.model_id,
            # Checked here so that a refusal names this request's fields, not the Python
            # API's `cost` and `latency` parameters.
            cost=check_non_negative("cost_usd", request.cost_usd),
            quality_score=request.quality_score,
            latency=check_non_negative("latency_s", request.latency_s),
            features=list(request.features),
            confidence=1.0 if confidence is None else confidence,
            reward_weights=(
                _weights(request.reward_weights) if request.HasField("reward_weights") else None
            ),
        )
        if self._on_reward is not None:
            self._on_reward(request.model_id, reward)
        return _pb.UpdateResponse(reward=reward)

    @grpc_method
    async def ListModels(
        self, request: _pb.ListModelsRequest, context: Any
    ) -> _pb.ListModelsResponse:
        return _pb.ListModelsResponse(
            models=[
                _pb.ModelInfo(
                    id=m.id,
                    provider=m.provider,
                    input_usd_per_mtok=m.input_usd_per_mtok,
                    output_usd_per_mtok=m.output_usd_per_mtok,
                    expected_latency_s=m.expected_latency_s,
                    quality_prior=m.quality_prior,
                )
                for m in self.router.models
            ]
        )

    @grpc_method
    async def GetStats(self, request: _pb.GetStatsRequest, context: Any) -> _pb.GetStatsResponse:
        counts: Any = self.collector.feedback_counts()
        if inspect.isawaitable(counts):
            counts = await counts
        models = []
        for model_id, s in self.router.stats().items():
            models.append(
                _pb.ModelStats(
                    model_id=model_id,
                    selections=s.selections,
                    mean_reward=s.mean_reward,
                    weight_sum=s.weight_sum,
                    cost_usd_sum=s.cost_usd_sum,
                    latency_s_sum=s.latency_s_sum,
                    outcomes=s.outcomes,
                    mean_cost_usd=s.cost_usd_sum / s.outcomes if s.outcomes else 0.0,
                    mean_latency_s=s.latency_s_sum / s.outcomes if s.outcomes else 0.0,
                )
            )
        return _pb.GetStatsResponse(
            models=models,
            pending_queries=await self.collector.get_pending_count(),
            feedback_counts={str(k): int(v) for k, v in counts.items()},
            policy=self.router.policy.config.kind,
            policy_version=self.router.policy.version,
        )
