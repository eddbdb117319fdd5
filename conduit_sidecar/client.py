"""Python clients of the sidecar, mirroring the Python API over gRPC.

    async with AsyncConduitClient("127.0.0.1:50051") as client:
        decision = await client.route(Query(text="What is Python?"))
        await client.track(decision, cost=0.001, latency=0.5)
        await client.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))

`ConduitClient` is the same API, synchronous. Errors come back as the domain exceptions of
`conduit_sidecar.errors` (InvalidArgument, NotFound, ...), so code written against the embedded
library works unchanged against the sidecar.

Retries (with jittered exponential backoff capped at MAX_BACKOFF_S, within each call's
timeout; the channel also tries to reconnect at least every MAX_BACKOFF_S, so a restarted
sidecar is found within about a second) are limited to what is safe:
- Track, RecordFeedback, RecordSessionFeedback, ListModels, GetStats retry on UNAVAILABLE,
  DEADLINE_EXCEEDED and CANCELLED (a sidecar that was stopping). Feedback is idempotent: an
  event without an explicit key is identified by (query_id, signal_type) on the server, so a
  retry of a call that did land is a duplicate and changes nothing (its result is the first
  one, flagged `duplicate`). Generating a random key per call would break exactly that, so
  the client never invents one.
- Route retries on UNAVAILABLE and CANCELLED; its query_id is fixed by the client before the
  first attempt, so should an attempt have landed after all, the retry is answered with the
  decision that attempt logged.
- Update is not idempotent (it applies an observation): it retries on UNAVAILABLE only.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from ._client_codec import (
    RemoteModelStats,
    SidecarStats,
    decision_from,
    feedback_request,
    models_from,
    result_from,
    route_request,
    session_request,
    stats_from,
    track_request,
    update_request,
)
from ._proto import conduit_pb2 as _pb
from ._proto import conduit_pb2_grpc as _pb_grpc
from .errors import (
    ConduitError,
    InvalidArgument,
    NoEligibleModel,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from .feedback.events import FeedbackEvent, FeedbackResult, SessionFeedback
from .models import ModelSpec
from .query import Query, RoutingDecision
from .reward import RewardWeights

__all__ = [
    "AsyncConduitClient",
    "ConduitClient",
    "RemoteModelStats",
    "SidecarStats",
    "from_rpc_error",
]

_T = TypeVar("_T")
# CANCELLED reaches a client as a status only when the server side cancelled the call (a
# sidecar stopping: calls arriving as it shuts down, or cut off at the end of its grace
# period); a cancel of the caller's own raises CancelledError instead, and is never retried.
SAFE_TO_RETRY = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
)
# Route may run twice safely (its query_id answers the logged decision), but a DEADLINE_EXCEEDED
# leaves no time for another attempt anyway.
ROUTE_RETRY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
NOT_DELIVERED = (grpc.StatusCode.UNAVAILABLE,)
# The longest wait between two attempts. The sidecar is local and restarts in a second or
# two; an uncapped doubling (0.05 s * 2**8 = 12.8 s) kept a client with a long timeout failing
# for 16 s after an 8 s outage had ended.
MAX_BACKOFF_S = 1.0
# grpc's own reconnection backoff (1 s, growing 1.6x up to 120 s) kept the channel failing
# calls at once for seconds after a restarted sidecar was back; a local sidecar is worth
# trying again every second at most.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", int(MAX_BACKOFF_S * 1000)),
)
MAX_TIMEOUT_S = 1e9  # about 31 years: "no timeout" for any caller, and a deadline grpc keeps
# The generated stub is untyped; one typed alias keeps mypy strict everywhere else.
_Stub: Callable[[Any], Any] = _pb_grpc.ConduitServiceStub


def from_rpc_error(error: grpc.RpcError) -> Exception:
    """The domain exception for a status (the reverse of status.to_status)."""
    code, message = error.code(), error.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, sep, rest = message.partition(": ")
        return InvalidArgument(field, rest) if sep else InvalidArgument("request", message)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(message)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return NoEligibleModel(message)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(message)
    if code in SAFE_TO_RETRY:
        return Unavailable(f"{code.name}: {message}")
    return ConduitError(f"{code.name}: {message}")


class _Base:
    def __init__(
        self,
        target: str,
        token: str | None,
        timeout_s: float,
        max_attempts: int,
        backoff_s: float,
        root_certificates: bytes | None,
        tls: bool,
    ) -> None:
        # grpc turns a deadline past 2**63 ns (~292 years; inf included) into one already
        # passed: every call would fail at once. NaN fails every comparison, hence `not`.
        if not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise ValueError(
                f"timeout_s must be > 0 and at most {MAX_TIMEOUT_S:g}, got {timeout_s}"
            )
        if not 0 <= backoff_s < math.inf:
            raise ValueError(f"backoff_s must be finite and >= 0, got {backoff_s}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if root_certificates is not None and b"-----BEGIN CERTIFICATE-----" not in bytes(
            root_certificates
        ):
            # grpc takes anything and then fails every call with "Failed to create security
            # handshaker", retried as UNAVAILABLE until the deadline.
            raise ValueError("root_certificates must be PEM certificate(s)")
        self.target = target
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        # Stripped as the server strips it: a header value cannot end in a newline.
        token = token.strip() if token else None
        if token is not None and not (token.isascii() and token.isprintable()):
            # As the server's setting: grpc refuses such a header value on every call, as
            # INTERNAL "Invalid metadata" (sync) or a bare ExecuteBatchError (asyncio).
            raise ValueError("token must be printable ASCII (it is sent in a header)")
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._credentials = (
            grpc.ssl_channel_credentials(root_certificates)
            if tls or root_certificates is not None
            else None
        )

    def _delay(self, attempt: int) -> float:
        # Full jitter, so many clients retrying a restarting sidecar do not synchronise.
        return random.uniform(0, min(self.backoff_s * (2**attempt), MAX_BACKOFF_S))

    def _retryable(self, error: grpc.RpcError, retry_on: tuple[Any, ...], attempt: int) -> bool:
        return error.code() in retry_on and attempt + 1 < self.max_attempts


class AsyncConduitClient(_Base):
    """asyncio client; use as `async with AsyncConduitClient(...) as client:`."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        token: str | None = None,
        timeout_s: float = 5.0,
        max_attempts: int = 4,
        backoff_s: float = 0.05,
        root_certificates: bytes | None = None,
        tls: bool = False,
    ) -> None:
        super().__init__(target, token, timeout_s, max_attempts, backoff_s, root_certificates, tls)
        # Opened by the first call, in the event loop that makes it (see _bound).
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stub: Any = None

    def _bound(self) -> Any:
        """The stub of a channel opened in the running event loop.

        grpc.aio binds a channel to the loop current when it is created: a client made at
        import time or in a synchronous factory (the usual application global) failed every
        call with "attached to a different loop". A channel left in another loop (a second
        asyncio.run) cannot be closed from this one and is dropped.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(self.target, self._credentials, CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.insecure_channel(self.target, CHANNEL_OPTIONS)
            self._channel, self._loop, self._stub = channel, loop, _Stub(channel)
        return self._stub

    async def __aenter__(self) -> AsyncConduitClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._channel is not None and self._loop is asyncio.get_running_loop():
            await self._channel.close()
        self._channel = self._loop = self._stub = None

    async def _call(self, method: Any, request: Any, retry_on: tuple[Any, ...]) -> Any:
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            remaining = max(deadline - time.monotonic(), 0.001)
            try:
                return await method(request, timeout=remaining, metadata=self._metadata)
            except grpc.RpcError as error:
                if not self._retryable(error, retry_on, attempt) or time.monotonic() >= deadline:
                    raise from_rpc_error(error) from None
                await asyncio.sleep(min(self._delay(attempt), max(deadline - time.monotonic(), 0)))
                attempt += 1

    async def route(
        self, query: Query, *, include_features: bool = False, ttl_s: float | None = None
    ) -> RoutingDecision:
        request = route_request(query, include_features, ttl_s)
        return decision_from(await self._call(self._bound().Route, request, ROUTE_RETRY), query)

    async def track(
        self,
        decision: RoutingDecision | str,
        cost: float | None = None,
        latency: float | None = None,
        *,
        error: bool = False,
        retries: int = 0,
        ttl_seconds: float | None = None,
    ) -> None:
        request = track_request(decision, cost, latency, error, retries, ttl_seconds)
        await self._call(self._bound().Track, request, SAFE_TO_RETRY)

    async def record(self, event: FeedbackEvent) -> FeedbackResult:
        response = await self._call(
            self._bound().RecordFeedback, feedback_request(event), SAFE_TO_RETRY
        )
        return result_from(response)

    async def record_session_feedback(self, feedback: SessionFeedback) -> list[FeedbackResult]:
        response = await self._call(
            self._bound().RecordSessionFeedback, session_request(feedback), SAFE_TO_RETRY
        )
        return [result_from(r) for r in response.results]

    async def update(
        self,
        model_id: str,
        cost: float,
        quality_score: float,
        latency: float,
        features: Sequence[float],
        confidence: float = 1.0,
        reward_weights: RewardWeights | str | None = None,
    ) -> float:
        request = update_request(
            model_id, cost, quality_score, latency, features, confidence, reward_weights
        )
        response = await self._call(self._bound().Update, request, NOT_DELIVERED)
        return float(response.reward)

    async def list_models(self) -> list[ModelSpec]:
        request = _pb.ListModelsRequest()
        return models_from(await self._call(self._bound().ListModels, request, SAFE_TO_RETRY))

    async def get_stats(self) -> SidecarStats:
        request = _pb.GetStatsRequest()
        return stats_from(await self._call(self._bound().GetStats, request, SAFE_TO_RETRY))


class ConduitClient(_Base):
    """Blocking client with the same methods as AsyncConduitClient; a context manager."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        token: str | None = None,
        timeout_s: float = 5.0,
        max_attempts: int = 4,
        backoff_s: float = 0.05,
        root_certificates: bytes | None = None,
        tls: bool = False,
    ) -> None:
        super().__init__(target, token, timeout_s, max_attempts, backoff_s, root_certificates, tls)
        if self._credentials is not None:
            self._channel = grpc.secure_channel(target, self._credentials, CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(target, CHANNEL_OPTIONS)
        self._stub = _Stub(self._channel)

    def __enter__(self) -> ConduitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Callable[..., _T], request: Any, retry_on: tuple[Any, ...]) -> _T:
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            remaining = max(deadline - time.monotonic(), 0.001)
            try:
                return method(request, timeout=remaining, metadata=self._metadata)
            except grpc.RpcError as error:
                if not self._retryable(error, retry_on, attempt) or time.monotonic() >= deadline:
                    raise from_rpc_error(error) from None
                time.sleep(min(self._delay(attempt), max(deadline - time.monotonic(), 0)))
                attempt += 1

    def route(
        self, query: Query, *, include_features: bool = False, ttl_s: float | None = None
    ) -> RoutingDecision:
        request = route_request(query, include_features, ttl_s)
        return decision_from(self._call(self._stub.Route, request, ROUTE_RETRY), query)

    def track(
        self,
        decision: RoutingDecision | str,
        cost: float | None = None,
        latency: float | None = None,
        *,
        error: bool = False,
        retries: int = 0,
        ttl_seconds: float | None = None,
    ) -> None:
        request = track_request(decision, cost, latency, error, retries, ttl_seconds)
        self._call(self._stub.Track, request, SAFE_TO_RETRY)

    def record(self, event: FeedbackEvent) -> FeedbackResult:
        return result_from(
            self._call(self._stub.RecordFeedback, feedback_request(event), SAFE_TO_RETRY)
        )

    def record_session_feedback(self, feedback: SessionFeedback) -> list[FeedbackResult]:
        response = self._call(
            self._stub.RecordSessionFeedback, session_request(feedback), SAFE_TO_RETRY
        )
        return [result_from(r) for r in response.results]

    def update(
        self,
        model_id: str,
        cost: float,
        quality_score: float,
        latency: float,
        features: Sequence[float],
        confidence: float = 1.0,
        reward_weights: RewardWeights | str | None = None,
    ) -> float:
        request = update_request(
            model_id, cost, quality_score, latency, features, confidence, reward_weights
        )
        return float(self._call(self._stub.Update, request, NOT_DELIVERED).reward)

    def list_models(self) -> list[ModelSpec]:
        return models_from(
            self._call(self._stub.ListModels, _pb.ListModelsRequest(), SAFE_TO_RETRY)
        )

    def get_stats(self) -> SidecarStats:
        return stats_from(self._call(self._stub.GetStats, _pb.GetStatsRequest(), SAFE_TO_RETRY))
