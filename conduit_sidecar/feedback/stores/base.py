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

import functools
import json
import math
import struct
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conduit_sidecar.errors import InvalidArgument, NotFound
from conduit_sidecar.feedback.events import FeedbackEvent
from conduit_sidecar.feedback.observation import Accumulators, Contribution
from conduit_sidecar.frozen import fast_frozen
from conduit_sidecar.query import RoutingDecision
from conduit_sidecar.reward import RewardWeights

DEFAULT_TTL_SECONDS = 3600.0
DEFAULT_HISTORY_LIMIT = 10_000
# The longest TTL a store accepts (ten years): beyond it Redis cannot expire the key.
MAX_TTL_SECONDS = 10 * 365 * 86400.0


@fast_frozen
@dataclass(frozen=True)
class Mark:
    """The first result recorded under an idempotency key, returned to its duplicates.

    `attempt` is the id of the collector call that wrote it and `before` the accumulators
    that write replaced: a write whose answer was lost (a timeout, after which the store
    carried it out anyway) is re-derived from them by its retry, which applies the
    before -> after delta the policy never received. Marks stored by earlier versions have
    neither (None).
    """

    signal_type: str
    reward: float
    confidence: float
    after: Accumulators | None = None
    before: Accumulators | None = None
    attempt: str | None = None


@fast_frozen
@dataclass(frozen=True)
class PendingQuery:
    """A logged decision that can still receive feedback."""

    decision: RoutingDecision
    accumulators: Accumulators
    expires_at: float


@fast_frozen
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


def check_ttl(ttl_s: float, field: str = "ttl_seconds") -> float:
    """`ttl_s` as a float in (0, MAX_TTL_SECONDS]; InvalidArgument naming `field` otherwise.

    Every store checks its TTLs here, so Python API callers get the same bound as the gRPC
    edge: Redis refuses (or silently mangles) an expiry that far out and PostgreSQL's
    expiry arithmetic overflows, and the decision would then go unlogged.
    """
    if type(ttl_s) is float and 0.0 < ttl_s <= MAX_TTL_SECONDS:  # every call on the hot paths
        return ttl_s
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
        raise InvalidArgument(field, f"must be a number of seconds, got {ttl_s!r}")
    if not math.isfinite(ttl_s) or ttl_s <= 0:
        raise InvalidArgument(field, f"must be finite and > 0, got {ttl_s!r}")
    if ttl_s > MAX_TTL_SECONDS:
        raise InvalidArgument(
            field, f"must be at most {MAX_TTL_SECONDS:.0f} (ten years), got {ttl_s!r}"
        )
    return float(ttl_s)


def check_history_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"history_limit must be an integer >= 1, got {limit!r}")
    return limit


class FeedbackStore(ABC):
    """Async storage for pending queries, idempotency marks, sessions and the feedback log."""

    ttl_seconds: float = DEFAULT_TTL_SECONDS
    # Whether a write that raised Unavailable may still have taken effect (a Redis script
    # run after the client's timeout, a commit whose acknowledgement was lost). The
    # collector then tracks it as in doubt (stores/in_doubt.py). The in-memory store cannot
    # fail half-way, and SQLite's group commit stores nothing of a batch that failed.
    failures_in_doubt: bool = True

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
        aliases: Sequence[str] = (),
    ) -> Applied:
        """Atomically: if `key` (or one of `aliases`, keys an earlier version wrote for the
        same signal) is already marked for the query, return that first mark as a
        duplicate; otherwise add `contribution` to the accumulators, remember `mark` (with
        the accumulators after) under `key`, append `events` to the log and count them.

        With `create`, a query that is not pending is first stored from that decision;
        without it, a missing or expired query raises NotFound naming its id. With `ttl_s`
        the entry's expiry is reset to now + ttl_s (only when not a duplicate).
        """

    async def read_mark(self, query_id: str, key: str) -> Mark | None:
        """The mark stored under `key` for a pending query, or None.

        Used to settle writes in doubt (`stores/in_doubt.py`). Every bundled backend reads
        it; this default (for a store written before the method existed) answers None, so
        such a store's writes in doubt are settled only by a retry in the same process.
        """
        return None

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


# A decision is written on every Route and read on every Track and feedback, and most of it
# is numbers: 64+ features and a score per model. Formatting a float as JSON text (shortest
# round-trip repr) costs about 0.5 us and parsing it back more, so the numbers travel as one
# hex block of little-endian float64 (exact, and +inf scores survive) next to a JSON object
# of the strings, written by hand: about 58 -> 9 us to write and 47 -> 19 us to read
# (`benches/micro_python.py`). Records written as plain `to_dict` JSON (format 1) are
# still read.
_DECISION_FORMAT = 2
_HEAD = 6  # confidence, propensity, created_at, three reward weights
# json.dumps with options builds a new encoder on every call (a few microseconds).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_escape = json.encoder.encode_basestring_ascii  # a JSON string literal, quotes included


