"""The one mapping from domain errors to gRPC status codes.

Every servicer method is wrapped by `grpc_method`, which turns an exception into a status with
the exception's message (the domain layer writes messages that name the field). The rule is
that nothing a client can send produces UNKNOWN or INTERNAL: INTERNAL is reserved for bugs,
which are logged with their traceback.

NoEligibleModel maps to FAILED_PRECONDITION, not INVALID_ARGUMENT: the request is well formed
and each constraint is valid on its own; it is the current catalogue that leaves no candidate,
and the same request succeeds once a fitting model is added. gRPC's guidance reserves
INVALID_ARGUMENT for arguments that are bad "regardless of the state of the system".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
import redis.exceptions

from .errors import InvalidArgument, NoEligibleModel, NotFound, Unauthenticated, Unavailable

log = logging.getLogger("conduit_sidecar.status")

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

# Connection failures of the store drivers that a store may let escape; all mean "retry later".
# sqlite3.OperationalError is a locked database (past the busy timeout), a full disk or an
# unopenable file: the store, not the request, is the problem.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    sqlite3.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
try:  # asyncpg is a dependency, but keep the mapping importable without it.
    import asyncpg

    _UNREACHABLE += (asyncpg.exceptions.PostgresConnectionError, asyncpg.InterfaceError)
except ImportError:  # pragma: no cover - asyncpg is in the project's dependencies
    pass


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message for an exception raised while serving a call."""
    if isinstance(exc, InvalidArgument):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, NoEligibleModel):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED, str(exc)
    if isinstance(exc, Unavailable):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, _UNREACHABLE):
        return grpc.StatusCode.UNAVAILABLE, f"store unreachable: {exc}"
    if isinstance(exc, ValueError):
        # The domain and the Rust core refuse bad input with ValueError (CoreError included)
        # and name the field in the message.
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see sidecar logs"


# A status message travels in the trailers, percent-encoded (a non-ASCII byte takes three),
# and clients cap their size (grpcio rejects more than 16 KiB and may already above 8 KiB;
# Java's default is 8 KiB): past that the client sees RESOURCE_EXHAUSTED "Stream removed"
# instead of the status. Messages quote what the client sent, so they are cut at this many
# UTF-8 bytes (the field name comes first and survives).
MAX_MESSAGE_BYTES = 1024


def bounded(message: str) -> str:
    """`message`, cut to MAX_MESSAGE_BYTES of UTF-8 if longer, saying so."""
    data = message.encode("utf-8", "replace")
    if len(data) <= MAX_MESSAGE_BYTES:
        return message
    head = data[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore")
    return f"{head}... (truncated, {len(message)} characters in all)"


class MalformedRequest:
    """What a lenient deserializer returns for bytes that are not a valid message.

    grpcio answers INTERNAL when a request deserializer raises; a client can send such bytes,
    so the server's deserializers return this instead and `grpc_method` refuses it with
    INVALID_ARGUMENT.
    """

    def __init__(self, message_type: str, error: Exception) -> None:
        self.message_type = message_type
        self.error = error


def lenient_deserializer(message_class: Any) -> Callable[[bytes], Any]:
    parse = message_class.FromString
    name = message_class.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # DecodeError, invalid UTF-8 in a string field, ...
            return MalformedRequest(name, exc)

    return deserialize


class RpcObserver(Protocol):
    """Receives one call per finished RPC (metrics)."""

    def __call__(self, method: str, code: grpc.StatusCode, seconds: float) -> None: ...


_Handler = Callable[[Any, _Req, Any], Awaitable[_Resp]]


def grpc_method(fn: _Handler[_Req, _Resp]) -> _Handler[_Req, _Resp]:
    """Wraps an async servicer method: maps exceptions to statuses and reports each call to
    `self.observe_rpc` (an RpcObserver, or None)."""
    method = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: Any, request: _Req, context: Any) -> _Resp:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if isinstance(request, MalformedRequest):
                raise InvalidArgument(
                    "request", f"not a valid {request.message_type} message: {request.error}"
                )
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except asyncio.CancelledError:
            # grpc cancels the handler when the client gives up (a cancel, or its deadline:
            # the client's RST_STREAM arrives before the server's own deadline fires) or
            # when shutdown's grace period ends: not a success.
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code, message = to_status(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method)
            await context.abort(code, bounded(message))
            raise  # unreachable: abort raises; keeps the type checker honest
        finally:
            observe: RpcObserver | None = getattr(self, "observe_rpc", None)
            if observe is not None:
                observe(method, code, time.perf_counter() - started)

    wrapper.__dict__["grpc_mapped"] = True
    return wrapper
