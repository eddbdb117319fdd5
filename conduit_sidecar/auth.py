"""Bearer-token authentication as a server interceptor.

Clients send `authorization: Bearer <token>` metadata. The gRPC health service is exempt so
that kubelet's native gRPC probes, which cannot send headers, keep working; everything else
(including server reflection) needs the token. The comparison is constant-time.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from .status import RpcObserver

HEALTH_PREFIX = "/grpc.health.v1.Health/"


def bearer_token(metadata: Any) -> str | None:
    """The token of the first `authorization: Bearer ...` entry, or None."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode() if isinstance(value, bytes) else str(value)
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return None


def _rejecting_handler(handler: Any, message: str) -> Any:
    """A handler of the same shape as `handler` that only aborts with UNAUTHENTICATED."""

    async def unary(_request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(_request: Any, context: Any) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator; abort raises first

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call but health checks unless it carries the configured bearer token."""

    def __init__(self, token: str, observe: RpcObserver | None = None) -> None:
        # Stripped as `bearer_token` strips what clients send: a token read from a file or a
        # Kubernetes Secret often ends in a newline, which no header value can carry.
        self._token = token.strip().encode()
        self._observe = observe

    def check(self, metadata: Any) -> str | None:
        """None if the metadata carries the right token, else the reason it does not."""
        token = bearer_token(metadata)
        if token is None:
            return "authorization: missing bearer token (send 'authorization: Bearer <token>')"
        if not hmac.compare_digest(token.encode(), self._token):
            return "authorization: wrong bearer token"
        return None

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        method: str = handler_call_details.method
        if method.startswith(HEALTH_PREFIX):
            return await continuation(handler_call_details)
        reason = self.check(handler_call_details.invocation_metadata)
        handler = await continuation(handler_call_details)
        if reason is None or handler is None:
            return handler
        if self._observe is not None:
            self._observe(method.rsplit("/", 1)[-1], grpc.StatusCode.UNAUTHENTICATED, 0.0)
        return _rejecting_handler(handler, reason)
