"""What the collector needs from a router: the two methods it calls (ARCHITECTURE, Layer 2).

Checked when the collector is made, not when it first calls them: by then each Track and
signal has been written to the store, and its retry is a duplicate, so the learning would be
lost for good.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from conduit_sidecar.errors import InvalidArgument


class ObservationSink(Protocol):
    """What the collector needs from a Router (ARCHITECTURE, Layer 2)."""

    def apply_observation(
        self,
        model_id: str,
        features: Sequence[float],
        old: tuple[float, float] | None,
        new: tuple[float, float],
        *,
        routed_at: float | None = None,
    ) -> None: ...

    def record_outcome(
        self, model_id: str, cost_usd: float | None, latency_s: float | None
    ) -> None: ...


def check_router(router: object) -> ObservationSink:
    """`router`, or InvalidArgument naming it when it lacks a method the collector calls.
    Duck-typed: a custom router needs only those two methods, no Router base."""
    missing = [
        name
        for name in ("apply_observation", "record_outcome")
        if not callable(getattr(router, name, None))
    ]
    if isinstance(router, type):  # the class has the methods, unbound: Router, not Router()
        raise InvalidArgument("router", f"must be an instance, got the class {router!r}")
    if missing:
        raise InvalidArgument(
            "router",
            f"must be a Router (or have {' and '.join(missing)}), got {router!r}",
        )
    return router  # type: ignore[return-value]
