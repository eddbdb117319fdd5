"""In-process store for tests and development: bounded, with TTL, nothing survives a restart.

Every operation runs under one lock without awaiting, so each is atomic with respect to other
coroutines and threads. The size bound evicts the oldest-created pending query first.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence

from conduit_sidecar.feedback.events import FeedbackEvent
from conduit_sidecar.feedback.observation import Accumulators, Contribution, accumulate
from conduit_sidecar.feedback.stores.base import (
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_TTL_SECONDS,
    MAX_TTL_SECONDS,
    Applied,
    FeedbackStore,
    Mark,
    PendingQuery,
    check_history_limit,
    check_ttl,
    not_found,
    recorded,
)
from conduit_sidecar.query import RoutingDecision

# Accumulators are frozen (an update replaces them), so every new entry can share this one:
# building a frozen dataclass per logged decision costs about a microsecond on each Route.
_NO_OBSERVATION = Accumulators()

# Stale expiry items tolerated beyond twice the live entries before the heap is rebuilt.
_EXPIRY_SLACK = 256


class _Entry:
    # A plain slotted class without __init__: one is built per Route, filled in `_insert`
    # (a Python __init__ doubles its cost). `marks` stays None until the first signal,
    # which most pending queries never get: no empty dict kept per pending query.
    __slots__ = ("acc", "decision", "expires_at", "marks")

    decision: RoutingDecision
    expires_at: float
    acc: Accumulators
    marks: dict[str, Mark] | None


class InMemoryFeedbackStore(FeedbackStore):
    """Pending queries in a dict, at most `max_pending` of them (oldest evicted first)."""

    failures_in_doubt = False  # see FeedbackStore

    def __init__(
        self,
        max_pending: int = 100_000,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
    ) -> None:
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be an integer >= 1, got {max_pending!r}")
        self.max_pending = max_pending
        self.ttl_seconds = check_ttl(ttl_seconds)
        self._lock = threading.Lock()
        # Insertion order is creation order, which is the eviction order.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._sessions: dict[str, dict[str, None]] = {}
        # (expires_at, query_id); stale after a TTL refresh, checked against the entry.
        self._expiry: list[tuple[float, str]] = []
        self._log: deque[FeedbackEvent] = deque(maxlen=check_history_limit(history_limit))
        self._counts: Counter[str] = Counter()
        self.evicted = 0

    # Internal helpers run with the lock held.

    def _drop(self, query_id: str) -> None:
        entry = self._entries.pop(query_id, None)
        if entry is None:
            return
        session_id = entry.decision.session_id
        if session_id is not None:
            members = self._sessions.get(session_id)
            if members is not None:
                members.pop(query_id, None)
                if not members:
                    del self._sessions[session_id]

    def _purge(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, query_id = heapq.heappop(self._expiry)
            entry = self._entries.get(query_id)
            if entry is not None and entry.expires_at <= now:
                self._drop(query_id)

    def _compact_expiry(self) -> None:
        # An evicted entry, or one whose TTL a Track restarted, leaves a stale item in the
        # heap until its old expiry time: at the size bound, an hour's worth of Routes (the
        # default TTL) of tuples and query ids beyond `max_pending`. Rebuilt from the live
        # entries once it holds twice as many items, amortised O(1) per insert.
        expiry = [(entry.expires_at, query_id) for query_id, entry in self._entries.items()]
        heapq.heapify(expiry)
        self._expiry = expiry

    def _live(self, query_id: str, now: float) -> _Entry | None:
        entry = self._entries.get(query_id)
        if entry is None:
            return None
        if entry.expires_at <= now:
            self._drop(query_id)
            return None
        return entry

    def _insert(self, decision: RoutingDecision, ttl_s: float, now: float) -> _Entry:
        expiry = self._expiry
        if expiry and expiry[0][0] <= now:
            self._purge(now)
        entries = self._entries
        if len(entries) >= self.max_pending:
            while len(entries) >= self.max_pending:
                self._drop(next(iter(entries)))
                self.evicted += 1
            if len(expiry) > 2 * len(entries) + _EXPIRY_SLACK:  # evictions leave stale items
                self._compact_expiry()
                expiry = self._expiry
        entry = _Entry()
        entry.decision = decision
        entry.expires_at = expires_at = now + ttl_s
        entry.acc = _NO_OBSERVATION
        entry.marks = None
        query_id = decision.query_id
        entries[query_id] = entry
        heapq.heappush(expiry, (expires_at, query_id))
        session_id = decision.session_id
        if session_id is not None:
            self._sessions.setdefault(session_id, {})[query_id] = None
        return entry

    # The interface. The lock is taken with acquire/release: a `with` block costs twice as
    # much, and log_decision runs on every Route.

    async def log_decision(self, decision: RoutingDecision, ttl_s: float) -> bool:
        if type(ttl_s) is not float or not 0.0 < ttl_s <= MAX_TTL_SECONDS:  # check_ttl's test
            ttl_s = check_ttl(ttl_s, "ttl_s")
        lock = self._lock
        lock.acquire()
        try:
            now = time.time()
            entry = self._entries.get(decision.query_id)
            if entry is not None:
                if entry.expires_at > now:
                    return False
                self._drop(decision.query_id)
            self._insert(decision, ttl_s, now)
            return True
        finally:
            lock.release()

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
        if ttl_s is not None and (type(ttl_s) is not float or not 0.0 < ttl_s <= MAX_TTL_SECONDS):
            ttl_s = check_ttl(ttl_s, "ttl_s")  # the fast test above is check_ttl's own
        lock = self._lock
        lock.acquire()
        try:
            now = time.time()
            entry = self._entries.get(query_id)  # _live, inlined: once per Track / signal
            if entry is not None and entry.expires_at <= now:
                self._drop(query_id)
                entry = None
            if entry is None:
                if create is None:
                    raise not_found(query_id)
                entry = self._insert(create, ttl_s or self.ttl_seconds, now)
            marks = entry.marks
            if marks is None:
                marks = entry.marks = {}
            else:
                first = marks.get(key)
                for alias in aliases:
                    if first is not None:
                        break
                    first = marks.get(alias)
                if first is not None:
                    return Applied(entry.decision, entry.acc, entry.acc, True, first)
            before = entry.acc
            entry.acc = accumulate(before, contribution)
            stored = recorded(mark, before, entry.acc)
            marks[key] = stored
            if ttl_s is not None:
                entry.expires_at = now + ttl_s
                heapq.heappush(self._expiry, (entry.expires_at, query_id))
                if len(self._expiry) > 2 * len(self._entries) + _EXPIRY_SLACK:
                    self._compact_expiry()
            for event in events:
                self._log.append(event)
                self._counts[event.signal_type] += 1
            return Applied(entry.decision, before, entry.acc, False, stored)
        finally:
            lock.release()

    async def read_mark(self, query_id: str, key: str) -> Mark | None:
        with self._lock:
            entry = self._live(query_id, time.time())
            if entry is None or entry.marks is None:
                return None
            return entry.marks.get(key)

    async def get(self, query_id: str) -> PendingQuery | None:
        with self._lock:
            entry = self._live(query_id, time.time())
            if entry is None:
                return None
            return PendingQuery(entry.decision, entry.acc, entry.expires_at)

    async def session_query_ids(self, session_id: str) -> list[str]:
        with self._lock:
            now = time.time()
            members = list(self._sessions.get(session_id, {}))
            return [qid for qid in members if self._live(qid, now) is not None]

    async def pending_count(self) -> int:
        with self._lock:
            self._purge(time.time())
            return len(self._entries)

    async def recent_events(self, limit: int) -> list[FeedbackEvent]:
        with self._lock:
            if limit <= 0:
                return []
            newest_first = reversed(self._log)
            return [event for _, event in zip(range(limit), newest_first, strict=False)]

    async def signal_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
