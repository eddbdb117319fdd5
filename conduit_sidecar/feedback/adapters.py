"""Adapters: one per signal type, turning an event's payload into a `RewardMapping`.

The five built-ins follow the spec's table (rewards) and its "Confidence Weighting" section:
explicit user actions (thumbs, rating, task success) carry confidence 1.0; a task failure and
a regeneration are strong implicit signals, 0.8; a quality score comes from the caller's own
evaluator and is trusted fully, 1.0. A malformed payload raises `InvalidArgument` naming the
field (for example `payload.rating`), never a KeyError or a NaN reward.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.feedback.events import FeedbackEvent, RewardMapping
from conduit_sidecar.reward import as_number

EXPLICIT_CONFIDENCE = 1.0
STRONG_IMPLICIT_CONFIDENCE = 0.8
WEAK_IMPLICIT_CONFIDENCE = 0.5


class FeedbackAdapter(ABC):
    """Maps events of one `signal_type` to rewards. Subclass it for custom signals."""

    @property
    @abstractmethod
    def signal_type(self) -> str:
        """The signal type this adapter handles, e.g. "thumbs"."""

    @abstractmethod
    def to_reward(self, event: FeedbackEvent) -> RewardMapping:
        """Read the event's payload; raise ValueError naming the field if it is malformed."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(signal_type={self.signal_type!r})"


def _field(event: FeedbackEvent, key: str) -> Any:
    if key not in event.payload:
        raise InvalidArgument(f"payload.{key}", f"required for signal type {event.signal_type!r}")
    return event.payload[key]


def _bool_field(event: FeedbackEvent, key: str) -> bool:
    value = _field(event, key)
    if not isinstance(value, bool):
        raise InvalidArgument(f"payload.{key}", f"must be true or false, got {value!r}")
    return value


def _number_field(event: FeedbackEvent, key: str, low: float, high: float) -> float:
    value = _field(event, key)
    number = as_number(f"payload.{key}", value)  # also refuses an int beyond float range
    if not math.isfinite(number) or not low <= number <= high:
        raise InvalidArgument(f"payload.{key}", f"must be in [{low:g}, {high:g}], got {value!r}")
    return number


class ThumbsAdapter(FeedbackAdapter):
    """`{"value": "up" | "down"}` -> 1.0 / 0.0, confidence 1.0 (registered by default)."""

    @property
    def signal_type(self) -> str:
        return "thumbs"

    def to_reward(self, event: FeedbackEvent) -> RewardMapping:
        value = _field(event, "value")
        normalised = value.strip().lower() if isinstance(value, str) else None
        if normalised == "up":
            return RewardMapping(reward=1.0, confidence=EXPLICIT_CONFIDENCE)
        if normalised == "down":
            return RewardMapping(reward=0.0, confidence=EXPLICIT_CONFIDENCE)
        raise InvalidArgument("payload.value", f'must be "up" or "down", got {value!r}')


class RatingAdapter(FeedbackAdapter):
    """`{"rating": 1-5}` -> (rating - 1) / 4, so 1 -> 0.0, 3 -> 0.5, 5 -> 1.0; confidence 1.0.

    Fractional ratings (4.5) are accepted; anything outside [1, 5] is refused.
    """

    @property
    def signal_type(self) -> str:
        return "rating"

    def to_reward(self, event: FeedbackEvent) -> RewardMapping:
        rating = _number_field(event, "rating", 1.0, 5.0)
        return RewardMapping(reward=(rating - 1.0) / 4.0, confidence=EXPLICIT_CONFIDENCE)


class TaskSuccessAdapter(FeedbackAdapter):
    """`{"success": bool}` -> 1.0 with confidence 1.0, or 0.0 with confidence 0.8.

    A reported success is an explicit outcome; a failure may come from causes other than the
    model's answer, so the spec ranks it a strong implicit signal (0.8).
    """

    @property
    def signal_type(self) -> str:
        return "task_success"

    def to_reward(self, event: FeedbackEvent) -> RewardMapping:
        if _bool_field(event, "success"):
            return RewardMapping(reward=1.0, confidence=EXPLICIT_CONFIDENCE)
        return RewardMapping(reward=0.0, confidence=STRONG_IMPLICIT_CONFIDENCE)


class RegenerationAdapter(FeedbackAdapter):
    """`{"regenerated": bool}` -> 0.0 if the user asked for another answer, else 1.0;
    confidence 0.8 (a strong implicit signal)."""

    @property
    def signal_type(self) -> str:
        return "regeneration"

    def to_reward(self, event: FeedbackEvent) -> RewardMapping:
        regenerated = _bool_field(event, "regenerated")
        return RewardMapping(
            reward=0.0 if regenerated else 1.0, confidence=STRONG_IMPLICIT_CONFIDENCE
        )


class QualityScoreAdapter(FeedbackAdapter):
    """`{"score": 0.0-1.0}` -> the score itself, confidence 1.0 (the caller's evaluator)."""

    @property
    def signal_type(self) -> str:
        return "quality_score"

    def to_reward(self, event: FeedbackEvent) -> RewardMapping:
        score = _number_field(event, "score", 0.0, 1.0)
        return RewardMapping(reward=score, confidence=EXPLICIT_CONFIDENCE)


def builtin_adapters() -> list[FeedbackAdapter]:
    """One instance of each built-in adapter (the sidecar registers all five)."""
    return [
        ThumbsAdapter(),
        RatingAdapter(),
        TaskSuccessAdapter(),
        RegenerationAdapter(),
        QualityScoreAdapter(),
    ]
