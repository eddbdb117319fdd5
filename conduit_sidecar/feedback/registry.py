"""The collector's adapters by signal type: registration, lookup, and running one safely.

Running an adapter is where caller code meets the collector: a custom adapter may raise
anything or return anything, and whatever it does must become InvalidArgument naming the
payload before anything is written.
"""

from __future__ import annotations

from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.feedback.adapters import FeedbackAdapter
from conduit_sidecar.feedback.events import FeedbackEvent, RewardMapping

TRACK_KEY = "track"  # Track's mark key: no adapter may take this signal type


class AdapterRegistry:
    """One adapter per signal type; registering another for a type replaces it."""

    def __init__(self) -> None:
        self._adapters: dict[str, FeedbackAdapter] = {}

    def as_dict(self) -> dict[str, FeedbackAdapter]:
        """The adapters by signal type (a copy)."""
        return dict(self._adapters)

    def register(self, adapter: FeedbackAdapter) -> None:
        """Register (or replace) the adapter for `adapter.signal_type`."""
        if not isinstance(adapter, FeedbackAdapter):
            raise InvalidArgument("adapter", f"must be a FeedbackAdapter, got {adapter!r}")
        signal_type = adapter.signal_type
        if not isinstance(signal_type, str) or not signal_type.strip():
            raise InvalidArgument("adapter.signal_type", f"must be a non-empty string: {adapter!r}")
        if signal_type == TRACK_KEY:
            raise InvalidArgument("adapter.signal_type", f"{TRACK_KEY!r} is reserved for Track")
        self._adapters[signal_type] = adapter

    def adapter(self, signal_type: str) -> FeedbackAdapter:
        """The adapter for `signal_type`, else InvalidArgument naming signal_type."""
        adapter = self._adapters.get(signal_type)
        if adapter is None:
            raise InvalidArgument(
                "signal_type",
                f"no adapter registered for {signal_type!r}; registered: {sorted(self._adapters)}",
            )
        return adapter

    @staticmethod
    def read(adapter: FeedbackAdapter, event: FeedbackEvent) -> RewardMapping:
        """Run an adapter; whatever a custom one raises or returns becomes InvalidArgument."""
        try:
            mapping = adapter.to_reward(event)
        except InvalidArgument:
            raise
        except (LookupError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            raise InvalidArgument(
                "payload", f"adapter for {event.signal_type!r} refused it: {exc!r}"
            ) from None
        if not isinstance(mapping, RewardMapping):
            raise InvalidArgument(
                "payload",
                f"adapter for {event.signal_type!r} returned {mapping!r}, not a RewardMapping",
            )
        return mapping
