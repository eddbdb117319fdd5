"""Test helpers shared by tests/test_sync_*.py: real state stores with a unique namespace each.

Redis and PostgreSQL are the servers started by scripts/services.sh (URLs from
CONDUIT_TEST_REDIS_URL / CONDUIT_TEST_POSTGRES_URL); every store gets a fresh namespace so
tests never see each other's keys or tables, and the namespace is deleted afterwards.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from conduit_sidecar.sync.memory_store import MemoryPolicyStateStore
from conduit_sidecar.sync.postgres_store import PostgresPolicyStateStore
from conduit_sidecar.sync.redis_store import RedisPolicyStateStore
from conduit_sidecar.sync.sqlite_store import SqlitePolicyStateStore
from conduit_sidecar.sync.state_store import PolicyStateStore

REDIS_URL = os.environ.get("CONDUIT_TEST_REDIS_URL", "redis://127.0.0.1:6390/0")
POSTGRES_URL = os.environ.get(
    "CONDUIT_TEST_POSTGRES_URL", "postgresql://conduit@127.0.0.1:5440/conduit_test"
)
BACKENDS = ("memory", "sqlite", "redis", "postgres")
SHARED_BACKENDS = ("redis", "postgres")


def unique_namespace() -> str:
    return "t" + uuid.uuid4().hex[:16]


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def store_factory(
    backend: str, tmp_path: Path
) -> AsyncIterator[Callable[[], PolicyStateStore]]:
    """Yields a function opening a new connection to the *same* fresh namespace each call
    (for memory: the same instance, since it cannot be shared otherwise)."""
    namespace = unique_namespace()
    opened: list[PolicyStateStore] = []
    memory = MemoryPolicyStateStore()

    def make() -> PolicyStateStore:
        store: PolicyStateStore
        if backend == "memory":
            return memory
        if backend == "sqlite":
            store = SqlitePolicyStateStore(tmp_path / "state.db", namespace=namespace)
        elif backend == "redis":
            store = RedisPolicyStateStore.from_url(REDIS_URL, namespace=namespace)
        elif backend == "postgres":
            store = PostgresPolicyStateStore(POSTGRES_URL, namespace=namespace)
        else:
            raise AssertionError(backend)
        opened.append(store)
        return store

    try:
        yield make
    finally:
        if opened:
            first = opened[0]
            if isinstance(first, RedisPolicyStateStore | PostgresPolicyStateStore):
                await first.delete_all()
        for store in opened:
            await store.close()
