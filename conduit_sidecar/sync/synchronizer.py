"""PolicySynchronizer: one router's learning in and out of a PolicyStateStore.

Every `sync_interval_s` it takes the router policy's local delta (what this process learned
since the last take) and appends it to the store's log, then adds up every delta other
replicas appended since its cursor. Every `snapshot_interval_s` it folds old deltas into a
new base snapshot (any replica may; the store arbitrates). At start it restores base + log.

Replica id: by default a fresh uuid per process start (a caller may pass its own; its
publish ids still get a per-instance prefix). After a crash the new process therefore reads
every delta in the log, its previous incarnation's included, on top of the base: nothing the
old process published is lost, and nothing is counted twice (the new process never merged it
before). Only deltas this very process published are skipped.

With `sync_interval_s = 0` the delta is published right after every observation instead:
`Router.update` and, when a collector is given, `FeedbackCollector.record` / `track` /
`record_session_feedback` return only once their delta is in the store (zero loss window
with a shared store); other replicas' deltas are then polled every 0.2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conduit_sidecar.bandit import BanditPolicy
from conduit_sidecar.errors import Unavailable
from conduit_sidecar.sync.eager import EagerHooks
from conduit_sidecar.sync.folding import (
    CatalogueChange,
    PolicyFolder,
    load_base,
    merge_records,
    reconcile_arms,
    snapshot_meta,
)
from conduit_sidecar.sync.state_store import (
    PAGE_SIZE,
    START,
    CompactionResult,
    DeltaGap,
    DeltaRecord,
    PolicyStateStore,
)
from conduit_sidecar.sync.worker import off_loop

if TYPE_CHECKING:
    from conduit_sidecar.router import Router

log = logging.getLogger(__name__)

EAGER_POLL_S = 0.2
"""How often other replicas' deltas are read when sync_interval_s = 0."""

_RESTORE_ATTEMPTS = 8


@dataclass
class RestoreReport:
    """What `restore` (or a rebuild after a gap) loaded."""

    base_watermark: str | None
    deltas_merged: int
    deltas_skipped: int
    catalogue: CatalogueChange
    cursor: str


@dataclass
class SyncStatus:
    """Counters for metrics, health and tests."""

    replica_id: str
    cursor: str = START
    published: int = 0
    merged: int = 0
    skipped: int = 0
    rebuilds: int = 0
    compactions: int = 0
    failures: int = 0
    pending: bool = False
    last_success_s: float | None = None  # time.monotonic() of the last complete sync
    last_error: str | None = None
    foreign_arms: set[str] = field(default_factory=set)


