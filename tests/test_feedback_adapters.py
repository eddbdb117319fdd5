"""Built-in adapters: the spec's rewards and confidences, and refusals naming the field."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.feedback import (
    FeedbackAdapter,
    FeedbackEvent,
    QualityScoreAdapter,
    RatingAdapter,
    RegenerationAdapter,
    RewardMapping,
    TaskSuccessAdapter,
    ThumbsAdapter,
    builtin_adapters,
)


def read(adapter: FeedbackAdapter, payload: dict[str, Any]) -> tuple[float, float]:
    mapping = adapter.to_reward(FeedbackEvent("q1", adapter.signal_type, payload))
    return mapping.reward, mapping.confidence


@pytest.mark.parametrize(
    ("adapter", "payload", "expected"),
    [
        (ThumbsAdapter(), {"value": "up"}, (1.0, 1.0)),
        (ThumbsAdapter(), {"value": "down"}, (0.0, 1.0)),
        (ThumbsAdapter(), {"value": " UP "}, (1.0, 1.0)),
        (RatingAdapter(), {"rating": 1}, (0.0, 1.0)),
        (RatingAdapter(), {"rating": 3}, (0.5, 1.0)),
        (RatingAdapter(), {"rating": 5}, (1.0, 1.0)),
        (RatingAdapter(), {"rating": 4.5}, (0.875, 1.0)),
        (TaskSuccessAdapter(), {"success": True}, (1.0, 1.0)),
        (TaskSuccessAdapter(), {"success": False}, (0.0, 0.8)),
        (RegenerationAdapter(), {"regenerated": True}, (0.0, 0.8)),
        (RegenerationAdapter(), {"regenerated": False}, (1.0, 0.8)),
        (QualityScoreAdapter(), {"score": 0.0}, (0.0, 1.0)),
        (QualityScoreAdapter(), {"score": 0.73}, (0.73, 1.0)),
        (QualityScoreAdapter(), {"score": 1}, (1.0, 1.0)),
    ],
)
def test_spec_table_rewards_and_confidences(
    adapter: FeedbackAdapter, payload: dict[str, Any], expected: tuple[float, float]
) -> None:
    assert read(adapter, payload) == expected


@pytest.mark.parametrize(
    ("adapter", "payload", "field"),
    [
        (ThumbsAdapter(), {}, "payload.value"),
        (ThumbsAdapter(), {"value": 1}, "payload.value"),
        (ThumbsAdapter(), {"value": "meh"}, "payload.value"),
        (RatingAdapter(), {}, "payload.rating"),
        (RatingAdapter(), {"rating": 0}, "payload.rating"),
        (RatingAdapter(), {"rating": 6}, "payload.rating"),
        (RatingAdapter(), {"rating": True}, "payload.rating"),
        (RatingAdapter(), {"rating": "4"}, "payload.rating"),
        (RatingAdapter(), {"rating": math.nan}, "payload.rating"),
        (RatingAdapter(), {"rating": math.inf}, "payload.rating"),
        (RatingAdapter(), {"rating": 10**400}, "payload.rating"),  # JSON ints are unbounded
        (TaskSuccessAdapter(), {"success": 1}, "payload.success"),
        (TaskSuccessAdapter(), {}, "payload.success"),
        (RegenerationAdapter(), {"regenerated": "no"}, "payload.regenerated"),
        (QualityScoreAdapter(), {"score": -0.1}, "payload.score"),
        (QualityScoreAdapter(), {"score": 1.01}, "payload.score"),
        (QualityScoreAdapter(), {"score": None}, "payload.score"),
        (QualityScoreAdapter(), {"score": -(10**400)}, "payload.score"),
    ],
)
def test_malformed_payloads_name_the_field(
    adapter: FeedbackAdapter, payload: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        read(adapter, payload)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"{field}: ")


@given(st.floats(min_value=1.0, max_value=5.0))
def test_rating_maps_linearly_into_the_unit_interval(rating: float) -> None:
    reward, confidence = read(RatingAdapter(), {"rating": rating})
    assert reward == pytest.approx((rating - 1.0) / 4.0)
    assert 0.0 <= reward <= 1.0 and confidence == 1.0


@given(st.one_of(st.none(), st.booleans(), st.text(), st.floats(), st.integers()))
def test_quality_score_never_yields_an_out_of_range_reward(value: object) -> None:
    try:
        reward, _ = read(QualityScoreAdapter(), {"score": value})
    except InvalidArgument as exc:
        assert exc.field == "payload.score"
    else:
        assert 0.0 <= reward <= 1.0


def test_reward_mapping_refuses_values_outside_the_unit_interval() -> None:
    with pytest.raises(InvalidArgument, match="reward"):
        RewardMapping(reward=1.5)
    with pytest.raises(InvalidArgument, match="confidence"):
        RewardMapping(reward=0.5, confidence=math.nan)
    assert RewardMapping(reward=1).confidence == 1.0


def test_builtin_adapters_cover_the_spec_table() -> None:
    assert [a.signal_type for a in builtin_adapters()] == [
        "thumbs",
        "rating",
        "task_success",
        "regeneration",
        "quality_score",
    ]
    assert repr(ThumbsAdapter()) == "ThumbsAdapter(signal_type='thumbs')"


def test_feedback_adapter_is_abstract() -> None:
    with pytest.raises(TypeError):
        FeedbackAdapter()  # type: ignore[abstract]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@given(
    st.sampled_from(builtin_adapters()),
    st.dictionaries(
        st.sampled_from(["value", "rating", "success", "regenerated", "score", "other"]),
        json_values,
        max_size=3,
    ),
)
def test_hostile_payloads_are_refused_or_mapped_into_range(
    adapter: FeedbackAdapter, payload: dict[str, Any]
) -> None:
    """Whatever a client sends, an adapter answers a valid mapping or InvalidArgument naming
    a payload field: never another exception, never a NaN."""
    try:
        reward, confidence = read(adapter, payload)
    except InvalidArgument as exc:
        assert exc.field.startswith("payload.")
    else:
        assert 0.0 <= reward <= 1.0 and 0.0 < confidence <= 1.0
