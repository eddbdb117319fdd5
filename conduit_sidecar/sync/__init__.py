"""Learned state that survives and replicas that agree: policy snapshots and delta exchange.

`PolicyStateStore` keeps a base snapshot plus a log of additive deltas in memory, SQLite,
Redis or PostgreSQL; `PolicySynchronizer` publishes a router's local learning as deltas,
merges every other replica's, restores at start and compacts. See docs/OPERATIONS.md,
"Scale-out and survival".
"""

from conduit_sidecar.sync.state_store import (
    START,
    CompactionResult,
    DeltaGap,
    DeltaRecord,
    PolicyStateStore,
    Snapshot,
    StorageStats,
    open_state_store,
)

__all__ = [
    "START",
    "CompactionResult",
    "DeltaGap",
    "DeltaRecord",
    "PolicyStateStore",
    "Snapshot",
    "StorageStats",
    "open_state_store",
]
