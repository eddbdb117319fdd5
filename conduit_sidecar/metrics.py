"""Prometheus metrics of the sidecar, served on their own HTTP port.

A private registry per sidecar (not prometheus_client's global one) so that several servers in
one process, as in the tests, do not collide. Metric names:

- `conduit_rpc_duration_seconds{method,code}` histogram; its `_count` is the call count
- `conduit_selections_total{model}` counter of Route decisions
- `conduit_reward{model}` histogram of the rewards `Update` applied (feedback's learning is in
  the two per-model gauges below)
- `conduit_feedback_total{signal_type,duplicate}` counter of feedback events
- `conduit_pending_queries` gauge, refreshed by the server in the background
- `conduit_model_mean_reward{model}` / `conduit_model_weight{model}` gauges: the policy's
  confidence-weighted mean reward and total observation weight per model (all feedback
  included), refreshed with the pending gauge
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

# Loopback gRPC calls take ~0.3-5 ms; the upper buckets catch store stalls.
_RPC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_OK = grpc.StatusCode.OK
_REWARD_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class _Buckets:
    """One histogram child as plain numbers: `observe` is a C bisect and two additions."""

    __slots__ = ("counts", "total")

    def __init__(self, n_bounds: int) -> None:
        self.counts = [0] * (n_bounds + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self.counts[bisect_left(bounds, value)] += 1
        self.total += value


class _Histogram:
    """A labelled histogram kept as plain numbers.

    prometheus_client's children take a lock and walk the buckets in Python, about 1.5 us
    (~10,000 instructions) per observation, on paths whose whole budget is a few tens of
    microseconds. Every RPC handler runs on the server's event-loop thread, so nothing here
    is shared between threads; a scrape reads a snapshot of the counts.
    """

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], bounds: tuple[float, ...]):
        self.name, self.doc, self.labels, self.bounds = name, doc, labels, bounds
        self.children: dict[tuple[str, ...], _Buckets] = {}

    def child(self, *labels: str) -> _Buckets:
        child = self.children.get(labels)
        if child is None:
            child = self.children[labels] = _Buckets(len(self.bounds))
        return child

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        les = (*map(str, self.bounds), "+Inf")
        for labels, child in list(self.children.items()):
            running, cumulative = 0, []
            for le, count in zip(les, list(child.counts), strict=True):
                running += count
                cumulative.append((le, float(running)))
            family.add_metric(labels, cumulative, child.total)
        return family


class _Counter:
    """A labelled counter kept as a plain dict (see `_Histogram`)."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]):
        self.name, self.doc, self.labels = name, doc, labels
        self.counts: dict[tuple[str, ...], int] = {}

    def inc(self, *labels: str) -> None:
        self.counts[labels] = self.counts.get(labels, 0) + 1

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, count in list(self.counts.items()):
            family.add_metric(labels, float(count))
        return family


class _PlainCollector:
    def __init__(self, *metrics: _Histogram | _Counter) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for metric in self.metrics:
            yield metric.family()


class SidecarMetrics:
    """All metrics of one sidecar; `observe_rpc` matches status.RpcObserver."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rpc_duration = _Histogram(
            "conduit_rpc_duration_seconds",
            "Server-side RPC latency by method and status code",
            ("method", "code"),
            _RPC_BUCKETS,
        )
        self.selections = _Counter(
            "conduit_selections", "Route decisions by selected model", ("model",)
        )
        self.reward = _Histogram(
            "conduit_reward", "Rewards applied by Update by model", ("model",), _REWARD_BUCKETS
        )
        self.feedback = _Counter(
            "conduit_feedback",
            "Feedback events by signal type and whether they were duplicates",
            ("signal_type", "duplicate"),
        )
        self.registry.register(
            _PlainCollector(self.rpc_duration, self.selections, self.reward, self.feedback)
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
        self._ok_children: dict[str, _Buckets] = {}
        self._models: set[str] = set()  # the models the two per-model gauges export
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def observe_rpc(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        # Almost every call is OK: a lookup by method alone skips hashing the StatusCode
        # enum (a Python-level __hash__).
        if code is _OK:
            child = self._ok_children.get(method)
            if child is None:
                child = self._ok_children[method] = self.rpc_duration.child(method, "OK")
        else:
            child = self.rpc_duration.child(method, code.name)
        child.observe(_RPC_BUCKETS, seconds)

    def selected(self, model: str) -> None:
        self.selections.inc(model)

    def rewarded(self, model: str, reward: float) -> None:
        self.reward.child(model).observe(_REWARD_BUCKETS, reward)

    def feedback_recorded(self, signal_type: str, duplicate: bool) -> None:
        self.feedback.inc(signal_type, "true" if duplicate else "false")

    def set_pending(self, count: int) -> None:
        self.pending.set(count)

    def set_model_stats(self, stats: Mapping[str, Any]) -> None:
        """From Router.stats(): objects with `mean_reward` and `weight_sum`. A model no
        longer in it (Router.remove_model) stops being exported."""
        for model, entry in stats.items():
            self.mean_reward.labels(model).set(entry.mean_reward)
            self.weight.labels(model).set(entry.weight_sum)
        for model in self._models - stats.keys():
            self.mean_reward.remove(model)
            self.weight.remove(model)
        self._models = set(stats)

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