def decision_to_json(decision: RoutingDecision) -> str:
    scores = decision.scores
    weights = decision.reward_weights
    numbers = struct.pack(
        f"<{_HEAD + len(scores) + len(decision.features)}d",
        decision.confidence,
        decision.propensity,
        decision.created_at,
        weights.quality,
        weights.cost,
        weights.latency,
        *scores.values(),
        *decision.features,
    )
    # Written by hand: the generic encoder costs ~8 us for these few strings (most of a
    # Route's store work), and the model list is the same for nearly every decision.
    models = tuple(scores)
    models_json = _models_json(models)
    metadata = decision.metadata
    return "".join(
        (
            f'{{"v":{_DECISION_FORMAT},"query_id":',
            _json(decision.query_id),
            ',"selected_model":',
            _json(decision.selected_model),
            ',"models":',
            models_json,
            f',"n_features":{len(decision.features)},"reasoning":',
            _json(decision.reasoning),
            ',"policy_version":',
            _json(decision.policy_version),
            ',"session_id":',
            _json(decision.session_id),
            ',"user_id":',
            _json(decision.user_id),
            ',"metadata":',
            _ENCODER.encode(metadata) if metadata else "{}",
            # Hex never needs escaping, and codes and decodes several times faster than
            # base64 (the record is about a third larger).
            ',"f64":"',
            numbers.hex(),
            '"}',
        )
    )


@functools.lru_cache(maxsize=256)
def _models_json(models: tuple[str, ...]) -> str:
    return _ENCODER.encode(list(models))


def _json(value: object) -> str:
    if type(value) is str:
        return _escape(value)
    if value is None:
        return "null"
    return _ENCODER.encode(value)


# Validating RewardWeights costs more than the rest of a decode, and nearly every decision
# carries one of a few weight triples (the presets): decoded ones are shared (they are frozen).
@functools.lru_cache(maxsize=256)
def _weights(quality: float, cost: float, latency: float) -> RewardWeights:
    return RewardWeights(quality, cost, latency)


def decision_from_json(text: str | bytes) -> RoutingDecision:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise InvalidArgument("decision", "malformed decision record: not an object")
    if data.get("v") != _DECISION_FORMAT:
        return RoutingDecision.from_dict(data)
    try:
        models = [str(m) for m in data["models"]]
        raw = bytes.fromhex(data["f64"])
        count = _HEAD + len(models) + int(data["n_features"])
        if len(raw) != 8 * count:
            raise ValueError(f"{len(raw)} bytes of numbers where {8 * count} were expected")
        numbers = struct.unpack(f"<{count}d", raw)
        confidence, propensity, created_at, quality, cost, latency = numbers[:_HEAD]
        end = _HEAD + len(models)
        return RoutingDecision(
            query_id=str(data["query_id"]),
            selected_model=str(data["selected_model"]),
            confidence=confidence,
            features=list(numbers[end:]),
            scores=dict(zip(models, numbers[_HEAD:end], strict=True)),
            propensity=propensity,
            reasoning=str(data["reasoning"]),
            policy_version=int(data["policy_version"]),
            reward_weights=_weights(quality, cost, latency),
            session_id=data.get("session_id"),
            user_id=data.get("user_id"),
            metadata=dict(data.get("metadata") or {}),
            created_at=created_at,
        )
    except KeyError as exc:
        raise InvalidArgument("decision", f"missing key {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise InvalidArgument("decision", f"malformed decision record: {exc}") from None


def event_to_json(event: FeedbackEvent) -> str:
    return _ENCODER.encode(event.to_dict())


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
    if mark.before is not None:
        data["before"] = accumulators_to_dict(mark.before)
    if mark.attempt is not None:
        data["attempt"] = mark.attempt
    return _ENCODER.encode(data)


def mark_from_json(text: str | bytes) -> Mark:
    """Reads a mark of any version (those before `before`/`attempt` lack them: None)."""
    data = json.loads(text)
    after = data.get("after")
    before = data.get("before")
    attempt = data.get("attempt")
    return Mark(
        signal_type=str(data["signal_type"]),
        reward=float(data["reward"]),
        confidence=float(data["confidence"]),
        after=accumulators_from_dict(after) if after is not None else None,
        before=accumulators_from_dict(before) if before is not None else None,
        attempt=str(attempt) if attempt else None,
    )


def recorded(mark: Mark, before: Accumulators, after: Accumulators) -> Mark:
    """The mark a store keeps for a write: the caller's, with the accumulators around it."""
    return Mark(mark.signal_type, mark.reward, mark.confidence, after, before, mark.attempt)
