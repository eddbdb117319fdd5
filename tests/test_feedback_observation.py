"""The pure observation functions: blending, bounded weight, telescoping deltas."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduit_sidecar.feedback.observation import (
    ERROR_CONFIDENCE,
    RETRY_CONFIDENCE,
    Accumulators,
    Contribution,
    accumulate,
    observation,
    quality,
    track_contribution,
)
from conduit_sidecar.reward import PRESETS, compose_reward

BALANCED = PRESETS["balanced"]
unit = st.floats(min_value=0.0, max_value=1.0)
signals = st.lists(st.tuples(unit, unit), min_size=1, max_size=30)


def test_no_signal_means_no_observation() -> None:
    assert observation(Accumulators(), BALANCED) is None
    # An outcome alone says nothing about quality.
    assert observation(Accumulators(cost_usd=0.01, latency_s=1.0), BALANCED) is None
    assert (
        observation(accumulate(Accumulators(), Contribution.signals([(1.0, 0.0)])), BALANCED)
        is None
    )


def test_blend_is_confidence_weighted_and_weight_is_the_max() -> None:
    acc = Accumulators()
    for q, c in [(1.0, 1.0), (0.0, 0.5)]:
        acc = accumulate(acc, Contribution.signals([(q, c)]))
    assert quality(acc) == pytest.approx(1.0 / 1.5)
    assert observation(acc, BALANCED) == (pytest.approx(1.0 / 1.5), 1.0)


def test_cost_and_latency_enter_through_compose_reward() -> None:
    acc = accumulate(Accumulators(), Contribution.signals([(1.0, 1.0)]).with_outcome(0.02, 5.0))
    assert observation(acc, BALANCED) == (compose_reward(BALANCED, 1.0, 0.02, 5.0), 1.0)
    # A later outcome-free contribution keeps the stored outcome.
    acc = accumulate(acc, Contribution.signals([(0.0, 0.5)]))
    assert (acc.cost_usd, acc.latency_s) == (0.02, 5.0)


def test_track_contribution_encodes_error_and_retries() -> None:
    assert track_contribution(False, 0, 0.001, 0.5) == Contribution(0.0, 0.0, 0.0, 0.001, 0.5)
    error = track_contribution(True, 0, None, None)
    assert (error.quality_num, error.quality_den, error.weight) == (0.0, ERROR_CONFIDENCE, 0.8)
    both = track_contribution(True, 3, None, None)
    assert both.quality_den == pytest.approx(ERROR_CONFIDENCE + RETRY_CONFIDENCE)
    assert both.weight == ERROR_CONFIDENCE


@given(signals)
def test_weight_never_exceeds_one_nor_decreases(pairs: list[tuple[float, float]]) -> None:
    acc = Accumulators()
    for q, c in pairs:
        after = accumulate(acc, Contribution.signals([(q, c)]))
        assert acc.weight <= after.weight <= 1.0
        obs = observation(after, BALANCED)
        if obs is not None:
            reward, weight = obs
            assert 0.0 <= reward <= 1.0 and 0.0 < weight <= 1.0
        acc = after


@given(signals, st.randoms(use_true_random=False))
def test_deltas_telescope_whatever_the_order(pairs: list[tuple[float, float]], rnd: object) -> None:
    """Summing the net deltas (w'r' - w r, w' - w) of any order of the same signals lands on
    the final observation: what the policy ends up holding is order-independent."""

    def run(order: list[tuple[float, float]]) -> tuple[float, float, tuple[float, float] | None]:
        acc = Accumulators()
        b_sum = a_sum = 0.0  # stand-ins for b += (w'r' - w r) x and A += (w' - w) x x^T
        for q, c in order:
            after = accumulate(acc, Contribution.signals([(q, c)]))
            old, new = observation(acc, BALANCED), observation(after, BALANCED)
            if new is not None:
                r0, w0 = old if old is not None else (0.0, 0.0)
                b_sum += new[1] * new[0] - w0 * r0
                a_sum += new[1] - w0
            acc = after
        return b_sum, a_sum, observation(acc, BALANCED)

    shuffled = list(pairs)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    b1, a1, final1 = run(pairs)
    b2, a2, final2 = run(shuffled)
    if final1 is None:
        assert final2 is None and a1 == a2 == 0.0
        return
    assert final2 is not None
    assert a1 == pytest.approx(final1[1], abs=1e-12) and a2 == pytest.approx(final2[1], abs=1e-12)
    assert b1 == pytest.approx(final1[0] * final1[1], abs=1e-9)
    assert b2 == pytest.approx(b1, abs=1e-9)
