"""Server lifecycle: grpc.aio server, health, reflection, metrics, graceful SIGTERM.

Shutdown order (SIGTERM or SIGINT), each step bounded:
1. every health status flips to NOT_SERVING (`enter_graceful_shutdown`), so probes and load
   balancers stop sending new work while the server still answers;
2. after `shutdown_delay_s`, the streams that never end by themselves (health Watch,
   reflection) end with OK, and `server.stop(grace_s)` refuses new calls and lets in-flight
   ones finish within the grace period (then cancels what is left);
3. the `on_shutdown` hooks run (persistence; policy snapshots hang here), then the store is
   closed; the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health as _health
from grpc_health.v1 import health_pb2 as _health_pb2
from grpc_health.v1 import health_pb2_grpc as _health_pb2_grpc
from grpc_reflection.v1alpha import reflection as _reflection
from grpc_reflection.v1alpha import reflection_pb2_grpc as _reflection_pb2_grpc

from ._proto import conduit_pb2 as _pb
from .app import SidecarApp
from .auth import BearerTokenInterceptor
from .config import SidecarConfig
from .metrics import SidecarMetrics
from .servicer import ConduitServicer
from .status import lenient_deserializer

log = logging.getLogger("conduit_sidecar.server")

SERVICE_NAME: str = _pb.DESCRIPTOR.services_by_name["ConduitService"].full_name
ShutdownHook = Callable[[], Awaitable[None] | None]
_PENDING_REFRESH_S = 5.0
_T = TypeVar("_T")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (+ exc when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(json_logs: bool, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_logs else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class GenericHandlersOnly:
    """The server as seen by grpc's generated `add_*_to_server` functions: their generic
    handlers are added, their "registered method" handlers are not.

    grpc.aio keeps one pending request-call future per registered method (plus one for all
    generic methods) and `asyncio.wait`s on all of them for every incoming call, then re-arms
    the one that fired. That is pure-Python asyncio work on the event loop per RPC, growing
    with the number of registered methods: with the ConduitService's 7, health's 3 and
    reflection's 1 it cost the sidecar about 54,000 of its 819,000 instructions per Route
    (callgrind, BENCHMARKS.md). Generic handlers serve the same methods with the same
    handlers through one dict lookup, so nothing else changes.
    """

    def __init__(self, server: Any) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, handlers: Any) -> None:
        """Deliberately nothing: the same handlers were given as generic ones."""


def add_conduit_service(servicer: ConduitServicer, server: Any) -> None:
    """Registers every ConduitService method with lenient request deserializers (see
    status.MalformedRequest), as generic handlers only (see GenericHandlersOnly)."""
    service = _pb.DESCRIPTOR.services_by_name["ConduitService"]
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=lenient_deserializer(getattr(_pb, method.input_type.name)),
            response_serializer=getattr(_pb, method.output_type.name).SerializeToString,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


async def _before(drain: asyncio.Event, work: Awaitable[_T]) -> tuple[bool, _T | None]:
    """(True, result) if `work` ends first; (False, None), `work` cancelled, once `drain`
    is set."""
    working = asyncio.ensure_future(work)
    draining = asyncio.ensure_future(drain.wait())
    try:
        await asyncio.wait({working, draining}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        working.cancel()
        draining.cancel()
        await asyncio.wait({working, draining})
    if working.cancelled():
        return False, None
    return True, working.result()


class DrainingHealthServicer(_health.aio.HealthServicer):  # type: ignore[misc]
    """grpc's health service whose Watch streams end once the server drains.

    A Watch never ends on its own, and `server.stop(grace_s)` waits for every call: one
    health watcher (Envoy, a gRPC client with health checking) held every shutdown for the
    whole grace period, then had its stream cancelled. Once `drain` is set (by shutdown, after
    the watchers were sent NOT_SERVING) they complete with OK instead, so the drain waits
    only for real work; a watcher that reconnects finds the port closed.
    """

    def __init__(self, drain: asyncio.Event) -> None:
        super().__init__()
        self._drain = drain

    async def Watch(self, request: Any, context: Any) -> None:
        # Cancelling grpc's Watch runs its own clean-up (the per-service watcher count).
        await _before(self._drain, super().Watch(request, context))


class DrainingReflectionServicer(_reflection.aio.ReflectionServicer):  # type: ignore[misc]
    """Server reflection whose streams end once the server drains, as health's Watch: a
    client that keeps its reflection stream open (a GUI tool) held the shutdown too."""

    def __init__(self, service_names: tuple[str, ...], drain: asyncio.Event) -> None:
        super().__init__(service_names)
        self._drain = drain

    async def ServerReflectionInfo(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        # An async generator itself: grpc.aio tells streaming handlers by their function.
        requests = self._until_drain(request_iterator)
        async for response in super().ServerReflectionInfo(requests, context):
            yield response

    async def _until_drain(self, requests: Any) -> AsyncIterator[Any]:
        """The client's requests, ending (as if the client had closed its side) once the
        server drains; grpc's handler then answers what it has and ends the call with OK."""
        iterator = requests.__aiter__()
        while True:
            try:
                arrived, request = await _before(self._drain, iterator.__anext__())
            except StopAsyncIteration:
                return
            if not arrived:
                return
            yield request


