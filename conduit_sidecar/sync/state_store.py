"""Where learned policy state lives: one base snapshot plus an append-only log of deltas.

Every policy is additive sufficient statistics (DESIGN section 2), so the state of the whole
replica set is `base snapshot + sum of the deltas published after its watermark`. Replicas
append their own deltas and add up everybody else's; compaction folds old deltas into a new
base so storage stays bounded. The store is the coordination engine: ordering comes from the
backend (a Redis Stream id, a PostgreSQL sequence taken under a lock, an SQLite rowid), and
the base is replaced by compare-and-set on its watermark together with trimming the log, in
one atomic step, so two compactors can never fold the same delta twice.

Cursors are opaque strings owned by the backend; `START` means "before every delta".
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from conduit_sidecar.sync.worker import off_loop

log = logging.getLogger(__name__)

START = ""
"""Cursor that precedes every delta (the watermark of an empty store)."""

PUBLISH_MARK_TTL_S = 86_400
"""How long a publish id is remembered (far longer than any retry of one delta)."""

PAGE_SIZE = 4
"""Deltas read per round trip; bounds memory while folding or catching up. One delta is
about 17 KB per touched model at feature_dim 64 (190 KB with the 11 default models), and
the client library copies a reply a few times while parsing it: the soak showed a 16-delta
page as a resident-memory bump of about 9 MB at each compaction."""


@dataclass(frozen=True)
class Snapshot:
    """A base snapshot: policy bytes that already include every delta up to `watermark`."""

    data: bytes
    watermark: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeltaRecord:
    """One published delta, in log order."""

    cursor: str
    replica_id: str
    data: bytes


@dataclass(frozen=True)
class CompactionResult:
    """What one compaction did: `folded` deltas now live in a base at `watermark`."""

    folded: int
    watermark: str
    snapshot_bytes: int


@dataclass(frozen=True)
class StorageStats:
    """How much the store holds now (for the bounded-storage promise and metrics)."""

    delta_count: int
    delta_bytes: int
    snapshot_bytes: int
    watermark: str


class DeltaGap(Exception):
    """Deltas after the caller's cursor were folded into a newer base the caller has not seen.

    The caller must rebuild from the base (see `PolicySynchronizer.rebuild`); nothing is lost,
    the deltas it missed are inside the base.
    """

    def __init__(self, cursor: str, watermark: str) -> None:
        super().__init__(f"deltas after cursor {cursor!r} were compacted into base {watermark!r}")
        self.cursor = cursor
        self.watermark = watermark


class DeltaFolder(Protocol):
    """Folds a base and deltas into new base bytes (on the event loop, one delta a step)."""

    def begin(self, base: Snapshot | None) -> None: ...

    def add(self, record: DeltaRecord) -> None: ...

    def finish(self) -> tuple[bytes, dict[str, Any]]: ...


class PolicyStateStore(abc.ABC):
    """Async store of one policy's base snapshot and delta log.

    `shared` tells whether several processes may use it at once (Redis, PostgreSQL, an SQLite
    file); the in-memory store is shared only between synchronizers of one process.
    Every method raises `conduit_sidecar.errors.Unavailable` when the backend cannot be reached.
    """

    shared: bool = True
    description: str = "policy state store"
    reset_hint: str = "delete the stored policy state"
    """How an operator deletes this store's policy state (quoted in refusal messages)."""

    async def initialize(self) -> None:
        """Creates tables or checks the connection; idempotent."""
        return None

    async def close(self) -> None:
        """Releases connections the store opened itself."""
        return None

    @abc.abstractmethod
    async def load_snapshot(self) -> Snapshot | None:
        """The current base, or None if none was written yet."""

    @abc.abstractmethod
    async def save_snapshot(
        self,
        data: bytes,
        meta: dict[str, Any],
        *,
        watermark: str,
        expected_watermark: str | None,
    ) -> bool:
        """Replaces the base if its watermark is still `expected_watermark` (None: no base yet).

        Deltas up to `watermark` are trimmed in the same atomic step. Returns False, changing
        nothing, when another writer got there first.
        """

    @abc.abstractmethod
    async def publish_delta(self, replica_id: str, data: bytes, *, publish_id: str) -> str:
        """Appends one delta and returns its cursor.

        `publish_id` makes a retry safe: a delta whose append reached the store but whose
        acknowledgement was lost (timeout, connection reset) is not appended a second time;
        the retry returns the first cursor. Marks are kept for PUBLISH_MARK_TTL_S.
        """

    @abc.abstractmethod
    async def read_deltas(
        self, after_cursor: str, *, upto: str | None = None, limit: int = PAGE_SIZE
    ) -> list[DeltaRecord]:
        """Up to `limit` deltas after `after_cursor` (and at most `upto`), oldest first.

        Raises `DeltaGap` if the base watermark is beyond `after_cursor`: some deltas the caller
        has not read were folded into the base. The check and the read are one atomic snapshot.
        """

    @abc.abstractmethod
    async def cutoff_cursor(self, min_age_s: float) -> str | None:
        """The newest cursor whose delta is at least `min_age_s` old (None: there is none)."""

    @abc.abstractmethod
    async def try_lock(self, name: str, ttl_s: float) -> str | None:
        """A short advisory lock; returns a token to release it, or None if someone holds it."""

    @abc.abstractmethod
    async def unlock(self, name: str, token: str) -> None:
        """Releases the lock if `token` still owns it."""

    @abc.abstractmethod
    async def storage_stats(self) -> StorageStats:
        """Counts and sizes, for tests, metrics and the soak report."""

    async def read_all_deltas(
        self, after_cursor: str, *, upto: str | None = None
    ) -> list[DeltaRecord]:
        """Every delta after `after_cursor` (up to `upto`), paging; may raise `DeltaGap`."""
        out: list[DeltaRecord] = []
        cursor = after_cursor
        while True:
            page = await self.read_deltas(cursor, upto=upto)
            out.extend(page)
            if len(page) < PAGE_SIZE:
                return out
            cursor = page[-1].cursor

    async def compact(
        self, folder: DeltaFolder, *, min_age_s: float, lock_ttl_s: float = 30.0
    ) -> CompactionResult | None:
        """Folds every delta at least `min_age_s` old into a new base.

        Runs under a short lock so replicas do not all do the same work; correctness does not
        depend on the lock (the base is replaced by compare-and-set). Returns None when another
        replica is compacting, when there is nothing to fold, or when the race was lost.
        """
        token = await self.try_lock("compact", lock_ttl_s)
        if token is None:
            return None
        try:
            base = await self.load_snapshot()
            upto = await self.cutoff_cursor(min_age_s)
            if upto is None:
                return None
            after = base.watermark if base is not None else START
            # Folding runs in the synchronizer's one worker thread, one delta per call: at a
            # large feature dimension each is tens of milliseconds of re-factorisation that
            # would hold every Route on the event loop. One persistent thread keeps to one
            # extra malloc arena (a thread per fold showed up in the soak as a
            # resident-memory peak at every compaction).
            await off_loop(folder.begin, base)
            cursor, folded = after, 0
            while True:
                try:
                    page = await self.read_deltas(cursor, upto=upto)
                except DeltaGap:
                    return None  # another compactor replaced the base meanwhile; its work stands
                if page:
                    for record in page:
                        await off_loop(folder.add, record)
                    folded += len(page)
                    cursor = page[-1].cursor
                if len(page) < PAGE_SIZE:
                    break
            if folded == 0:
                return None
            data, meta = await off_loop(folder.finish)
            ok = await self.save_snapshot(
                data,
                meta,
                watermark=cursor,
                expected_watermark=base.watermark if base is not None else None,
            )
            if not ok:
                return None
            log.info(
                "compacted %d policy deltas into base at %s (%d bytes)", folded, cursor, len(data)
            )
            return CompactionResult(folded=folded, watermark=cursor, snapshot_bytes=len(data))
        finally:
            await self.unlock("compact", token)


