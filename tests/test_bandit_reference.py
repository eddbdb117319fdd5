"""conduit_sidecar.bandit against the NumPy reference of bandit_helpers: same theta, scores
and widths to 1e-9 (with weights, a reward offset, re-applications and discounting), same
choices (an exact tie is broken by the core's seeded stream: the choice is then one of the
reference's tied best arms, with propensity 1/ties); and the statistics of the randomised
policies: linear-TS scores follow their posterior, and the logged propensities make
inverse-propensity weights unbiased."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from conduit_sidecar.bandit import (
    BanditPolicy,
    CoreError,
    PolicyConfig,
    PolicyKind,
)
from tests.bandit_helpers import ReferenceLinUCB, make, unit

# ---------------------------------------------------------------- agreement with NumPy


def test_linucb_matches_the_numpy_reference() -> None:
    dim, arms = 8, ["gpt", "claude", "llama", "mistral"]
    policy = BanditPolicy(PolicyConfig(dim=dim, alpha=0.7, ridge=1.5, refactor_every=50), arms)
    ref = ReferenceLinUCB(arms, dim, alpha=0.7, ridge=1.5)
    rng = np.random.default_rng(0)
    true_theta = {a: rng.normal(size=dim) for a in arms}
    ties = 0
    for t in range(600):
        x = unit(rng, dim)
        allowed = arms if t % 5 else arms[1:3]
        sel = policy.select(x, allowed)
        # The core breaks exact ties with its seeded stream and logs 1/ties: its choice must
        # be one of the reference's best arms, and the propensity must count all of them.
        best = ref.best(x, allowed)
        assert sel.arm in best
        assert sel.propensity == pytest.approx(1.0 / len(best), rel=1e-12)
        ties += len(best) > 1
        want = ref.scores(x, allowed)
        assert sel.scores.keys() == set(allowed)
        for a in allowed:
            assert sel.scores[a] == pytest.approx(want[a], rel=1e-9, abs=1e-9)
        reward = float(np.clip(0.5 + 0.3 * true_theta[sel.arm] @ x, 0.0, 1.0))
        weight = float(rng.uniform(0.1, 1.0))
        policy.update(sel.arm, x, reward, weight)
        ref.update(sel.arm, x, reward, weight)
    assert 1 <= ties < 20  # the cold start ties; after it the scores differ
    for a in arms:
        theta = policy.theta(a)
        assert theta is not None
        np.testing.assert_allclose(theta, ref.theta(a), rtol=1e-9, atol=1e-9)


def test_reward_offset_matches_the_reference() -> None:
    dim, arms, offset = 6, ["a", "b", "c"], 0.5
    policy = BanditPolicy(PolicyConfig(dim=dim, alpha=0.3, reward_offset=offset), arms)
    ref = ReferenceLinUCB(arms, dim, alpha=0.3, ridge=1.0, offset=offset)
    rng = np.random.default_rng(8)
    x = unit(rng, dim)
    # Untried arms are expected to earn the offset, not 0.
    assert policy.select(x).scores == pytest.approx(dict.fromkeys(arms, offset + 0.3))
    history = []
    for _ in range(200):
        x = unit(rng, dim)
        sel = policy.select(x)
        assert sel.arm in ref.best(x, arms)
        want = ref.scores(x, arms)
        for a in arms:
            assert sel.scores[a] == pytest.approx(want[a], rel=1e-9, abs=1e-9)
        r, w = float(rng.uniform(0.3, 1.0)), float(rng.uniform(0.2, 1.0))
        policy.update(sel.arm, x, r, w)
        ref.update(sel.arm, x, r, w)
        history.append((sel.arm, x, r, w))
    for arm, x, r, w in history[::3]:  # net deltas, including downdates
        r2, w2 = float(rng.uniform()), float(rng.uniform())
        policy.reapply(arm, x, r, w, r2, w2)
        ref.reapply(arm, x, r, w, r2, w2)
    for a in arms:
        np.testing.assert_allclose(policy.theta(a), ref.theta(a), rtol=1e-9, atol=1e-9)  # type: ignore[arg-type]
    restored = BanditPolicy.from_bytes(policy.to_bytes())
    assert restored.config.reward_offset == offset
    other = BanditPolicy(PolicyConfig(dim=dim), arms)
    other.update("a", x, 0.5)
    with pytest.raises(CoreError, match="reward_offset"):
        policy.merge_delta(other.take_delta())


def test_net_delta_reapply_matches_the_reference() -> None:
    dim = 5
    policy = make(dim=dim)
    ref = ReferenceLinUCB(["a", "b", "c"], dim, alpha=1.0, ridge=1.0)
    rng = np.random.default_rng(1)
    observations = []
    for _ in range(60):
        x, r, w = unit(rng, dim), float(rng.uniform()), float(rng.uniform())
        policy.update("a", x, r, w)
        ref.update("a", x, r, w)
        observations.append((x, r, w))
    # Replace every observation by a new blend, including weight decreases (downdates).
    for x, r, w in observations:
        r2, w2 = float(rng.uniform()), float(rng.uniform())
        policy.reapply("a", x, r, w, r2, w2)
        ref.reapply("a", x, r, w, r2, w2)
    theta = policy.theta("a")
    assert theta is not None
    np.testing.assert_allclose(theta, ref.theta("a"), rtol=1e-9, atol=1e-9)


def test_discounted_linucb_matches_the_reference() -> None:
    # Weights, an offset, discounting and re-applications (which do not discount) at once.
    dim, arms, gamma = 5, ["a", "b"], 0.95
    config = PolicyConfig(dim=dim, alpha=0.6, ridge=1.3, reward_offset=0.3, discount=gamma)
    policy = BanditPolicy(config, arms)
    ref = ReferenceLinUCB(arms, dim, alpha=0.6, ridge=1.3, offset=0.3, discount=gamma)
    rng = np.random.default_rng(12)
    history = []
    # 60 new observations per arm: the lazy scale (0.95^60 = 0.046) stays above the floor
    # that triggers the core's ridge-restoring re-factorisation.
    for t in range(120):
        x, r, w = unit(rng, dim), float(rng.uniform()), float(rng.uniform(0.1, 1.0))
        arm = arms[t % 2]
        policy.update(arm, x, r, w)
        ref.update(arm, x, r, w)
        history.append((arm, x, r, w))
        if t % 9 == 8:
            arm, x, r, w = history[int(rng.integers(len(history)))]
            r2, w2 = float(rng.uniform()), min(1.0, w + float(rng.uniform(0.0, 0.3)))
            policy.reapply(arm, x, r, w, r2, w2)
            ref.reapply(arm, x, r, w, r2, w2)
            history.append((arm, x, r2, w2))
    x = unit(rng, dim)
    sel = policy.select(x)
    want = ref.scores(x, arms)
    for a in arms:
        np.testing.assert_allclose(policy.theta(a), ref.theta(a), rtol=1e-9, atol=1e-9)  # type: ignore[arg-type]
        assert sel.scores[a] == pytest.approx(want[a], rel=1e-9, abs=1e-9)
    assert sel.uncertainty == pytest.approx(ref.width(x, sel.arm), rel=1e-9)


def test_linear_thompson_scores_follow_the_posterior() -> None:
    # theta ~ N(theta_hat, v^2 A^-1), so an arm's score at x is N(offset + theta_hat.x,
    # v^2 x^T A^-1 x), independently across arms. Checked along several directions
    # (which pins down the covariance as far as scores can show it): sample mean within
    # 4 standard errors, sample variance within 4 standard errors of a normal sample's
    # variance (relative sd sqrt(2/(n-1))), cross-arm correlation within 4/sqrt(n).
    dim, arms, v, n = 4, ["a", "b"], 0.7, 4000
    config = PolicyConfig(kind="lin_ts", dim=dim, ts_scale=v, ridge=1.3, reward_offset=0.2)
    policy = BanditPolicy(config, arms)
    ref = ReferenceLinUCB(arms, dim, alpha=0.0, ridge=1.3, offset=0.2)
    rng = np.random.default_rng(13)
    for t in range(40):
        x, r, w = rng.normal(size=dim), float(rng.uniform()), float(rng.uniform())
        policy.update(arms[t % 2], x, r, w)
        ref.update(arms[t % 2], x, r, w)
    directions = [*np.eye(dim), np.ones(dim), rng.normal(size=dim)]
    for x in directions:
        draws = np.array([[policy.select(x).scores[a] for a in arms] for _ in range(n)])
        for j, a in enumerate(arms):
            mean = 0.2 + float(ref.theta(a) @ x)
            sd = v * ref.width(x, a)
            assert abs(draws[:, j].mean() - mean) < 4 * sd / np.sqrt(n), (x, a)
            ratio = draws[:, j].var(ddof=1) / sd**2
            assert abs(ratio - 1.0) < 4 * np.sqrt(2 / (n - 1)), (x, a, ratio)
        assert abs(np.corrcoef(draws.T)[0, 1]) < 4 / np.sqrt(n)


def _arms_state(policy: BanditPolicy) -> None:
    """A fixed state: "a" and "b" tie for the best smoothed mean, "c" is worse, "d" unseen."""
    x = np.array([1.0, 0.3, 0.0])
    for _ in range(4):
        policy.update("a", x, 0.9, 1.0)
        policy.update("b", x, 0.9, 1.0)
        policy.update("c", x, 0.2, 0.5)


PROPENSITY_CASES: list[tuple[PolicyKind, dict[str, Any], list[str] | None]] = [
    ("epsilon_greedy", {"epsilon": 0.3}, None),  # two tied best arms
    ("epsilon_greedy", {"epsilon": 0.3}, ["c", "b", "d"]),  # one best arm among three
    ("epsilon_greedy", {"epsilon": 1.0}, ["d", "a"]),
    ("random", {}, None),
    ("random", {}, ["c", "a"]),
    ("ucb1", {}, ["a", "b"]),  # exact tie, broken by the seeded stream
    ("linucb", {}, ["a", "b", "d"]),
    ("fixed", {"fixed_arm": "c"}, None),
    ("lin_ts", {"ts_scale": 1.0}, None),
    ("lin_ts", {"ts_scale": 0.3, "mc_samples": 20}, ["b", "c", "d"]),
    ("beta_ts", {}, None),
    ("beta_ts", {"mc_samples": 50}, ["c", "d", "a"]),
]


@pytest.mark.parametrize(
    ("kind", "changes", "allowed"),
    PROPENSITY_CASES,
    ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(PROPENSITY_CASES)],
)
def test_logged_propensities_make_inverse_propensity_weights_unbiased(
    kind: PolicyKind, changes: dict[str, Any], allowed: list[str] | None
) -> None:
    # What off-policy evaluation needs from the logged propensity p: for every arm k,
    # E[1{chosen = k} / p] = 1 (inverse propensity scoring is then unbiased). Exact
    # propensities give exactly 1. The Thompson policies' Monte-Carlo estimate
    # p = (1 + wins in S fresh draws) / (S + 1) gives 1 - (1 - p_k)^(S + 1), since
    # E[1 / (1 + Binomial(S, p))] = (1 - (1 - p)^(S + 1)) / ((S + 1) p): within 1e-4 of 1 for
    # every arm here but the rare ones of the mc_samples=20 case, where the test checks it
    # is that value (~0.6) and not 1 or the ~(S + 1) p of an estimate without the +1.
    # Tolerance: 4 standard errors of the mean weight, plus the effect on the expected
    # value of estimating p_k by its frequency.
    n = 20_000
    policy = BanditPolicy(PolicyConfig(kind=kind, dim=3, seed=5, **changes), ["a", "b", "c", "d"])
    _arms_state(policy)
    x = np.array([1.0, 0.3, 0.0])
    candidates = allowed if allowed is not None else policy.arms
    weights = {a: np.zeros(n) for a in candidates}
    logged: dict[str, set[float]] = {a: set() for a in candidates}
    for t in range(n):
        sel = policy.select(x, allowed)
        weights[sel.arm][t] = 1.0 / sel.propensity
        logged[sel.arm].add(sel.propensity)
    samples = changes.get("mc_samples", 200) if kind in ("lin_ts", "beta_ts") else None
    for a in candidates:
        chosen = np.count_nonzero(weights[a])
        if samples is None:
            # Exact propensities are a function of the state: one value per arm.
            assert len(logged[a]) <= 1, (a, logged[a])
        if chosen == 0:
            continue
        freq = chosen / n
        if samples is None:
            want, slack = 1.0, 0.0
        else:
            want = 1.0 - (1.0 - freq) ** (samples + 1)
            slack = 4 * (samples + 1) * (1.0 - freq) ** samples * np.sqrt(freq * (1 - freq) / n)
        mean = weights[a].mean()
        se = weights[a].std(ddof=1) / np.sqrt(n)
        assert abs(mean - want) <= 4 * se + slack, (a, freq, mean, want, se)
    # Every arm the policy could choose was chosen (an arm never chosen would hide a
    # propensity mass the logged values do not account for).
    if kind in ("lin_ts", "beta_ts", "random", "epsilon_greedy"):
        assert all(logged[a] for a in candidates)
