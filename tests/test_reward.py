"""Reward weights, presets, and the cost/latency scales."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.reward import (
    PRESETS,
    RewardWeights,
    compose_reward,
    cost_score,
    latency_score,
    resolve_weights,
)


def test_weights_are_normalised() -> None:
    weights = RewardWeights(3, 1, 1)
    assert weights.as_tuple() == pytest.approx((0.6, 0.2, 0.2))
    assert sum(RewardWeights(0.0, 0.0, 5.0).as_tuple()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((-0.1, 0.5, 0.5), "reward_weights.quality"),
        ((0.5, math.nan, 0.5), "reward_weights.cost"),
        ((0.5, 0.5, math.inf), "reward_weights.latency"),
        ((0.5, "0.5", 0.5), "reward_weights.cost"),
        ((True, 0.5, 0.5), "reward_weights.quality"),
        ((0.0, 0.0, 0.0), "reward_weights"),
        ((10**400, 1, 1), "reward_weights.quality"),  # an int no float can hold
    ],
)
def test_bad_weights_name_the_field(args: tuple[object, object, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        RewardWeights(*args)  # type: ignore[arg-type]
    assert info.value.field == field


def test_huge_finite_weights_still_sum_to_one() -> None:
    # Their sum overflows to inf; dividing by it made every weight 0, so every reward of
    # such a decision was 0 whatever its quality, and a stored decision with all-zero
    # weights could not be read back (its weights are refused when rebuilt).
    weights = RewardWeights(1e308, 1e308, 1e308)
    assert weights.as_tuple() == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert RewardWeights(*weights.as_tuple()) == weights
    assert RewardWeights(1.5e308, 0.5e308, 0.0).as_tuple() == pytest.approx((0.75, 0.25, 0.0))
    assert compose_reward(weights, 1.0, None, None) == pytest.approx(1.0)


def test_presets() -> None:
    assert set(PRESETS) == {"balanced", "quality", "cost", "speed"}
    assert PRESETS["balanced"].as_tuple() == pytest.approx((0.6, 0.2, 0.2))
    assert PRESETS["quality"].quality > PRESETS["balanced"].quality
    assert PRESETS["cost"].cost == max(PRESETS["cost"].as_tuple())
    assert PRESETS["speed"].latency == max(PRESETS["speed"].as_tuple())
    for weights in PRESETS.values():
        assert sum(weights.as_tuple()) == pytest.approx(1.0)


def test_resolve_weights() -> None:
    assert resolve_weights("cost") is PRESETS["cost"]
    explicit = RewardWeights(1, 1, 1)
    assert resolve_weights(explicit) is explicit
    with pytest.raises(InvalidArgument, match="unknown preset 'cheap'") as info:
        resolve_weights("cheap")
    assert info.value.field == "reward_weights"
    with pytest.raises(InvalidArgument):
        resolve_weights(0.5)  # type: ignore[arg-type]


def test_cost_score_separates_cheap_from_expensive_calls() -> None:
    cheap, expensive = cost_score(0.0002), cost_score(0.02)
    assert cheap >= 0.85
    assert expensive <= 0.2
    assert cheap - expensive >= 0.7
    # The anchors: free and tiny calls score 1, a $0.05 call or dearer scores 0.
    assert cost_score(0.0) == 1.0
    assert cost_score(1e-6) == 1.0
    assert cost_score(0.05) == 0.0
    assert cost_score(10.0) == 0.0


def test_latency_score_anchors() -> None:
    assert latency_score(0.0) == 1.0
    assert latency_score(0.2) == 1.0
    assert latency_score(30.0) == 0.0
    assert latency_score(120.0) == 0.0
    assert latency_score(0.5) > latency_score(2.0) > latency_score(10.0)
    assert latency_score(1.0) - latency_score(10.0) > 0.4


@given(st.floats(min_value=0.0, max_value=1e3), st.floats(min_value=0.0, max_value=1e3))
def test_scores_are_monotone_and_bounded(a: float, b: float) -> None:
    lo, hi = min(a, b), max(a, b)
    assert 0.0 <= cost_score(hi) <= cost_score(lo) <= 1.0
    assert 0.0 <= latency_score(hi) <= latency_score(lo) <= 1.0


@pytest.mark.parametrize(
    "bad",
    [
        -0.001,
        math.nan,
        math.inf,
        -math.inf,
        "1",
        None,
        True,
        pytest.param(10**400, id="int-beyond-float"),
        pytest.param(-(10**400), id="negative-int-beyond-float"),
    ],
)
def test_bad_cost_and_latency_are_refused(bad: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        cost_score(bad)  # type: ignore[arg-type]
    assert info.value.field == "cost_usd"
    with pytest.raises(InvalidArgument) as info:
        latency_score(bad)  # type: ignore[arg-type]
    assert info.value.field == "latency_s"


def test_compose_reward_weights_the_parts() -> None:
    weights = RewardWeights(0.6, 0.2, 0.2)
    expected = 0.6 * 0.9 + 0.2 * cost_score(0.002) + 0.2 * latency_score(1.5)
    assert compose_reward(weights, 0.9, 0.002, 1.5) == pytest.approx(expected)
    # Same quality: the cheap fast call earns clearly more than the expensive slow one.
    assert compose_reward(weights, 0.8, 0.0002, 0.5) - compose_reward(weights, 0.8, 0.02, 8.0) > 0.2


def test_missing_cost_or_latency_moves_weight_to_quality() -> None:
    weights = RewardWeights(0.6, 0.2, 0.2)
    assert compose_reward(weights, 0.7, None, None) == pytest.approx(0.7)
    assert compose_reward(weights, 1.0, None, None) == 1.0
    assert compose_reward(weights, 0.5, 0.0, None) == pytest.approx(0.8 * 0.5 + 0.2 * 1.0)
    assert compose_reward(weights, 0.5, None, 30.0) == pytest.approx(0.8 * 0.5)


@pytest.mark.parametrize("bad", [-0.1, 1.1, math.nan, math.inf, "0.5", None])
def test_compose_reward_refuses_bad_quality(bad: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        compose_reward(PRESETS["balanced"], bad, 0.001, 1.0)  # type: ignore[arg-type]
    assert info.value.field == "quality"


@given(
    st.sampled_from(sorted(PRESETS)),
    st.floats(min_value=0.0, max_value=1.0),
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e6)),
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e6)),
)
def test_compose_reward_is_always_a_unit_number(
    preset: str, quality: float, cost: float | None, latency: float | None
) -> None:
    reward = compose_reward(PRESETS[preset], quality, cost, latency)
    assert math.isfinite(reward)
    assert 0.0 <= reward <= 1.0
