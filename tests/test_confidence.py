"""The runner-up, margin and confidence of a routing decision."""

from __future__ import annotations

import math

import pytest

from conduit_sidecar.confidence import best_other, choice_confidence


def confidence(scores: dict[str, float], arm: str, uncertainty: float) -> float:
    _, margin = best_other(scores, arm)
    return choice_confidence(len(scores), margin, uncertainty)


def test_confidence_formula() -> None:
    assert confidence({"a": 0.3}, "a", 0.5) == 1.0
    assert confidence({"a": 0.5, "b": 0.5}, "a", 0.2) == pytest.approx(0.5)
    assert confidence({"a": 0.5, "b": 0.5, "c": 0.5}, "a", 0.2) == pytest.approx(1 / 3)
    assert best_other({"a": 0.9, "b": 0.5}, "a") == ("b", pytest.approx(0.4))
    assert best_other({"a": 0.9}, "a") == (None, math.inf)
    high = confidence({"a": 0.9, "b": 0.5}, "a", 0.1)
    wide = confidence({"a": 0.9, "b": 0.5}, "a", 2.0)
    assert high > 0.99 and 0.5 < wide < high  # same margin, wider posterior: less sure
    assert confidence({"a": 0.4, "b": 0.5}, "a", 0.1) < 0.5  # an exploration step
    assert confidence({"a": math.inf, "b": 0.5}, "a", 0.0) == 0.5
    assert confidence({"a": 0.6, "b": 0.5}, "a", 0.0) == 1.0


def test_confidence_stays_in_the_unit_interval_at_the_extremes() -> None:
    # erf saturates: the clamp returns exactly 1.0 and 0.0 at the ends, never beyond.
    assert choice_confidence(2, 50.0, 1e-3) == 1.0
    assert choice_confidence(2, -50.0, 1e-3) == 0.0
    assert choice_confidence(2, -math.inf, 1.0) == 0.5  # no finite margin: exploration
    assert choice_confidence(2, -0.3, 0.0) == 0.0  # explored a lower score, no width
    for margin in (-3.0, -0.1, 0.0, 0.1, 3.0):
        for width in (1e-9, 0.5, 1e9):
            value = choice_confidence(11, margin, width)
            assert 0.0 <= value <= 1.0 and not math.isnan(value)
