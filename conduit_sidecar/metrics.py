"""Prometheus metrics of the sidecar, served on their own HTTP port.

A private registry per sidecar (not prometheus_client's global one) so that several servers in
one process, as in the tests, do not collide. Metric names:

- `conduit_rpc_duration_seconds{method,code}` histogram; its `_count` is the call count
- `conduit_selections_total{model}` counter of Route decisions
- `conduit_reward{model}` histogram of rewards applied (feedback and Update)
- `conduit_feedback_total{signal_type,duplicate}` counter of feedback events
- `conduit_pending_queries` gauge, refreshed by the server in the background
- `conduit_model_mean_reward{model}` / `conduit_model_weight{model}` gauges: the policy's
  confidence-weighted mean reward and total observation weight per model (all feedback
  included), refreshed with the pending gauge
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Loopback gRPC calls take ~0.3-5 ms; the upper buckets catch store stalls.
_RPC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_OK = grpc.StatusCode.OK
_REWARD_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class SidecarMetrics:
    """All metrics of one sidecar; `observe_rpc` matches status.RpcObserver."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rpc_duration = Histogram(
            "conduit_rpc_duration_seconds",
            "Server-side RPC latency by method and status code",
            ("method", "code"),
            buckets=_RPC_BUCKETS,
            registry=self.registry,
        )
        self.selections = Counter(
            "conduit_selections", "Route decisions by selected model", ("model",),
            registry=self.registry,
        )  # fmt: skip
        self.reward = Histogram(
            "conduit_reward",
            "Rewards applied to the policy by model",
            ("model",),
            buckets=_REWARD_BUCKETS,
            registry=self.registry,
        )
        self.feedback = Counter(
            "conduit_feedback",
            "Feedback events by signal type and whether they were duplicates",
            ("signal_type", "duplicate"),
            registry=self.registry,
        )
        self.pending = Gauge(
            "conduit_pending_queries", "Routed queries awaiting feedback", registry=self.registry
        )
        self.mean_reward = Gauge(
            "conduit_model_mean_reward",
            "Confidence-weighted mean reward the policy learned per model",
            ("model",),
            registry=self.registry,
        )
        self.weight = Gauge(
            "conduit_model_weight",
            "Total observation weight applied per model",
            ("model",),
            registry=self.registry,
        )
        self._rpc_children: dict[tuple[str, grpc.StatusCode], Any] = {}
        self._ok_children: dict[str, Any] = {}
        self._selected_children: dict[str, Any] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def observe_rpc(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        # Label children are cached: `labels()` takes a lock and builds keys on every call,
        # which is measurable at thousands of RPCs per second. The label sets are small and
        # bounded (methods x codes, catalogue models).
        # Almost every call is OK: a lookup by method alone skips hashing the StatusCode
        # enum (a Python-level __hash__).
        if code is _OK:
            child = self._ok_children.get(method)
            if child is None:
                child = self._ok_children[method] = self.rpc_duration.labels(method, "OK")
            child.observe(seconds)
            return
        child = self._rpc_children.get((method, code))
        if child is None:
            child = self._rpc_children[(method, code)] = self.rpc_duration.labels(method, code.name)
        child.observe(seconds)

    def selected(self, model: str) -> None:
        child = self._selected_children.get(model)
        if child is None:
            child = self._selected_children[model] = self.selections.labels(model)
        child.inc()

    def rewarded(self, model: str, reward: float) -> None:
        self.reward.labels(model).observe(reward)

    def feedback_recorded(self, signal_type: str, duplicate: bool) -> None:
        self.feedback.labels(signal_type, "true" if duplicate else "false").inc()

    def set_pending(self, count: int) -> None:
        self.pending.set(count)

    def set_model_stats(self, stats: Mapping[str, Any]) -> None:
        """From Router.stats(): objects with `mean_reward` and `weight_sum`."""
        for model, entry in stats.items():
            self.mean_reward.labels(model).set(entry.mean_reward)
            self.weight.labels(model).set(entry.weight_sum)

    def start(self, host: str, port: int) -> int:
        """Serves /metrics over HTTP in a daemon thread; returns the bound port."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
