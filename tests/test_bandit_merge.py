"""BanditPolicy.merge_delta from another thread: routing and learning go on meanwhile.

At feature_dim 386 one delta of 11 arms costs tens of milliseconds of exact
re-factorisation. The core used to hold the policy for all of it, so a Route from another
thread waited for the whole merge; it now does the math without holding the policy and only
clones and swaps the arms under it. Observations applied during a merge are kept (the result
equals one process that saw the merge and then them), `local_version` ignores merges, and
`skip_unknown` leaves out arms the policy does not have.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from conduit_sidecar.bandit import BanditPolicy, FeatureHasher, PolicyConfig

DIM = 386
ARMS = [f"model-{i}" for i in range(11)]


def learned(seed: int, per_arm: int = 3) -> BanditPolicy:
    policy = BanditPolicy(PolicyConfig(dim=DIM), ARMS)
    rng = np.random.default_rng(seed)
    for arm in ARMS:
        for _ in range(per_arm):
            x = rng.normal(size=DIM)
            policy.update(arm, x / np.linalg.norm(x), float(rng.random()))
    return policy


def test_a_route_answers_while_another_thread_merges() -> None:
    delta = learned(1).take_delta()
    policy = learned(2)
    copy = BanditPolicy.from_bytes(policy.to_bytes())
    start = time.perf_counter()
    copy.merge_delta(delta)
    merge_s = time.perf_counter() - start

    hasher = FeatureHasher(DIM)
    done = threading.Event()
    merger = threading.Thread(target=lambda: (policy.merge_delta(delta), done.set()))
    worst_s, routes = 0.0, 0
    merger.start()
    while not done.is_set():
        t = time.perf_counter()
        policy.route(hasher, f"query {routes} during the merge")
        worst_s = max(worst_s, time.perf_counter() - t)
        routes += 1
    merger.join()
    assert merge_s > 0.005, f"one merge took {merge_s * 1e3:.1f} ms: too cheap to measure"
    # Before, the first Route waited for the whole merge.
    assert worst_s < merge_s / 2, (
        f"a Route took {worst_s * 1e3:.1f} ms, a merge {merge_s * 1e3:.1f}"
    )
    assert routes > 1
    for arm in ARMS:
        np.testing.assert_array_equal(policy.theta(arm), copy.theta(arm))


def test_updates_during_a_merge_are_kept() -> None:
    deltas = [learned(seed).take_delta() for seed in (3, 4)]
    base = learned(5)
    policy = BanditPolicy.from_bytes(base.to_bytes())
    rng = np.random.default_rng(6)
    late = [
        (ARMS[i % len(ARMS)], rng.normal(size=DIM) / 20.0, float(rng.random())) for i in range(60)
    ]
    merger = threading.Thread(target=lambda: [policy.merge_delta(d) for d in deltas])
    merger.start()
    for arm, x, reward in late:
        policy.update(arm, x, reward)
    merger.join()

    sequential = BanditPolicy.from_bytes(base.to_bytes())
    for d in deltas:
        sequential.merge_delta(d)
    for arm, x, reward in late:
        sequential.update(arm, x, reward)
    got, want = policy.arm_stats(), sequential.arm_stats()
    for arm in ARMS:
        assert got[arm].updates == want[arm].updates
        assert got[arm].weight_sum == pytest.approx(want[arm].weight_sum, abs=1e-9)
        np.testing.assert_allclose(policy.theta(arm), sequential.theta(arm), rtol=0, atol=1e-9)


def test_local_version_ignores_merges_and_unknown_arms_can_be_skipped() -> None:
    other = learned(7, per_arm=1)
    other.add_arm("elsewhere")
    other.update("elsewhere", np.ones(DIM) / np.sqrt(DIM), 1.0)
    delta = other.take_delta()
    policy = learned(8, per_arm=1)
    version, local = policy.version, policy.local_version
    assert policy.merge_delta(delta, skip_unknown=True) == ["elsewhere"]
    assert "elsewhere" not in policy.arms
    assert policy.version == version + 1 and policy.local_version == local
    assert policy.arm_stats()["model-0"].updates == 2
    assert policy.merge_delta(delta) == []
    assert "elsewhere" in policy.arms and policy.local_version == local
    policy.update("model-0", np.ones(DIM) / np.sqrt(DIM), 0.5)
    assert policy.local_version == local + 1
