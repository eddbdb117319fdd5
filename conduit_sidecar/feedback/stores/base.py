"""The one async store interface every backend implements, and its record types.

DESIGN section 5: "is this a duplicate", "apply it" and "mark it" are one atomic operation in
every backend (`apply`), so there are no check-then-act races and a failed call leaves nothing
half done. A store only keeps data; the collector owns adapters, reward composition and the
policy update.

Semantics shared by all backends (the contract suite in tests/test_stores.py checks them):
- A pending query lives until `expires_at`; after that it is gone as if never logged (its
  marks and session membership go with it).
- Idempotency marks are scoped to one query and remember the first result under their key.
- The feedback log keeps the newest `history_limit` events; `signal_counts` are totals.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conduit_sidecar.errors import NotFound
from conduit_sidecar.feedback.events import FeedbackEvent
from conduit_sidecar.feedback.observation import Accumulators, Contribution
from conduit_sidecar.query import RoutingDecision

DEFAULT_TTL_SECONDS = 3600.0
DEFAULT_HISTORY_LIMIT = 10_000


@dataclass(frozen=True)
class Mark:
    """The first result recorded under an idempotency key, returned to its duplicates."""

    signal_type: str
    reward: float
    confidence: float
    after: Accumulators | None = None


@dataclass(frozen=True)
class PendingQuery:
    """A logged decision that can still receive feedback."""

    decision: RoutingDecision
    accumulators: Accumulators
    expires_at: float


@dataclass(frozen=True)
class Applied:
    """What one atomic `apply` did: the accumulators before and after it.

    For a duplicate, nothing changed (`before == after`) and `mark` is the first result.
    """

    decision: RoutingDecision
    before: Accumulators
    after: Accumulators
    duplicate: bool
    mark: Mark


def not_found(query_id: str) -> NotFound:
    return NotFound(
        f"Unknown query_id {query_id!r}: it was never tracked or its pending entry expired",
        query_id,
    )


def check_ttl(ttl_s: float) -> float:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
        raise TypeError(f"ttl_seconds must be a number, got {ttl_s!r}")
    if not math.isfinite(ttl_s) or ttl_s <= 0:
        raise ValueError(f"ttl_seconds must be finite and > 0, got {ttl_s!r}")
    return float(ttl_s)


def check_history_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"history_limit must be an integer >= 1, got {limit!r}")
    return limit


class FeedbackStore(ABC):
    """Async storage for pending queries, idempotency marks, sessions and the feedback log."""

    ttl_seconds: float = DEFAULT_TTL_SECONDS

    async def initialize(self) -> None:  # noqa: B027 - optional hook, most backends need none
        """Create tables or scripts if the backend needs them; idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the store is unusable afterwards."""

    @abstractmethod
    async def log_decision(self, decision: RoutingDecision, ttl_s: float) -> bool:
        """Store a decision as pending with no signal yet, unless it is already pending.

        Returns True if it was stored, False if a live entry already existed (left as is).
        """

    @abstractmethod
    async def apply(
        self,
        query_id: str,
        key: str,
        contribution: Contribution,
        mark: Mark,
        events: Sequence[FeedbackEvent] = (),
        *,
        create: RoutingDecision | None = None,
        ttl_s: float | None = None,
    ) -> Applied:
        """Atomically: if `key` is already marked for the query, return the first mark as a
        duplicate; otherwise add `contribution` to the accumulators, remember `mark` (with
        the accumulators after) under `key`, append `events` to the log and count them.

        With `create`, a query that is not pending is first stored from that decision;
        without it, a missing or expired query raises NotFound naming its id. With `ttl_s`
        the entry's expiry is reset to now + ttl_s (only when not a duplicate).
        """

    @abstractmethod
    async def get(self, query_id: str) -> PendingQuery | None:
        """The pending query, or None if unknown or expired."""

    @abstractmethod
    async def session_query_ids(self, session_id: str) -> list[str]:
        """Ids of the session's still-pending queries, oldest first (an index, not a scan)."""

    @abstractmethod
    async def pending_count(self) -> int:
        """Number of queries still pending (expired ones excluded)."""

    @abstractmethod
    async def recent_events(self, limit: int) -> list[FeedbackEvent]:
        """The newest `limit` logged events, newest first."""

    @abstractmethod
    async def signal_counts(self) -> dict[str, int]:
        """How many events of each signal type were ever recorded (duplicates excluded)."""


# Serialisation shared by the backends that store text.


def decision_to_json(decision: RoutingDecision) -> str:
    return json.dumps(decision.to_dict(), separators=(",", ":"), allow_nan=False)


def decision_from_json(text: str | bytes) -> RoutingDecision:
    return RoutingDecision.from_dict(json.loads(text))


def event_to_json(event: FeedbackEvent) -> str:
    return json.dumps(event.to_dict(), separators=(",", ":"), allow_nan=False)


def event_from_json(text: str | bytes) -> FeedbackEvent:
    return FeedbackEvent.from_dict(json.loads(text))


def _opt(value: Any) -> float | None:
    if value is None or value is False or value == "":
        return None
    return float(value)


def accumulators_to_dict(acc: Accumulators) -> dict[str, float | None]:
    return {
        "num": acc.quality_num,
        "den": acc.quality_den,
        "weight": acc.weight,
        "cost": acc.cost_usd,
        "lat": acc.latency_s,
    }


def accumulators_from_dict(data: Mapping[str, Any]) -> Accumulators:
    return Accumulators(
        quality_num=float(data["num"]),
        quality_den=float(data["den"]),
        weight=float(data["weight"]),
        cost_usd=_opt(data.get("cost")),
        latency_s=_opt(data.get("lat")),
    )


def mark_to_json(mark: Mark) -> str:
    data: dict[str, Any] = {
        "signal_type": mark.signal_type,
        "reward": mark.reward,
        "confidence": mark.confidence,
    }
    if mark.after is not None:
        data["after"] = accumulators_to_dict(mark.after)
    return json.dumps(data, separators=(",", ":"))


def mark_from_json(text: str | bytes) -> Mark:
    data = json.loads(text)
    after = data.get("after")
    return Mark(
        signal_type=str(data["signal_type"]),
        reward=float(data["reward"]),
        confidence=float(data["confidence"]),
        after=accumulators_from_dict(after) if after is not None else None,
    )
