"""A merge or a compaction at a large feature dimension must not hold the event loop.

At feature_dim 386 merging one replica's delta of 11 models costs tens of milliseconds of
exact re-factorisation (O(d^3) per model). That work used to run on the event loop with the
policy locked, so every Route waited for it (Route p99 55 ms with two Redis replicas). The
core now re-factorises outside the policy's lock and the synchronizer runs merges and
compaction folds in a worker thread, so the loop keeps answering.

The bounds are relative, not a fixed number of milliseconds: they compare the worst loop
stall with what one such merge costs on this machine right now, measured in the same test.
Before the fix a sync stalled the loop for every delta of a page at once (three merges here)
and a compaction for at least one whole fold; after, the stalls are the short lock holds,
the store's own I/O and the interpreter's thread switches (5-12 ms measured, against 55-115
ms per merge on a loaded 2-core machine).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
from sync_backends import store_factory

from conduit_sidecar.bandit import BanditPolicy, FeatureHasher
from conduit_sidecar.query import Query
from conduit_sidecar.router import Router
from conduit_sidecar.sync.state_store import START, PolicyStateStore
from conduit_sidecar.sync.synchronizer import PolicySynchronizer

DIM = 386
MODELS = [f"model-{i}" for i in range(11)]


@pytest.fixture
async def redis_store(tmp_path: Path) -> AsyncIterator[Callable[[], PolicyStateStore]]:
    async with store_factory("redis", tmp_path) as factory:
        await factory().initialize()
        yield factory


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Callable[[], PolicyStateStore]]:
    """For compaction: its I/O runs in threads, so what stalls the loop is the folding (the
    Redis client writes a 20 MB base from the loop, a stall of its own, not measured here)."""
    async with store_factory("sqlite", tmp_path) as factory:
        await factory().initialize()
        yield factory


class LoopWatch:
    """Measures the event loop's worst lateness and counts Routes answered meanwhile."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.worst_s = 0.0
        self.routes = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _tick(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst_s = max(self.worst_s, time.perf_counter() - start - 0.001)

    async def _route(self) -> None:
        i = 0
        while not self._stop.is_set():
            await self.router.route(Query(text=f"watchdog query {i} about code"))
            self.routes += 1
            i += 1
            await asyncio.sleep(0.002)

    async def __aenter__(self) -> LoopWatch:
        self._tasks = [asyncio.create_task(self._tick()), asyncio.create_task(self._route())]
        await asyncio.sleep(0.01)
        self.worst_s, self.routes = 0.0, 0
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


def learn(router: Router, seed: int, per_model: int) -> None:
    rng = random.Random(seed)
    hasher = FeatureHasher(DIM)
    for model in MODELS:
        for i in range(per_model):
            x = hasher.featurize(f"{seed} {model} {i} {rng.random()}").tolist()
            router.apply_observation(model, x, None, (rng.random(), 1.0))


def one_merge_s(policy: BanditPolicy, delta: bytes) -> float:
    """What merging `delta` costs on this machine now (on a private copy, best of two)."""
    best = float("inf")
    for _ in range(2):
        copy = BanditPolicy.from_bytes(policy.to_bytes())
        start = time.perf_counter()
        copy.merge_delta(delta)
        best = min(best, time.perf_counter() - start)
    return best


def assert_same_thetas(a: Router, b: Router) -> None:
    for model in MODELS:
        got, want = a.policy.theta(model), b.policy.theta(model)
        assert got is not None and want is not None
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


async def test_merging_a_large_delta_keeps_the_loop_answering(
    redis_store: Callable[[], PolicyStateStore],
) -> None:
    make_store = redis_store
    reader = PolicySynchronizer(Router(MODELS, feature_dim=DIM), make_store(), sync_interval_s=60)
    writer = PolicySynchronizer(Router(MODELS, feature_dim=DIM), make_store(), sync_interval_s=60)
    await reader.restore()
    await writer.restore()
    for seed in (1, 2, 3):  # three deltas (one page), each touching every model
        learn(writer.router, seed, per_model=3)
        await writer.flush()
    deltas = [r.data for r in await make_store().read_all_deltas(START)]
    assert len(deltas) == 3
    cost_s = one_merge_s(reader.router.policy, deltas[0])

    async with LoopWatch(reader.router) as watch:
        assert await reader.sync_once() == 3
    assert cost_s > 0.005, f"one merge took {cost_s * 1e3:.1f} ms: too cheap to measure a stall"
    # Before: >= 3 merges in one stall. Now: a fraction of one.
    assert watch.worst_s < cost_s, (
        f"event loop stalled {watch.worst_s * 1e3:.1f} ms during the sync; "
        f"one merge costs {cost_s * 1e3:.1f} ms"
    )
    assert watch.routes > 0
    assert_same_thetas(reader.router, writer.router)


async def test_compaction_keeps_the_loop_answering(
    sqlite_store: Callable[[], PolicyStateStore],
) -> None:
    make_store = sqlite_store
    writer = PolicySynchronizer(
        Router(MODELS, feature_dim=DIM), make_store(), sync_interval_s=60, delta_retention_s=0.0
    )
    await writer.restore()
    for seed in (4, 5):
        learn(writer.router, seed, per_model=3)
        await writer.flush()
    delta = (await make_store().read_all_deltas(START))[0].data
    cost_s = one_merge_s(BanditPolicy(writer.router.policy.config, MODELS), delta)

    async with LoopWatch(writer.router) as watch:
        result = await writer.snapshot()
    assert result is not None and result.folded == 2
    assert cost_s > 0.005, f"one fold took {cost_s * 1e3:.1f} ms: too cheap to measure a stall"
    assert watch.worst_s < cost_s / 2, (
        f"event loop stalled {watch.worst_s * 1e3:.1f} ms during compaction; "
        f"one fold costs {cost_s * 1e3:.1f} ms"
    )
    assert watch.routes > 0
