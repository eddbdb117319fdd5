"""The sidecar's Prometheus exposition, read back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio

import grpc
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conduit_sidecar.app import SidecarApp
from conduit_sidecar.config import SidecarConfig
from conduit_sidecar.feedback import InMemoryFeedbackStore
from conduit_sidecar.metrics import SidecarMetrics
from conduit_sidecar.router import ModelStats
from conduit_sidecar.server import SidecarServer


def samples(metrics: SidecarMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_rpc_durations_are_cumulative_buckets_by_method_and_code() -> None:
    metrics = SidecarMetrics()
    for seconds in (0.0003, 0.0005, 0.0007, 0.004, 7.0):
        metrics.observe_rpc("Route", grpc.StatusCode.OK, seconds)
    metrics.observe_rpc("Route", grpc.StatusCode.INVALID_ARGUMENT, 0.0001)
    got = samples(metrics)

    def bucket(le: str, code: str = "OK") -> float:
        key = (("code", code), ("le", le), ("method", "Route"))
        return got[("conduit_rpc_duration_seconds_bucket", key)]

    assert bucket("0.0005") == 2  # a value equal to a bound is in that bound's bucket
    assert bucket("0.001") == 3
    assert bucket("0.005") == 4
    assert bucket("2.5") == 4
    assert bucket("+Inf") == 5
    assert bucket("+Inf", "INVALID_ARGUMENT") == 1
    ok = (("code", "OK"), ("method", "Route"))
    assert got[("conduit_rpc_duration_seconds_count", ok)] == 5
    assert abs(got[("conduit_rpc_duration_seconds_sum", ok)] - 7.0055) < 1e-12


def test_selections_and_feedback_are_counted_per_label() -> None:
    metrics = SidecarMetrics()
    for model in ("small", "large", "small"):
        metrics.selected(model)
    metrics.feedback_recorded("thumbs", duplicate=True)
    got = samples(metrics)
    assert got[("conduit_selections_total", (("model", "small"),))] == 2
    assert got[("conduit_selections_total", (("model", "large"),))] == 1
    key = (("duplicate", "true"), ("signal_type", "thumbs"))
    assert got[("conduit_feedback_total", key)] == 1


def test_rewards_are_a_histogram_per_model() -> None:
    metrics = SidecarMetrics()
    for reward in (0.05, 0.5, 0.95, 1.0):
        metrics.rewarded("small", reward)
    got = samples(metrics)
    model = ("model", "small")
    assert got[("conduit_reward_bucket", (("le", "0.1"), model))] == 1
    assert got[("conduit_reward_bucket", (("le", "0.5"), model))] == 2
    assert got[("conduit_reward_bucket", (("le", "0.9"), model))] == 2
    assert got[("conduit_reward_bucket", (("le", "1.0"), model))] == 4
    assert got[("conduit_reward_count", (model,))] == 4


def test_model_gauges_drop_a_model_the_router_no_longer_routes() -> None:
    # Router.remove_model drops the model from Router.stats(); its gauges used to keep
    # exporting the last mean reward and weight forever (a ghost model on every dashboard,
    # and one more pair of series per removed id).
    def stats(weight_sum: float, mean_reward: float) -> ModelStats:
        return ModelStats(
            selections=0,
            outcomes=0,
            weight_sum=weight_sum,
            mean_reward=mean_reward,
            cost_usd_sum=0.0,
            latency_s_sum=0.0,
            updates=0,
        )

    metrics = SidecarMetrics()
    metrics.set_model_stats({"small": stats(2.0, 0.5), "large": stats(4.0, 0.25)})
    metrics.set_model_stats({"small": stats(3.0, 0.6)})
    got = samples(metrics)
    assert got[("conduit_model_weight", (("model", "small"),))] == 3.0
    assert got[("conduit_model_mean_reward", (("model", "small"),))] == 0.6
    assert ("conduit_model_weight", (("model", "large"),)) not in got
    assert ("conduit_model_mean_reward", (("model", "large"),)) not in got
    metrics.set_model_stats({"small": stats(3.0, 0.6), "large": stats(1.0, 1.0)})
    assert samples(metrics)[("conduit_model_weight", (("model", "large"),))] == 1.0


class _CountingStore(InMemoryFeedbackStore):
    """The in-memory store, counting how often the pending queries are counted."""

    counts = 0

    async def pending_count(self) -> int:
        self.counts += 1
        return await super().pending_count()


async def _pending_counts(metrics_port: int | None) -> int:
    config = SidecarConfig(
        listen="127.0.0.1:0", store_url="memory://", metrics_port=metrics_port
    ).validate()
    app = await SidecarApp.create(config)
    app.store = app.collector.store = store = _CountingStore()
    server = SidecarServer(config, app, shutdown_delay_s=0.0)
    await server.start()
    await asyncio.sleep(0.2)  # the refresh loop's first round runs at once
    await server.shutdown()
    return store.counts


async def test_the_store_is_counted_for_the_gauges_only_with_a_metrics_endpoint() -> None:
    # Without an endpoint nobody can read conduit_pending_queries, yet the store was asked
    # for a COUNT every 5 s (the SQLite writer's connection, a PostgreSQL count(*)).
    assert await _pending_counts(None) == 0
    assert await _pending_counts(0) >= 1
