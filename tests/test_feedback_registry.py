"""feedback/registry.py: adapters by signal type, and running a custom one safely."""

from __future__ import annotations

import pytest

from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.feedback import (
    FeedbackAdapter,
    FeedbackEvent,
    RatingAdapter,
    RewardMapping,
    ThumbsAdapter,
)
from conduit_sidecar.feedback.registry import TRACK_KEY, AdapterRegistry


class _Named(FeedbackAdapter):
    def __init__(self, signal_type: object, result: object = None) -> None:
        self._signal_type = signal_type
        self._result = result

    @property
    def signal_type(self) -> str:
        return self._signal_type  # type: ignore[return-value]

    def to_reward(self, event: FeedbackEvent) -> RewardMapping:
        if isinstance(self._result, Exception):
            raise self._result
        return self._result  # type: ignore[return-value]


def test_registering_replaces_the_adapter_of_a_signal_type() -> None:
    registry = AdapterRegistry()
    registry.register(ThumbsAdapter())
    registry.register(RatingAdapter())
    replacement = _Named("thumbs", RewardMapping(0.5))
    registry.register(replacement)
    assert sorted(registry.as_dict()) == ["rating", "thumbs"]
    assert registry.adapter("thumbs") is replacement
    registry.as_dict().clear()  # a copy
    assert len(registry.as_dict()) == 2


@pytest.mark.parametrize(
    ("adapter", "field"),
    [
        ("thumbs", "adapter"),
        (_Named(""), "adapter.signal_type"),
        (_Named(7), "adapter.signal_type"),
        (_Named(TRACK_KEY), "adapter.signal_type"),
    ],
)
def test_unusable_adapters_are_refused_naming_the_field(adapter: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        AdapterRegistry().register(adapter)  # type: ignore[arg-type]
    assert info.value.field == field


def test_an_unregistered_signal_type_names_what_is_registered() -> None:
    registry = AdapterRegistry()
    registry.register(ThumbsAdapter())
    with pytest.raises(InvalidArgument, match="thumbs") as info:
        registry.adapter("rating")
    assert info.value.field == "signal_type"


@pytest.mark.parametrize(
    "result",
    [KeyError("missing"), ZeroDivisionError("ratio"), TypeError("x"), 0.5, None],
)
def test_whatever_a_custom_adapter_raises_or_returns_becomes_invalid_argument(
    result: object,
) -> None:
    event = FeedbackEvent("q1", "custom", {})
    with pytest.raises(InvalidArgument) as info:
        AdapterRegistry.read(_Named("custom", result), event)
    assert info.value.field == "payload"
    assert AdapterRegistry.read(_Named("custom", RewardMapping(0.3)), event).reward == 0.3
