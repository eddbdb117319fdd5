"""The feedback value objects: what a client sends and what the collector answers.

`FeedbackEvent` and `SessionFeedback` are inputs, `RewardMapping` is what an adapter makes of
an event, `FeedbackResult` is what `FeedbackCollector.record` returns. Each input validates
the shape (ids, payload type) in `validate()`, which the collector calls first, so a malformed
event is refused with a `ValueError` naming the field before anything touches a store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conduit_sidecar.errors import InvalidArgument
from conduit_sidecar.frozen import fast_frozen
from conduit_sidecar.query import check_id, check_json_object
from conduit_sidecar.reward import as_number, check_unit


def check_payload(value: object) -> dict[str, Any]:
    """A JSON object with finite numbers: it is stored verbatim in every backend."""
    return check_json_object("payload", value)


@dataclass
class FeedbackEvent:
    """One feedback signal for one routed query.

    Without `idempotency_key` the event is identified by `(query_id, signal_type)`: one user
    reaction per signal type and query, so a second thumbs for the same query is a duplicate
    of the first, whatever its value. An explicit key replaces that default.
    """

    query_id: str
    signal_type: str
    payload: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    timestamp: float = field(default_factory=time.time)

    def validate(self) -> None:
        """Refuse a malformed event with InvalidArgument naming the field.

        Called by the collector rather than at construction, so code that builds an event
        from a request and records it inside one `try ... except ValueError` sees every
        refusal there (the spec's FastAPI example does exactly that).
        """
        check_id("query_id", self.query_id)
        check_id("signal_type", self.signal_type)
        self.payload = check_payload(self.payload)
        if self.idempotency_key is not None:
            check_id("idempotency_key", self.idempotency_key)
        ts = as_number("timestamp", self.timestamp)
        if not math.isfinite(ts):
            raise InvalidArgument("timestamp", f"must be finite, got {self.timestamp!r}")
        self.timestamp = ts

    def to_dict(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id,
            "signal_type": self.signal_type,
            "payload": self.payload,
            "idempotency_key": self.idempotency_key,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeedbackEvent:
        return cls(
            query_id=data["query_id"],
            signal_type=data["signal_type"],
            payload=data.get("payload") or {},
            idempotency_key=data.get("idempotency_key"),
            timestamp=data.get("timestamp", 0.0),
        )


@fast_frozen
@dataclass(frozen=True)
class RewardMapping:
    """An adapter's reading of one event: a reward in [0, 1] and how much to trust it.

    Confidence is the observation weight (DESIGN section 2): 1.0 for an explicit user action,
    0.8 for a strong implicit signal, 0.5 for a weak one; 0 records the signal without
    letting it move the policy.
    """

    reward: float
    confidence: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "reward", check_unit("reward", self.reward))
        object.__setattr__(self, "confidence", check_unit("confidence", self.confidence))


@fast_frozen
@dataclass(frozen=True)
class FeedbackResult:
    """What `record` did with one event.

    `reward` and `confidence` are the adapter's reading of this event; `applied_reward` and
    `applied_weight` are the query's whole observation afterwards (the blend of every signal
    it has received, composed with cost and latency), or None while it has no weight.
    A duplicate returns the first result with `duplicate=True` and changes nothing.
    """

    query_id: str
    signal_type: str
    reward: float
    confidence: float
    duplicate: bool = False
    applied_reward: float | None = None
    applied_weight: float | None = None


@dataclass
class SessionFeedback:
    """One signal about a whole conversation, spread over its still-pending queries.

    Each query receives the signal with its confidence multiplied by `propagation_weight`
    (default 0.5: a session verdict counts half as much as feedback on the query itself).
    """

    session_id: str
    signal_type: str
    payload: dict[str, Any] = field(default_factory=dict)
    propagation_weight: float = 0.5
    idempotency_key: str | None = None

    def validate(self) -> None:
        """Refuse a malformed session signal with InvalidArgument naming the field."""
        check_id("session_id", self.session_id)
        check_id("signal_type", self.signal_type)
        self.payload = check_payload(self.payload)
        self.propagation_weight = check_unit("propagation_weight", self.propagation_weight)
        if self.idempotency_key is not None:
            check_id("idempotency_key", self.idempotency_key)
