"""A ridge too small for exact merges is refused when the policy is made, naming `ridge`.

At ridge 1e-31 the core accepted the configuration, learned, and then refused every merge
of the arm's delta ("merged statistics are not positive definite"): in a direction no
observation reached, the rounding of the stored statistics swamps the ridge. The smallest
ridge accepted now (1e-6) keeps merges working on long streams of unit features.
"""

from __future__ import annotations

import numpy as np
import pytest

from conduit_sidecar.bandit import BanditPolicy, CoreError, FeatureHasher, PolicyConfig


@pytest.mark.parametrize("ridge", [1e-31, 1e-10, 9.9e-7, float("inf")])
@pytest.mark.parametrize("kind", ["linucb", "lin_ts"])
def test_a_ridge_too_small_for_merges_is_refused(kind: str, ridge: float) -> None:
    with pytest.raises(CoreError, match=r"^ridge: must be finite and >= 1e-6"):
        BanditPolicy(PolicyConfig(kind=kind, dim=16, ridge=ridge), ["a", "b"])  # type: ignore[arg-type]


def test_the_smallest_ridge_keeps_merges_working() -> None:
    dim = 64
    hasher = FeatureHasher(dim)
    config = PolicyConfig(dim=dim, ridge=1e-6)
    left, right = BanditPolicy(config, ["a"]), BanditPolicy(config, ["a"])
    rng = np.random.default_rng(3)
    texts = [hasher.featurize(f"query {i}") for i in range(30)]  # most directions never reached
    for i in range(20_000):
        (left if i % 2 else right).update("a", texts[i % 30], float(rng.random()))
    left.merge_delta(right.take_delta())
    theta = left.theta("a")
    assert theta is not None and np.all(np.isfinite(theta))
    assert BanditPolicy.from_bytes(left.to_bytes()).arm_stats()["a"].updates == 20_000
