"""PolicySynchronizer in one process: replicas agree exactly, restarts restore, compaction is
bounded and exact, catalogue changes keep what was learned, mismatched settings are refused.

Each replica is a real Router with its own policy; the stores are real (Redis and PostgreSQL
from scripts/services.sh, an SQLite file, or one shared in-memory store).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sync_backends import BACKENDS, SHARED_BACKENDS, store_factory
from sync_cluster import PrivateRedis

from conduit_sidecar.bandit import FeatureHasher
from conduit_sidecar.errors import Unavailable
from conduit_sidecar.feedback import FeedbackCollector, FeedbackEvent
from conduit_sidecar.query import Query
from conduit_sidecar.router import Router
from conduit_sidecar.sync.fingerprint import IncompatibleSnapshot
from conduit_sidecar.sync.redis_store import RedisPolicyStateStore
from conduit_sidecar.sync.state_store import PolicyStateStore
from conduit_sidecar.sync.synchronizer import PolicySynchronizer

MODELS = ["cheap", "mid", "strong"]
DIM = 16


@dataclass(frozen=True)
class Observation:
    model: str
    features: list[float]
    reward: float
    weight: float
    reweighted: bool  # applied in two steps (a first signal, then a stronger one)


def observations(seed: int, n: int, models: list[str] = MODELS) -> list[Observation]:
    rng = random.Random(seed)
    hasher = FeatureHasher(DIM)
    out = []
    for i in range(n):
        text = f"query {seed}-{i} about {rng.choice(['code', 'math', 'poems', 'law'])}"
        out.append(
            Observation(
                model=rng.choice(models),
                features=hasher.featurize(text).tolist(),
                reward=rng.random(),
                weight=rng.choice([1.0, 0.5, 0.25, 0.9]),
                reweighted=i % 2 == 1,
            )
        )
    return out


def apply(router: Router, obs: list[Observation]) -> None:
    """Some as one observation, some as a later re-weighting (exercises reapply)."""
    for o in obs:
        if not o.reweighted:
            router.apply_observation(o.model, o.features, None, (o.reward, o.weight))
        else:
            router.apply_observation(o.model, o.features, None, (o.reward, o.weight / 2))
            router.apply_observation(
                o.model, o.features, (o.reward, o.weight / 2), (1.0 - o.reward, o.weight)
            )


def replay(all_obs: list[Observation], models: list[str] = MODELS) -> Router:
    reference = Router(models, feature_dim=DIM)
    apply(reference, all_obs)
    return reference


def assert_same_policy(router: Router, reference: Router, models: list[str] = MODELS) -> None:
    got, want = router.policy.arm_stats(), reference.policy.arm_stats()
    for model in models:
        assert got[model].updates == want[model].updates, model
        assert got[model].weight_sum == pytest.approx(want[model].weight_sum, abs=1e-9, rel=0)
        assert got[model].reward_sum == pytest.approx(want[model].reward_sum, abs=1e-9, rel=0)
        theta, ref_theta = router.policy.theta(model), reference.policy.theta(model)
        assert theta is not None and ref_theta is not None
        np.testing.assert_allclose(theta, ref_theta, rtol=0, atol=1e-9)


@pytest.fixture(params=BACKENDS)
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], PolicyStateStore]]:
    async with store_factory(request.param, tmp_path) as factory:
        await factory().initialize()
        yield factory


@pytest.fixture(params=SHARED_BACKENDS)
async def make_shared(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], PolicyStateStore]]:
    async with store_factory(request.param, tmp_path) as factory:
        await factory().initialize()
        yield factory


async def replicas(
    make_store: Callable[[], PolicyStateStore], n: int, models: list[str] = MODELS, **kw: float
) -> list[PolicySynchronizer]:
    out = []
    for _ in range(n):
        sync = PolicySynchronizer(Router(models, feature_dim=DIM), make_store(), **kw)
        await sync.restore()
        out.append(sync)
    return out


async def sync_all(syncs: list[PolicySynchronizer]) -> None:
    for _ in range(2):  # the first round publishes, the second reads what was published after
        for s in syncs:
            await s.sync_once()


async def test_three_replicas_converge_to_a_single_process_replay(
    make_store: Callable[[], PolicyStateStore],
) -> None:
    syncs = await replicas(make_store, 3)
    batches = [observations(seed, 40) for seed in range(3)]
    for sync, batch in zip(syncs, batches, strict=True):
        apply(sync.router, batch)
    await sync_all(syncs)
    reference = replay([o for b in batches for o in b])
    for sync in syncs:
        assert_same_policy(sync.router, reference)
    # More learning, interleaved with syncs, still adds up exactly (no echo, no double count).
    more = [observations(seed, 15) for seed in range(10, 13)]
    for sync, batch in zip(syncs, more, strict=True):
        apply(sync.router, batch[:7])
        await sync.sync_once()
        apply(sync.router, batch[7:])
    await sync_all(syncs)
    reference = replay([o for b in batches + more for o in b])
    for sync in syncs:
        assert_same_policy(sync.router, reference)
        assert sync.status.skipped == 0


async def test_restart_restores_everything_published(
    make_store: Callable[[], PolicyStateStore],
) -> None:
    first, second = await replicas(make_store, 2)
    a, b = observations(1, 30), observations(2, 30)
    apply(first.router, a)
    apply(second.router, b)
    await first.sync_once()
    await second.stop()  # a clean shutdown publishes and snapshots
    unpublished = observations(3, 5)
    apply(first.router, unpublished)  # `first` then crashes: never synced again
    (restarted,) = await replicas(make_store, 1)
    assert restarted.replica_id not in (first.replica_id, second.replica_id)
    assert_same_policy(restarted.router, replay(a + b))


async def test_crashed_replicas_deltas_are_read_once_by_its_successor(
    make_shared: Callable[[], PolicyStateStore],
) -> None:
    (old,) = await replicas(make_shared, 1)
    batches = [observations(seed, 10) for seed in range(4)]
    for batch in batches:
        apply(old.router, batch)
        await old.sync_once()  # four deltas in the log, no snapshot: then kill -9
    (new,) = await replicas(make_shared, 1)
    await new.sync_once()
    await new.sync_once()
    assert_same_policy(new.router, replay([o for b in batches for o in b]))
    assert new.status.merged == 0  # restore read them; syncing again does not add them twice


async def test_compaction_keeps_storage_bounded_and_state_exact(
    make_store: Callable[[], PolicyStateStore],
) -> None:
    syncs = await replicas(make_store, 3, delta_retention_s=0.0)
    lagging = syncs[2]
    everything: list[Observation] = []
    peak = 0
    for round_ in range(6):
        for k, sync in enumerate(syncs[:2]):
            batch = observations(100 * round_ + k, 8)
            everything += batch
            apply(sync.router, batch)
            await sync.sync_once()
        await syncs[round_ % 2].snapshot()
        stats = await syncs[0].store.storage_stats()
        peak = max(peak, stats.delta_count)
    assert peak <= 2  # compaction folds everything older than the retention (0 s here)
    # The third replica never synced while the log was folded under it: it must rebuild
    # from the base rather than miss deltas, and end exact.
    await lagging.sync_once()
    assert lagging.status.rebuilds == 1
    await sync_all(syncs)
    reference = replay(everything)
    for sync in syncs:
        assert_same_policy(sync.router, reference)
    (restarted,) = await replicas(make_store, 1)
    assert_same_policy(restarted.router, reference)


async def test_catalogue_change_keeps_what_remains_and_starts_new_models_fresh(
    make_store: Callable[[], PolicyStateStore], caplog: pytest.LogCaptureFixture
) -> None:
    (old,) = await replicas(make_store, 1)
    learned = observations(7, 60)
    apply(old.router, learned)
    await old.stop()
    new_models = ["cheap", "mid", "newcomer"]
    (new,) = await replicas(make_store, 1, models=new_models)
    assert sorted(new.router.policy.arms) == sorted(new_models)
    reference = replay(learned)
    assert_same_policy(new.router, reference, models=["cheap", "mid"])
    assert new.router.policy.arm_stats()["newcomer"].updates == 0
    assert "strong" in caplog.text and "newcomer" in caplog.text
    # The removed model's statistics are kept in the store, not wiped.
    base = await new.store.load_snapshot()
    assert base is not None and "strong" in base.meta["arms"]
    # A replica still on the old catalogue keeps teaching "strong": the new one ignores it.
    (older,) = await replicas(make_store, 1)
    apply(older.router, observations(8, 10))
    await older.sync_once()
    await new.sync_once()
    assert "strong" not in new.router.policy.arms
    assert (await new.router.route(Query(text="hello"))).selected_model in new_models


async def test_snapshot_with_other_feature_settings_is_refused_and_kept(
    make_store: Callable[[], PolicyStateStore],
) -> None:
    (writer,) = await replicas(make_store, 1)
    apply(writer.router, observations(1, 10))
    await writer.stop()
    store = make_store()
    other = PolicySynchronizer(Router(MODELS, feature_dim=8), store)
    with pytest.raises(IncompatibleSnapshot) as refused:
        await other.restore()
    message = str(refused.value)
    assert "feature_dim=16" in message and "feature_dim=8" in message
    assert "--feature-dim 16" in message
    assert store.reset_hint in message and "Nothing was loaded and nothing was deleted" in message
    kind = PolicySynchronizer(Router(MODELS, feature_dim=DIM, policy="beta_ts"), store)
    with pytest.raises(IncompatibleSnapshot, match="--policy linucb"):
        await kind.restore()
    (same,) = await replicas(make_store, 1)  # the right settings still restore everything
    assert same.router.policy.arm_stats()["cheap"].updates > 0


async def test_running_loops_converge_without_manual_syncs(
    make_shared: Callable[[], PolicyStateStore],
) -> None:
    syncs = await replicas(make_shared, 3, sync_interval_s=0.05)
    for s in syncs:
        await s.start()
    try:
        batches = [observations(20 + k, 20) for k in range(3)]
        for sync, batch in zip(syncs, batches, strict=True):
            apply(sync.router, batch)
        reference = replay([o for b in batches for o in b])
        want = reference.policy.arm_stats()
        for _ in range(200):
            await asyncio.sleep(0.05)
            stats = [s.router.policy.arm_stats() for s in syncs]
            if all(st[m].updates == want[m].updates for st in stats for m in MODELS):
                break
        for sync in syncs:
            assert_same_policy(sync.router, reference)
    finally:
        for s in syncs:
            await s.stop()


async def test_zero_interval_publishes_before_the_call_returns(
    make_shared: Callable[[], PolicyStateStore],
) -> None:
    writer, reader = await replicas(make_shared, 2, sync_interval_s=0.0)
    collector = FeedbackCollector(writer.router)
    writer.collector = collector
    await writer.start()
    try:
        before = (await writer.store.storage_stats()).delta_count
        await writer.router.update("mid", 0.001, 0.8, 0.5, [1.0] + [0.0] * (DIM - 1))
        assert (await writer.store.storage_stats()).delta_count == before + 1
        decision = await writer.router.route(Query(text="explain monads"))
        await collector.log_decision(decision)
        await collector.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
        assert (await writer.store.storage_stats()).delta_count == before + 2
        await reader.sync_once()  # `writer` may now crash: nothing it learned is lost
        assert_same_policy(reader.router, writer.router)
    finally:
        await writer.stop()
    assert "update" not in vars(writer.router)  # hooks removed at stop


async def test_zero_interval_keeps_the_delta_when_the_store_is_down(tmp_path: Path) -> None:
    # A private redis-server (append-only file) so the test can stop and restart it.
    redis = PrivateRedis(tmp_path)
    stores = [RedisPolicyStateStore.from_url(redis.url, namespace="t") for _ in range(2)]
    writer = PolicySynchronizer(Router(MODELS, feature_dim=DIM), stores[0], sync_interval_s=0.0)
    reader = PolicySynchronizer(Router(MODELS, feature_dim=DIM), stores[1])
    try:
        await writer.restore()
        await reader.restore()
        await writer.start()
        redis.stop()
        # The update itself succeeded: it must not fail (a retried Update would count twice).
        await writer.router.update("mid", 0.001, 0.8, 0.5, [1.0] + [0.0] * (DIM - 1))
        assert writer.status.pending and writer.status.failures >= 1
        redis.start()
        for _ in range(100):
            await asyncio.sleep(0.1)
            if not writer.status.pending:
                break
        await reader.sync_once()
        assert_same_policy(reader.router, writer.router)
    finally:
        await writer.stop()
        for store in stores:
            await store.close()
        redis.stop()


@pytest.mark.parametrize(
    "kind", ["linucb", "lin_ts", "beta_ts", "ucb1", "epsilon_greedy", "random", "fixed"]
)
async def test_every_policy_kind_converges(kind: str, tmp_path: Path) -> None:
    async with store_factory("sqlite", tmp_path) as make:
        syncs = []
        for _ in range(2):
            sync = PolicySynchronizer(Router(MODELS, feature_dim=DIM, policy=kind), make())
            await sync.restore()
            syncs.append(sync)
        batches = [observations(50 + k, 25) for k in range(2)]
        for sync, batch in zip(syncs, batches, strict=True):
            apply(sync.router, batch)
        await sync_all(syncs)
        reference = Router(MODELS, feature_dim=DIM, policy=kind)
        apply(reference, [o for b in batches for o in b])
        want = reference.policy.arm_stats()
        for sync in syncs:
            got = sync.router.policy.arm_stats()
            for model in MODELS:
                assert got[model].updates == want[model].updates
                assert got[model].weight_sum == pytest.approx(want[model].weight_sum, abs=1e-9)
                assert got[model].reward_sum == pytest.approx(want[model].reward_sum, abs=1e-9)


async def test_a_restart_under_the_same_replica_id_publishes_its_new_learning(
    make_store: Callable[[], PolicyStateStore],
) -> None:
    # `replica_id` may be given (e.g. a pod name), and then it survives a restart. The new
    # process's publish ids must not collide with its predecessor's retry marks (kept 24
    # hours), or its first deltas are taken for retries of old ones and silently dropped.
    old = PolicySynchronizer(Router(MODELS, feature_dim=DIM), make_store(), replica_id="pod-a")
    await old.restore()
    before = observations(60, 10)
    apply(old.router, before)
    await old.stop()
    new = PolicySynchronizer(Router(MODELS, feature_dim=DIM), make_store(), replica_id="pod-a")
    await new.restore()
    after = observations(61, 10)
    apply(new.router, after)
    await new.sync_once()
    (reader,) = await replicas(make_store, 1)
    assert_same_policy(reader.router, replay(before + after))


async def test_a_clean_stop_publishes_learning_made_while_a_delta_was_pending(
    tmp_path: Path,
) -> None:
    # A delta the store refused stays pending; what the policy learns after that must still
    # reach the store by the end of stop(), which runs one last sync (docs/OPERATIONS.md: a
    # clean shutdown loses nothing). A private redis-server so the outage is real.
    redis = PrivateRedis(tmp_path)
    stores = [RedisPolicyStateStore.from_url(redis.url, namespace="t") for _ in range(2)]
    writer = PolicySynchronizer(Router(MODELS, feature_dim=DIM), stores[0], sync_interval_s=60)
    reader = PolicySynchronizer(Router(MODELS, feature_dim=DIM), stores[1], sync_interval_s=60)
    try:
        await writer.restore()
        await reader.restore()
        during, after = observations(70, 10), observations(71, 10)
        apply(writer.router, during)
        redis.stop()
        with pytest.raises(Unavailable):
            await writer.sync_once()
        assert writer.status.pending
        redis.start()
        apply(writer.router, after)
        await writer.stop()
        await reader.sync_once()
        assert_same_policy(reader.router, replay(during + after))
    finally:
        for store in stores:
            await store.close()
        redis.stop()