def _check_tls_pair(cert_path: str, key_path: str) -> None:
    """OSError naming the settings unless the files are a PEM certificate and its key: grpc
    only reports that it could not bind, which blamed `listen` for a bad certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An empty password: an encrypted key fails here instead of prompting on a terminal
        # (grpc cannot use one either).
        context.load_cert_chain(cert_path, key_path, password="")
    except (ssl.SSLError, ValueError) as exc:
        raise OSError(
            f"tls_cert/tls_key: not a usable PEM certificate and private key ({exc})"
        ) from None


class SidecarServer:
    """One sidecar: the gRPC server over a SidecarApp, with health, reflection and metrics."""

    def __init__(self, config: SidecarConfig, app: SidecarApp, shutdown_delay_s: float = 0.2):
        self.config = config
        self.app = app
        self.shutdown_delay_s = shutdown_delay_s
        self.on_shutdown: list[ShutdownHook] = []
        self.metrics = SidecarMetrics()
        # Set when the drain starts: the streams that never end by themselves end then.
        self._drain = asyncio.Event()
        self.health = DrainingHealthServicer(self._drain)
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._server: Any = None
        self._stopping = asyncio.Event()
        self._refresh_task: asyncio.Task[None] | None = None

    def _build(self) -> Any:
        size = self.config.max_message_bytes
        interceptors = []
        if self.config.token is not None:
            interceptors.append(BearerTokenInterceptor(self.config.token, self.metrics.observe_rpc))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
                # A second sidecar on the same port must fail loudly, not share it.
                ("grpc.so_reuseport", 0),
            ],
        )
        # Without a metrics endpoint nobody can read the per-RPC series: don't pay for them.
        metrics = self.metrics if self.config.metrics_port is not None else None
        servicer = ConduitServicer(
            self.app.router,
            self.app.collector,
            max_text_chars=self.config.max_text_chars,
            observe_rpc=metrics.observe_rpc if metrics else None,
            on_selected=metrics.selected if metrics else None,
            on_feedback=metrics.feedback_recorded if metrics else None,
            on_reward=metrics.rewarded if metrics else None,
        )
        add_conduit_service(servicer, server)
        generic_only = GenericHandlersOnly(server)
        _health_pb2_grpc.add_HealthServicer_to_server(self.health, generic_only)
        # What _reflection.enable_server_reflection does for a grpc.aio server, minus the
        # registered-method handlers.
        _reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            DrainingReflectionServicer(
                (SERVICE_NAME, _health.SERVICE_NAME, _reflection.SERVICE_NAME), self._drain
            ),
            generic_only,
        )
        return server

    def _bind(self, server: Any) -> int:
        listen = self.config.listen
        try:
            if self.config.tls_cert and self.config.tls_key:
                _check_tls_pair(self.config.tls_cert, self.config.tls_key)
                key = Path(self.config.tls_key).read_bytes()
                cert = Path(self.config.tls_cert).read_bytes()
                port = server.add_secure_port(listen, grpc.ssl_server_credentials([(key, cert)]))
            else:
                port = server.add_insecure_port(listen)
        except RuntimeError as exc:  # grpcio raises RuntimeError when the address is taken
            raise OSError(f"listen: cannot bind {listen}: {exc}") from None
        if not port:
            raise OSError(f"listen: cannot bind {listen}")
        return int(port)

    async def start(self) -> int:
        """Binds, starts serving and marks every service SERVING; returns the bound port."""
        self._server = self._build()
        self.port = self._bind(self._server)
        await self._server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, _health_pb2.HealthCheckResponse.SERVING)
        if self.config.metrics_port is not None:
            host, port = self.config.metrics_host, self.config.metrics_port
            try:
                self.metrics_port = self.metrics.start(host, port)
            except OSError as exc:  # taken port, unknown host: say which setting
                raise OSError(f"metrics_port: cannot serve on {host}:{port}: {exc}") from None
        if self.config.metrics_port is not None:
            # Without an endpoint nobody reads the gauges: don't count the store's pending
            # queries every 5 s (a COUNT over the SQLite writer's connection, a PostgreSQL
            # count(*)) for nothing.
            self._refresh_task = asyncio.create_task(self._refresh_gauges())
        host = self.config.listen.rpartition(":")[0]
        log.info(
            "serving %s on %s:%d (store %s, policy %s, auth %s, tls %s, metrics %s)",
            SERVICE_NAME,
            host,
            self.port,
            self.config.store_scheme,
            self.config.policy,
            "on" if self.config.token else "off",
            "on" if self.config.tls_cert else "off",
            self.metrics_port if self.metrics_port is not None else "off",
        )
        return self.port

    async def _refresh_gauges(self) -> None:
        """Pending-query and per-model gauges; a failing store only skips a refresh."""
        while not self._stopping.is_set():
            with contextlib.suppress(Exception):
                self.metrics.set_pending(await self.app.collector.get_pending_count())
            self.metrics.set_model_stats(self.app.router.stats())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), _PENDING_REFRESH_S)

    def request_stop(self) -> None:
        """Signal-handler safe: asks `serve_until_stopped` to shut down."""
        self._stopping.set()

    async def shutdown(self) -> None:
        """Health NOT_SERVING, drain within the grace period, run hooks, close the store."""
        self._stopping.set()
        started = time.monotonic()
        log.info("shutting down: health NOT_SERVING, draining for up to %.1fs", self.config.grace_s)
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(self.shutdown_delay_s)
        self._drain.set()
        if self._server is not None:
            await self._server.stop(self.config.grace_s)
        if self._refresh_task is not None:
            # It only refreshes gauges: a store read stuck on an unresponsive server (no
            # reply, no error) must not hold up the shutdown, and asyncpg's release of a
            # cancelled connection can itself wait on that server, so don't wait for it.
            self._refresh_task.cancel()
            await asyncio.wait({self._refresh_task}, timeout=1.0)
        for hook in self.on_shutdown:
            try:
                result = hook()
                if result is not None:
                    await result
            except Exception:
                # One failing hook must not keep the others from persisting their state.
                log.exception("shutdown hook %r failed", hook)
        await self.app.close()
        self.metrics.stop()
        log.info("stopped after %.2fs", time.monotonic() - started)

    async def serve_until_stopped(self) -> None:
        """Runs until SIGTERM/SIGINT (or request_stop), then shuts down gracefully."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self._stopping.wait()
            # The handlers stay through the shutdown: removed, a second SIGTERM or Ctrl-C
            # (an impatient supervisor or operator) killed the process mid-drain with the
            # default action, and the learning not yet published was lost for good (the
            # store had marked its signals, so their retries are duplicates).
            await self.shutdown()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping.is_set():
            log.warning(
                "%s during shutdown: ignored, the shutdown is bounded and finishing "
                "(SIGKILL ends it at once, losing what is not yet persisted)",
                sig.name,
            )
            return
        self.request_stop()


# Every Route allocates a few dozen short-lived containers and keeps a few (its pending
# decision). With CPython's default thresholds (700, 10, 10) the young generation is
# collected every ~20 requests and the whole heap, which grows with the pending queries,
# every few thousand. Freezing what start-up built and collecting the young generation every
# 50,000 container allocations saves about 9,000 instructions (5%) per Route over 12,000
# Routes (BENCHMARKS.md); reference cycles are still collected, less often.
GC_THRESHOLDS = (50_000, 20, 50)


def tune_gc() -> None:
    """Collector settings for the serving process (not applied to an embedding app)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(config: SidecarConfig) -> None:
    """Builds the app from `config`, serves until SIGTERM, then shuts down cleanly."""
    app = await SidecarApp.create(config)
    server = SidecarServer(config, app)
    # Before start(): a collection takes a moment, and once start() has announced the port
    # nothing may come between it and installing the SIGTERM handler (a supervisor may
    # signal right away).
    tune_gc()
    try:
        await server.start()
    except BaseException:
        await app.close()
        raise
    await server.serve_until_stopped()