def open_state_store(
    url: str, *, namespace: str = "conduit", sqlite_synchronous: str = "FULL"
) -> PolicyStateStore:
    """The state store for a sidecar store URL (the same URL the feedback store uses).

    `namespace` prefixes Redis keys and PostgreSQL/SQLite table names, so several independent
    routers (or tests) can share one server.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        from conduit_sidecar.sync.memory_store import MemoryPolicyStateStore

        return MemoryPolicyStateStore()
    if scheme == "sqlite":
        from conduit_sidecar.sync.sqlite_store import SqlitePolicyStateStore

        # sqlite:///relative.db and sqlite:////absolute/path.db, as SQLAlchemy spells them.
        path = url.split("://", 1)[1]
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise ValueError("store_url: sqlite:/// needs a path, e.g. sqlite:///./conduit.db")
        return SqlitePolicyStateStore(path, namespace=namespace, synchronous=sqlite_synchronous)
    if scheme in ("redis", "rediss"):
        from conduit_sidecar.sync.redis_store import RedisPolicyStateStore

        return RedisPolicyStateStore.from_url(url, namespace=namespace)
    if scheme in ("postgresql", "postgres"):
        from conduit_sidecar.sync.postgres_store import PostgresPolicyStateStore

        return PostgresPolicyStateStore(url, namespace=namespace)
    raise ValueError(
        "store_url: expected memory://, sqlite:///path, redis://... or postgresql://..., "
        f"got {url!r}"
    )
