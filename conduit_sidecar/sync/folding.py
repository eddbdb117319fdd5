"""Turning stored bytes into policies: restore a base, fold deltas, reconcile the catalogue.

Pure, synchronous helpers (the synchronizer and compaction run them in the worker thread of
`sync.worker`, since at a large feature dimension they take tens of milliseconds). Every
policy here is private to its caller until it is swapped into the router.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from conduit_sidecar.bandit import BanditPolicy, CoreError, PolicyConfig
from conduit_sidecar.sync.fingerprint import (
    SNAPSHOT_FORMAT,
    check_compatible,
    fingerprint,
)
from conduit_sidecar.sync.state_store import DeltaRecord, Snapshot

log = logging.getLogger(__name__)

# Settings that only steer selection; a restored policy keeps the snapshot's values (the
# core has no way to change them in place), and a difference is reported, never hidden.
_SELECTION_SETTINGS = (
    "alpha",
    "epsilon",
    "ts_scale",
    "mc_samples",
    "refactor_every",
    "seed",
    "fixed_arm",
)


@dataclass
class CatalogueChange:
    """How a restored policy's arms were brought in line with the sidecar's catalogue."""

    removed: list[str] = field(default_factory=list)  # learned here before, not in the catalogue
    added: list[str] = field(default_factory=list)  # in the catalogue, starting fresh


def snapshot_meta(config: PolicyConfig, arms: Sequence[str], replica_id: str) -> dict[str, Any]:
    """Metadata stored next to a base snapshot: what a loader must check before using it."""
    return {
        "format": SNAPSHOT_FORMAT,
        "fingerprint": fingerprint(config),
        "arms": list(arms),
        "written_by": replica_id,
        "written_at": time.time(),
    }


def load_base(
    snapshot: Snapshot,
    expected: PolicyConfig,
    *,
    where: str,
    reset_hint: str,
    warn_settings: bool = True,
) -> BanditPolicy:
    """The policy in `snapshot`, refusing one written with other feature/policy settings.

    The fingerprint is checked twice: from the metadata (cheap, and readable even if the
    bytes are from a newer core) and from the loaded policy's own configuration.
    """
    current = fingerprint(expected)
    stored = snapshot.meta.get("fingerprint")
    if isinstance(stored, dict):
        check_compatible(stored, current, where=where, reset_hint=reset_hint)
    try:
        policy = BanditPolicy.from_bytes(snapshot.data)
    except CoreError as exc:
        raise CoreError(
            f"snapshot: the policy snapshot in {where} cannot be loaded ({exc}); "
            f"nothing was loaded or deleted; to start from scratch, {reset_hint}"
        ) from exc
    check_compatible(fingerprint(policy.config), current, where=where, reset_hint=reset_hint)
    changed = [
        f"{name}={getattr(policy.config, name)!r} (configured {getattr(expected, name)!r})"
        for name in _SELECTION_SETTINGS
        if getattr(policy.config, name) != getattr(expected, name)
    ]
    if changed and warn_settings:
        log.warning(
            "restored policy keeps the selection settings it was saved with: %s; the learned "
            "statistics are compatible, but these settings only take effect on a fresh state",
            ", ".join(changed),
        )
    return policy


def reconcile_arms(policy: BanditPolicy, catalogue: Sequence[str]) -> CatalogueChange:
    """Removes arms not in `catalogue` and adds missing ones fresh; statistics of the arms
    that remain are untouched (the shared base keeps the removed ones' statistics)."""
    change = CatalogueChange()
    wanted = set(catalogue)
    for arm in list(policy.arms):
        if arm not in wanted:
            policy.remove_arm(arm)
            change.removed.append(arm)
    have = set(policy.arms)
    for arm in catalogue:
        if arm not in have:
            policy.add_arm(arm)
            change.added.append(arm)
    return change


def merge_records(
    policy: BanditPolicy, records: Sequence[DeltaRecord], *, foreign: set[str] | None = None
) -> int:
    """Adds every delta to `policy`; returns how many could not be read.

    A delta the core refuses (corrupt bytes, another policy family) is skipped with an error
    log naming it: one bad record must not stop every replica from ever syncing again.
    With `foreign`, arms the policy does not have are left out instead of added (their
    statistics are not merged here) and their names are added to `foreign`.
    """
    bad = 0
    for record in records:
        try:
            unknown = policy.merge_delta(record.data, skip_unknown=foreign is not None)
        except CoreError as exc:
            bad += 1
            log.error(
                "skipping policy delta %s from replica %s: %s",
                record.cursor,
                record.replica_id,
                exc,
            )
            continue
        if foreign is not None:
            foreign.update(unknown)
    return bad


class PolicyFolder:
    """Folds a base and deltas into a new base (the `DeltaFolder` of state_store.compact).

    A base without metadata or with this sidecar's fingerprint is folded; one written with
    other settings raises IncompatibleSnapshot, so a replica with the wrong settings never
    rewrites the shared base.
    """

    def __init__(
        self,
        config: PolicyConfig,
        catalogue: Sequence[str],
        replica_id: str,
        *,
        where: str,
        reset_hint: str,
    ) -> None:
        self._config = config
        self._catalogue = list(catalogue)
        self._replica_id = replica_id
        self._where = where
        self._reset_hint = reset_hint
        self._policy: BanditPolicy | None = None

    def begin(self, base: Snapshot | None) -> None:
        if base is None:
            self._policy = BanditPolicy(self._config, self._catalogue)
            return
        policy = load_base(
            base, self._config, where=self._where, reset_hint=self._reset_hint, warn_settings=False
        )
        # Keep every arm the base knows (other replicas may still route to it) and make
        # room for this catalogue's new ones; merge_delta adds any other arm it meets.
        for arm in self._catalogue:
            if arm not in policy.arms:
                policy.add_arm(arm)
        self._policy = policy

    def add(self, record: DeltaRecord) -> None:
        if self._policy is None:
            raise RuntimeError("PolicyFolder.add before begin")
        merge_records(self._policy, [record])

    def finish(self) -> tuple[bytes, dict[str, Any]]:
        if self._policy is None:
            raise RuntimeError("PolicyFolder.finish before begin")
        policy = self._policy
        self._policy = None
        data = policy.to_bytes()
        return data, snapshot_meta(policy.config, policy.arms, self._replica_id)
