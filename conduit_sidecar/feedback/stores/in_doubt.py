"""Writes in doubt: store writes whose caller never learned whether they happened.

A write that fails with `Unavailable` may still take effect: Redis runs a script it received
before the client's timeout once it gets to it, and PostgreSQL may commit a transaction whose
acknowledgement was lost. Its mark is then stored but its delta never reached the policy, and
the client's retry finds the mark. Every write carries a fresh attempt id, which its mark
keeps along with the accumulators before and after it; the collector remembers the attempt
ids of its failed writes here. A duplicate whose mark carries one of them is that write, so
its delta is applied then (once: the id is taken out of the ledger first). Only the process
that issued a write can know it was not applied, so a retry that reaches another replica,
or no retry at all, is covered by `FeedbackCollector.resolve_in_doubt`, which reads the
marks of the remembered writes once the store answers again.

Marks of earlier versions carry no attempt id: a duplicate of one is a plain duplicate.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from conduit_sidecar.errors import Unavailable
from conduit_sidecar.feedback.stores.base import Applied, FeedbackStore, Mark
from conduit_sidecar.query import RoutingDecision

# Failed writes remembered at most (the oldest are forgotten first: their deltas are then
# lost as before this ledger existed), and for at most this long: a write that has not
# reached the store by then never will.
MAX_IN_DOUBT = 10_000
MAX_DOUBT_AGE_S = 600.0


def attempt_id() -> str:
    """A fresh id for one store write (96 random bits)."""
    return os.urandom(12).hex()


@dataclass(frozen=True)
class Doubt:
    """A failed write: what it was about, and the outcome it would have counted."""

    query_id: str
    key: str
    outcome: tuple[float | None, float | None] | None
    since: float  # time.monotonic() of the failure


class InDoubtWrites:
    """The attempt ids of this process's failed writes, oldest first."""

    def __init__(self, limit: int = MAX_IN_DOUBT) -> None:
        self.limit = limit
        self._doubts: OrderedDict[str, Doubt] = OrderedDict()

    def __len__(self) -> int:
        return len(self._doubts)

    def add(
        self,
        attempt: str,
        query_id: str,
        key: str,
        outcome: tuple[float | None, float | None] | None,
    ) -> None:
        self._doubts[attempt] = Doubt(query_id, key, outcome, time.monotonic())
        while len(self._doubts) > self.limit:
            self._doubts.popitem(last=False)

    def claim(self, decision: RoutingDecision, mark: Mark) -> tuple[Applied, Doubt] | None:
        """If `mark` was written by one of our failed writes: that write as the
        non-duplicate it was (before -> after) and its doubt, removed from the ledger first
        so that nothing applies it twice. None for any other mark."""
        if mark.attempt is None or mark.before is None or mark.after is None:
            return None
        doubt = self._doubts.pop(mark.attempt, None)
        if doubt is None:
            return None
        return Applied(decision, mark.before, mark.after, False, mark), doubt

    def oldest(self, count: int) -> list[tuple[str, Doubt]]:
        """Up to `count` doubts, oldest first; those past MAX_DOUBT_AGE_S are dropped."""
        horizon = time.monotonic() - MAX_DOUBT_AGE_S
        for attempt in [a for a, doubt in self._doubts.items() if doubt.since <= horizon]:
            del self._doubts[attempt]
        return [item for _, item in zip(range(count), self._doubts.items(), strict=False)]

    def forget(self, attempt: str) -> None:
        self._doubts.pop(attempt, None)

    def postpone(self, attempt: str) -> None:
        """Checked without an answer: to the back of the queue (keeps its age)."""
        if attempt in self._doubts:
            self._doubts.move_to_end(attempt)


async def settle_doubts(
    ledger: InDoubtWrites,
    store: FeedbackStore,
    apply: Callable[[Applied, Doubt], None],
    batch: int,
) -> int:
    """Reads the marks of up to `batch` doubts (oldest first) and hands each write that took
    effect to `apply` as the non-duplicate it was; returns how many. A doubt whose key has
    no mark yet stays (the write may still land) until MAX_DOUBT_AGE_S; one whose query is
    no longer pending, or whose key holds another write's mark, is forgotten. Stops at the
    first Unavailable: the store is still down, and the doubts wait for the next pass."""
    settled = 0
    for attempt, doubt in ledger.oldest(batch):
        try:
            mark = await store.read_mark(doubt.query_id, doubt.key)
            pending = await store.get(doubt.query_id)
        except Unavailable:
            break
        if pending is None:
            ledger.forget(attempt)  # expired (its marks with it): nothing left to learn
            continue
        if mark is None:
            ledger.postpone(attempt)
            continue
        claimed = ledger.claim(pending.decision, mark)
        if claimed is None:
            ledger.forget(attempt)  # another write holds the key, or this one was claimed
            continue
        apply(*claimed)
        settled += 1
    return settled
