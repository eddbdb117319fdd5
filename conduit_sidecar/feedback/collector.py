"""FeedbackCollector: feedback events in, net policy updates out.

Order of work in `record` (and `track`, `record_session_feedback`): validate the input and
run the adapter first, so a refused event changes nothing; then one atomic store operation
(duplicate check + accumulate + mark + log) that returns the query's accumulators before and
after; then the policy receives the net delta between the two observations. Consecutive
(before, after) pairs telescope, so concurrent calls leave the policy exactly where one
sequential process would (ARCHITECTURE "Observation bookkeeping").

Idempotency: without an explicit `idempotency_key`, an event is identified by its
`(query_id, signal_type)` - one reaction per signal type per query - so a second thumbs for
a query is a duplicate of the first even if its value differs. A duplicate returns the first
result with `duplicate=True`. Mark keys: `stores/keys.py`.

A write that failed with Unavailable may have taken effect anyway (a Redis script run after
the client's timeout, a PostgreSQL commit whose acknowledgement was lost). Its retry then
finds its mark; it applies the delta the policy never received (once) and answers
`duplicate=False`, as the call that made the signal count (`stores/in_doubt.py`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any

from conduit_sidecar.errors import InvalidArgument, NotFound, Unavailable
from conduit_sidecar.feedback.adapters import FeedbackAdapter, ThumbsAdapter
from conduit_sidecar.feedback.decisions import check_decision, refuse_another_pending
from conduit_sidecar.feedback.events import (
    FeedbackEvent,
    FeedbackResult,
    RewardMapping,
    SessionFeedback,
)
from conduit_sidecar.feedback.in_flight import InFlight
from conduit_sidecar.feedback.observation import (
    Contribution,
    observation,
    track_contribution,
)
from conduit_sidecar.feedback.registry import TRACK_KEY, AdapterRegistry
from conduit_sidecar.feedback.sink import ObservationSink, check_router
from conduit_sidecar.feedback.stores.base import Applied, FeedbackStore, Mark, check_ttl
from conduit_sidecar.feedback.stores.in_doubt import (
    Doubt,
    InDoubtWrites,
    attempt_id,
    settle_doubts,
)
from conduit_sidecar.feedback.stores.keys import event_key, session_keys
from conduit_sidecar.feedback.stores.memory import InMemoryFeedbackStore
from conduit_sidecar.query import RoutingDecision, check_id
from conduit_sidecar.reward import check_non_negative

logger = logging.getLogger(__name__)

# How often, at most, writes in doubt are looked up again (only while there are some).
DOUBT_CHECK_INTERVAL_S = 1.0

_Outcome = tuple[float | None, float | None]  # (cost_usd, latency_s) for the router's stats
_Done = tuple[Applied, tuple[float, float] | None]  # the store's answer, the observation after


def _check_ttl_arg(ttl_seconds: object) -> float:
    return check_ttl(ttl_seconds, "ttl_seconds")  # type: ignore[arg-type]


class FeedbackCollector:
    """Turns feedback signals into policy updates through a store.

    `store` defaults to an `InMemoryFeedbackStore`; pass a SQLite, Redis or PostgreSQL store
    to survive restarts. `ttl_seconds` (default: the store's, 1 hour) is how long a tracked
    query waits for feedback; `track` and `log_decision` can override it per call. Only
    `ThumbsAdapter` is registered by default, as the spec says; register the others with
    `register_adapter`.
    """

    def __init__(
        self,
        router: ObservationSink,
        store: FeedbackStore | None = None,
        *,
        ttl_seconds: float | None = None,
        adapters: Iterable[FeedbackAdapter] = (),
    ) -> None:
        self.router = check_router(router)
        dim = getattr(router, "feature_dim", None)  # a custom router may not say
        self._feature_dim: int | None = dim if type(dim) is int else None
        if store is not None and not isinstance(store, FeedbackStore):
            raise InvalidArgument("store", f"must be a FeedbackStore, got {store!r}")
        self.store: FeedbackStore = store if store is not None else InMemoryFeedbackStore()
        self.ttl_seconds = (
            self.store.ttl_seconds if ttl_seconds is None else _check_ttl_arg(ttl_seconds)
        )
        self._registry = AdapterRegistry()
        # Store operations whose caller was cancelled, kept alive until they finish, and
        # passes of resolve_in_doubt.
        self._in_flight = InFlight()
        # This process's writes that failed but may have taken effect (stores/in_doubt.py).
        self.in_doubt = InDoubtWrites()
        self._doubts_checked_at = -math.inf
        self.register_adapter(ThumbsAdapter())
        if isinstance(adapters, FeedbackAdapter) or not isinstance(adapters, Iterable):
            raise InvalidArgument("adapters", f"must be a list of adapters, got {adapters!r}")
        for adapter in adapters:
            self.register_adapter(adapter)

    # Adapters.

    @property
    def adapters(self) -> dict[str, FeedbackAdapter]:
        """Registered adapters by signal type (a copy: use `register_adapter` to change)."""
        return self._registry.as_dict()

    def register_adapter(self, adapter: FeedbackAdapter) -> None:
        """Register (or replace) the adapter for `adapter.signal_type`."""
        self._registry.register(adapter)

    # Policy bookkeeping.

    def _apply_policy(self, applied: Applied) -> tuple[float, float] | None:
        """Apply the net delta of one store operation; returns the observation after it."""
        decision = applied.decision
        new = observation(applied.after, decision.reward_weights)
        if applied.duplicate or new is None:
            return new
        old = observation(applied.before, decision.reward_weights)
        if old == new:
            return new
        try:
            self.router.apply_observation(
                decision.selected_model,
                decision.features,
                old,
                new,
                routed_at=decision.created_at,
            )
        except ValueError as exc:
            # The signal is stored either way; the usual cause is a model removed from the
            # catalogue since the decision (or removed and added again), whose arm no longer
            # exists to learn from it.
            logger.warning(
                "feedback for query %s recorded but not applied to the policy: %s",
                decision.query_id,
                exc,
            )
        return new

    async def _inseparably(self, work: Coroutine[Any, Any, _Done]) -> _Done:
        """Runs `work` (a store operation and then its policy update, `_apply`) so that the
        caller's cancellation cannot split the two (`in_flight.py`). The in-memory store's
        apply never suspends, so nothing can fall between the two there."""
        suspends = type(self.store) is not InMemoryFeedbackStore
        return await self._in_flight.inseparably(work, suspends=suspends)

    async def settle(self, timeout_s: float) -> int:
        """Waits up to `timeout_s` for store writes whose caller was cancelled (they go on in
        `_inseparably`) to reach the policy; returns how many are still running. Called
        before the last policy delta is published at shutdown."""
        return await self._in_flight.settle(timeout_s)

    async def _apply(
        self,
        query_id: str,
        key: str,
        contribution: Contribution,
        mark: Mark,
        events: Sequence[FeedbackEvent],
        *,
        create: RoutingDecision | None = None,
        ttl_s: float | None = None,
        outcome: _Outcome | None = None,
        aliases: Sequence[str] = (),
    ) -> _Done:
        """One store operation, then its policy update (run through `_inseparably`).

        The write carries a fresh attempt id in its mark. If it fails with Unavailable it
        may still take effect, so the id is remembered (`in_doubt`); a later duplicate
        whose mark carries it is that write, and its delta is applied then, once.
        """
        if self.store.failures_in_doubt:
            mark = Mark(mark.signal_type, mark.reward, mark.confidence, attempt=attempt_id())
        # Only when needed: a store written against the interface before `aliases` works.
        extra: dict[str, Any] = {"aliases": aliases} if aliases else {}
        try:
            applied = await self.store.apply(
                query_id, key, contribution, mark, events, create=create, ttl_s=ttl_s, **extra
            )
        except Unavailable:
            if mark.attempt is not None:
                self.in_doubt.add(mark.attempt, query_id, key, outcome)
            raise
        if self.in_doubt:
            if applied.duplicate:
                claimed = self.in_doubt.claim(applied.decision, applied.mark)
                if claimed is not None:
                    applied, doubt = claimed
                    outcome = doubt.outcome
            self._check_doubts_soon()
        self._count_outcome(applied, outcome)
        return applied, self._apply_policy(applied)

    # Writes in doubt.

    def _check_doubts_soon(self) -> None:
        """After a write that worked (the store answers again), settle writes in doubt in
        the background, at most once a second."""
        now = time.monotonic()
        if now - self._doubts_checked_at >= DOUBT_CHECK_INTERVAL_S:
            self._doubts_checked_at = now
            self._in_flight.background(self.resolve_in_doubt())

    async def resolve_in_doubt(self, batch: int = 64) -> int:
        """Looks up to `batch` of this process's writes in doubt up in the store and applies
        the delta of each that took effect (a retry that reached another replica answered a
        plain duplicate there); returns how many. Runs in the background after a write that
        works; details in `stores/in_doubt.py`."""
        return await settle_doubts(self.in_doubt, self.store, self._settle, batch)

    def _settle(self, applied: Applied, doubt: Doubt) -> None:
        self._count_outcome(applied, doubt.outcome)
        self._apply_policy(applied)

    def _count_outcome(self, applied: Applied, outcome: _Outcome | None) -> None:
        if outcome is None or applied.duplicate:
            return
        try:
            self.router.record_outcome(applied.decision.selected_model, *outcome)
        except ValueError as exc:  # model removed since the decision: stats only
            logger.warning("outcome of query %s not counted: %s", applied.decision.query_id, exc)

    @staticmethod
    def _result(query_id: str, applied: Applied, new: tuple[float, float] | None) -> FeedbackResult:
        mark = applied.mark
        if applied.duplicate and mark.after is not None:
            new = observation(mark.after, applied.decision.reward_weights)
        return FeedbackResult(
            query_id=query_id,
            signal_type=mark.signal_type,
            reward=mark.reward,
            confidence=mark.confidence,
            duplicate=applied.duplicate,
            applied_reward=None if new is None else new[0],
            applied_weight=None if new is None else new[1],
        )

    # Decisions and outcomes.

    async def log_decision(
        self, decision: RoutingDecision, ttl_seconds: float | None = None
    ) -> None:
        """Store a decision as pending without an outcome (the sidecar's Route does this)."""
        # Before the write: a bad field would fail below it.
        check_decision(decision, self._feature_dim)
        ttl = self.ttl_seconds if ttl_seconds is None else _check_ttl_arg(ttl_seconds)
        await self.store.log_decision(decision, ttl)
        if self.in_doubt:  # the store answers again: Routes settle doubts too
            self._check_doubts_soon()

    async def track(
        self,
        decision: RoutingDecision | str,
        cost: float | None = None,
        latency: float | None = None,
        *,
        error: bool = False,
        retries: int = 0,
        ttl_seconds: float | None = None,
    ) -> None:
        """Record a query's outcome and keep it pending for feedback.

        `decision` is a RoutingDecision, or the query_id of one already logged. `cost` is in
        USD and `latency` in seconds; both enter the reward through the cost and latency
        scores. `error=True` is a strong negative quality signal (confidence 0.8), `retries`
        > 0 a weak one (0.5). The pending entry's TTL restarts (default: the collector's).
        Track counts once per query: a repeated Track changes nothing. A Track arriving after
        feedback re-applies the query's observation with the outcome folded in.
        """
        if isinstance(decision, RoutingDecision):
            query_id, create = check_decision(decision, self._feature_dim).query_id, decision
        elif isinstance(decision, str):
            query_id, create = check_id("query_id", decision), None
        else:
            raise InvalidArgument(
                "decision", f"must be a RoutingDecision or a query_id, got {decision!r}"
            )
        cost_usd = None if cost is None else check_non_negative("cost_usd", cost)
        latency_s = None if latency is None else check_non_negative("latency_s", latency)
        if not isinstance(error, bool):
            raise InvalidArgument("error", f"must be true or false, got {error!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgument("retries", f"must be an integer >= 0, got {retries!r}")
        ttl = self.ttl_seconds if ttl_seconds is None else _check_ttl_arg(ttl_seconds)

        if create is not None:
            await refuse_another_pending(self.store, create)
        contribution = track_contribution(error, retries, cost_usd, latency_s)
        events = []
        if error:
            events.append(FeedbackEvent(query_id, "error", {"error": True}))
        if retries > 0:
            events.append(FeedbackEvent(query_id, "retries", {"retries": retries}))
        implicit = contribution.quality_den > 0
        mark = Mark(TRACK_KEY, 0.0 if implicit else 1.0, contribution.weight)
        outcome = None if cost_usd is None and latency_s is None else (cost_usd, latency_s)
        await self._inseparably(
            self._apply(
                query_id,
                TRACK_KEY,
                contribution,
                mark,
                events,
                create=create,
                ttl_s=ttl,
                outcome=outcome,
            )
        )

    # Feedback.

    async def record(self, event: FeedbackEvent) -> FeedbackResult:
        """Record one feedback event for a tracked query and update the policy.

        Raises ValueError (InvalidArgument) naming the field for a malformed event or an
        unregistered signal type, and ValueError (NotFound) naming the query id for an
        unknown or expired query; in every error case nothing is changed.
        """
        if not isinstance(event, FeedbackEvent):
            raise InvalidArgument("event", f"must be a FeedbackEvent, got {event!r}")
        event.validate()
        mapping = self._registry.read(self._registry.adapter(event.signal_type), event)
        key = event_key(event)
        contribution = Contribution.signals([(mapping.reward, mapping.confidence)])
        mark = Mark(event.signal_type, mapping.reward, mapping.confidence)
        applied, new = await self._inseparably(
            self._apply(event.query_id, key, contribution, mark, [event])
        )
        return self._result(event.query_id, applied, new)

    async def record_session_feedback(self, feedback: SessionFeedback) -> list[FeedbackResult]:
        """Apply one signal to every still-pending query of a session.

        Each query gets the adapter's reward with confidence * `propagation_weight`, once:
        repeating the call (same session, signal type and idempotency key) changes nothing.
        Raises NotFound if the session has no pending query.
        """
        if not isinstance(feedback, SessionFeedback):
            raise InvalidArgument("feedback", f"must be a SessionFeedback, got {feedback!r}")
        feedback.validate()
        adapter = self._registry.adapter(feedback.signal_type)
        query_ids = await self.store.session_query_ids(feedback.session_id)
        if not query_ids:
            raise NotFound(f"No pending queries for session_id {feedback.session_id!r}")
        # Read every event before applying any, so a refused payload changes nothing.
        planned: list[tuple[FeedbackEvent, RewardMapping]] = []
        for query_id in query_ids:
            event = FeedbackEvent(
                query_id,
                feedback.signal_type,
                dict(feedback.payload),
                idempotency_key=feedback.idempotency_key,
            )
            planned.append((event, self._registry.read(adapter, event)))
        key, legacy_key = session_keys(feedback)
        results = []
        for event, mapping in planned:
            confidence = mapping.confidence * feedback.propagation_weight
            contribution = Contribution.signals([(mapping.reward, confidence)])
            mark = Mark(event.signal_type, mapping.reward, confidence)
            try:
                applied, new = await self._inseparably(
                    self._apply(
                        event.query_id, key, contribution, mark, [event], aliases=(legacy_key,)
                    )
                )
            except NotFound:
                continue  # expired between the lookup and now: no longer pending
            results.append(self._result(event.query_id, applied, new))
        return results

    # Monitoring.

    async def get_pending_count(self) -> int:
        """Queries still waiting for feedback (expired ones excluded)."""
        return await self.store.pending_count()

    async def get_recent_feedback(self, limit: int = 100) -> list[FeedbackEvent]:
        """The newest recorded events (explicit and implicit), newest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidArgument("limit", f"must be an integer >= 0, got {limit!r}")
        return await self.store.recent_events(limit)

    async def feedback_counts(self) -> dict[str, int]:
        """Recorded events by signal type (duplicates excluded), for GetStats."""
        return await self.store.signal_counts()