class PolicySynchronizer:
    """Keeps `router.policy` in step with a PolicyStateStore (see the module docstring)."""

    def __init__(
        self,
        router: Router,
        state_store: PolicyStateStore,
        replica_id: str | None = None,
        sync_interval_s: float = 1.0,
        snapshot_interval_s: float = 60.0,
        *,
        delta_retention_s: float | None = None,
        collector: Any = None,
    ) -> None:
        if not sync_interval_s >= 0.0:
            raise ValueError(f"sync_interval_s: must be >= 0, got {sync_interval_s!r}")
        if not snapshot_interval_s > 0.0:
            raise ValueError(f"snapshot_interval_s: must be > 0, got {snapshot_interval_s!r}")
        self.router = router
        self.store = state_store
        self.replica_id = replica_id or uuid.uuid4().hex
        self.sync_interval_s = float(sync_interval_s)
        self.snapshot_interval_s = float(snapshot_interval_s)
        self.poll_s = self.sync_interval_s if self.sync_interval_s > 0 else EAGER_POLL_S
        # Deltas younger than this stay in the log so a replica a few syncs behind can still
        # read them instead of rebuilding from the base.
        self.delta_retention_s = (
            float(delta_retention_s)
            if delta_retention_s is not None
            else max(30.0, 10.0 * self.poll_s)
        )
        self.collector = collector
        self.status = SyncStatus(replica_id=self.replica_id)
        self._config = router.policy.config
        self._empty_delta = BanditPolicy(self._config, [router.models[0].id]).take_delta()
        # Local learning already taken as a delta, as the policy's local_version (merges do
        # not move it, so a merge finishing in the worker thread never hides an update).
        self._seen_version = router.policy.local_version
        self._pending: bytes | None = None
        # The store's retry dedupe key is this prefix plus a sequence number. The prefix is
        # fresh per instance: a replica_id given by the caller survives a restart, and the
        # new process's "1", "2", ... would otherwise match its predecessor's retry marks
        # (kept 24 hours) and its deltas be dropped as retries of those.
        self._publish_prefix = f"{self.replica_id}:{uuid.uuid4().hex}"
        self._publish_seq = 0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._hooks = EagerHooks(self.flush, self._wake.set)
        self._restored = False
        self._stopping = False
        self._failing_since: float | None = None
        self._last_failure_log = 0.0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Restores (if not done yet), installs the eager hooks, starts the sync loop."""
        if not self._restored:
            await self.restore()
        if self.sync_interval_s == 0.0:
            self._hooks.install(self.router, self.collector)
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"policy-sync-{self.replica_id[:8]}")

    async def stop(self) -> None:
        """Stops the loop, publishes what is left and writes a snapshot (shutdown hook)."""
        self._hooks.remove()
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            # Let a sync in flight finish rather than cancel it between a publish reaching
            # the store and its acknowledgement; cancel only if the store hangs.
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        try:
            await self.sync_once()
            await self.snapshot()
        except Unavailable as exc:
            log.error(
                "policy state not persisted at shutdown (%s); unpublished learning is lost", exc
            )
        except Exception:
            # Shutdown must go on (other hooks, closing the stores); say loudly what failed.
            log.exception("policy snapshot at shutdown failed; published deltas are kept")

    # ------------------------------------------------------------------ operations

    async def restore(self) -> RestoreReport:
        """Loads base + log into the router (creating the base on an empty store)."""
        async with self._lock:
            report = await self._rebuild_locked()
        self._restored = True
        change = report.catalogue
        if change.removed or change.added:
            log.warning(
                "model catalogue changed since the snapshot: not routed any more (statistics "
                "kept in the store): %s; new, starting fresh: %s",
                ", ".join(change.removed) or "none",
                ", ".join(change.added) or "none",
            )
        log.info(
            "policy restored from %s: base %s + %d deltas (replica %s)",
            self.store.description,
            report.base_watermark or "(new)",
            report.deltas_merged,
            self.replica_id,
        )
        return report

    async def sync_once(self) -> int:
        """Publishes local learning, merges other replicas' deltas; returns how many merged."""
        async with self._lock:
            try:
                await self._publish_locked()
                merged = await self._pull_locked()
            except Unavailable as exc:
                self._note_failure(exc)
                raise
        self._note_success()
        return merged

    async def flush(self) -> None:
        """Publishes local learning now (raises Unavailable if the store cannot take it)."""
        async with self._lock:
            try:
                await self._publish_locked()
            except Unavailable as exc:
                self._note_failure(exc)
                raise

    async def snapshot(self) -> CompactionResult | None:
        """Folds deltas into a new base: all of them for a single-process store, those older
        than `delta_retention_s` for a shared one (younger ones may not be read by all yet)."""
        folder = PolicyFolder(
            self._config,
            self._catalogue(),
            self.replica_id,
            where=self.store.description,
            reset_hint=self.store.reset_hint,
        )
        min_age = self.delta_retention_s if self.store.shared else 0.0
        result = await self.store.compact(folder, min_age_s=min_age)
        if result is not None:
            self.status.compactions += 1
        return result

    # ------------------------------------------------------------------ internals

    def _catalogue(self) -> list[str]:
        return [spec.id for spec in self.router.models]

    async def _publish_locked(self) -> None:
        # A delta already pending (a publish the store refused, or learning a rebuild kept)
        # holds back what the policy learned since; publish that too before returning, or
        # stop()'s last sync and an eager flush would return with it still unpublished.
        carried = self._pending is not None
        await self._publish_one_locked()
        if carried:
            await self._publish_one_locked()

    async def _publish_one_locked(self) -> None:
        policy = self.router.policy
        if self._pending is None and policy.local_version != self._seen_version:
            delta = policy.take_delta()
            self._seen_version = policy.local_version
            if delta != self._empty_delta:
                self._pending = delta
                self._publish_seq += 1
        self.status.pending = self._pending is not None
        if self._pending is None:
            return
        await self.store.publish_delta(
            self.replica_id, self._pending, publish_id=f"{self._publish_prefix}:{self._publish_seq}"
        )
        self._pending = None
        self.status.pending = False
        self.status.published += 1

    async def _pull_locked(self) -> int:
        merged = 0
        while True:
            try:
                page = await self.store.read_deltas(self.status.cursor)
            except DeltaGap as gap:
                log.warning("policy deltas compacted before this replica read them (%s)", gap)
                await self._rebuild_locked()
                self.status.rebuilds += 1
                return merged
            # In the worker thread, so Route keeps answering during the re-factorisations;
            # off_loop waits for it even if this task is cancelled, so the merges and the
            # cursor that records them always land together.
            merged += await off_loop(self._merge_page, self.router.policy, page)
            if len(page) < PAGE_SIZE:
                return merged

    def _merge_page(self, policy: BanditPolicy, page: list[DeltaRecord]) -> int:
        """Merges the page's deltas from other replicas into the live policy and moves the
        cursor past it (worker thread). A model outside this sidecar's catalogue is left
        out, never added: a Route meanwhile must not pick it (the base keeps its statistics)."""
        records = [r for r in page if r.replica_id != self.replica_id]
        unknown: set[str] = set()
        skipped = merge_records(policy, records, foreign=unknown)
        for arm in sorted(unknown - self.status.foreign_arms):
            self.status.foreign_arms.add(arm)
            log.info("model %r learned by another replica is not in this catalogue", arm)
        if page:
            self.status.cursor = page[-1].cursor
        self.status.merged += len(records) - skipped
        self.status.skipped += skipped
        return len(records) - skipped

    def _drop_foreign_arms(self, policy: BanditPolicy) -> None:
        """merge_delta adds arms it does not know; a model outside this sidecar's catalogue
        must never be routed to here (its statistics stay in the store's base)."""
        wanted = set(self._catalogue())
        for arm in policy.arms:
            if arm not in wanted:
                policy.remove_arm(arm)
                if arm not in self.status.foreign_arms:
                    self.status.foreign_arms.add(arm)
                    log.info("model %r learned by another replica is not in this catalogue", arm)

    async def _rebuild_locked(self) -> RestoreReport:
        """Replaces router.policy by base + every delta in the log, keeping local learning.

        Local learning is published first, so the log holds everything this process knows;
        the new policy is then built aside and swapped in without an await in between.
        """
        await self._publish_locked()
        catalogue = self._catalogue()
        where, hint = self.store.description, self.store.reset_hint
        for _ in range(_RESTORE_ATTEMPTS):
            base = await self.store.load_snapshot()
            if base is None:
                fresh = BanditPolicy(self._config, catalogue)
                meta = snapshot_meta(self._config, catalogue, self.replica_id)
                await self.store.save_snapshot(
                    fresh.to_bytes(), meta, watermark=START, expected_watermark=None
                )
                continue  # load what won (ours or a concurrent replica's), then check it
            candidate = await off_loop(
                functools.partial(load_base, where=where, reset_hint=hint), base, self._config
            )
            change = reconcile_arms(candidate, catalogue)
            cursor, merged, skipped = base.watermark, 0, 0
            try:
                while True:
                    page = await self.store.read_deltas(cursor)
                    bad = await off_loop(merge_records, candidate, page)
                    merged, skipped = merged + len(page) - bad, skipped + bad
                    if page:
                        cursor = page[-1].cursor
                    if len(page) < PAGE_SIZE:
                        break
            except DeltaGap:
                continue  # compacted while we read: start over from the new base
            self._drop_foreign_arms(candidate)
            candidate.take_delta()  # all of it is in the store already: never re-publish it
            self._swap(candidate)
            self.status.cursor = cursor
            return RestoreReport(base.watermark, merged, skipped, change, cursor)
        raise Unavailable(
            f"policy state store {where}: the base kept changing during {_RESTORE_ATTEMPTS} "
            "restore attempts; retry"
        )

    def _swap(self, candidate: BanditPolicy) -> None:
        old = self.router.policy
        if old.local_version != self._seen_version:
            # Learned between the publish at the start of the rebuild and now.
            local = old.take_delta()
            if local != self._empty_delta:
                candidate.merge_delta(local)
                self._pending = local
                self._publish_seq += 1
        self.router.policy = candidate
        self._seen_version = candidate.local_version

    async def _run(self) -> None:
        next_snapshot = time.monotonic() + self.snapshot_interval_s
        while not self._stopping:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # races with the event being set, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self.sync_once()
                if time.monotonic() >= next_snapshot:
                    next_snapshot = time.monotonic() + self.snapshot_interval_s
                    await self.snapshot()
            except Unavailable:
                pass  # counted and logged by _note_failure; retried next round
            except Exception:
                # Keep learning locally and keep trying; never let the loop die silently.
                log.exception("policy sync failed")

    def _note_failure(self, exc: Unavailable) -> None:
        self.status.failures += 1
        self.status.last_error = str(exc)
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_failure_log >= 30.0:
            self._last_failure_log = now
            log.warning("policy sync: %s (routing continues on the local policy)", exc)

    def _note_success(self) -> None:
        now = time.monotonic()
        if self._failing_since is not None:
            log.info("policy sync recovered after %.1f s", now - self._failing_since)
            self._failing_since = None
            self._last_failure_log = 0.0
        self.status.last_success_s = now
        self.status.last_error = None
