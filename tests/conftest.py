"""Shared fixtures.

Feedback stores: `store_factory` is parametrised over the four backends. Every test gets its
own SQLite file, its own Redis key prefix and its own PostgreSQL schema, all removed
afterwards, so tests never see each other's data. The servers are the real ones started by
`scripts/services.sh` (URLs from CONDUIT_TEST_REDIS_URL / CONDUIT_TEST_POSTGRES_URL).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conduit_sidecar.feedback import (
    FeedbackStore,
    InMemoryFeedbackStore,
    PostgresFeedbackStore,
    RedisFeedbackStore,
    SqliteFeedbackStore,
)

REDIS_URL = os.environ.get("CONDUIT_TEST_REDIS_URL", "redis://127.0.0.1:6390/0")
POSTGRES_URL = os.environ.get(
    "CONDUIT_TEST_POSTGRES_URL", "postgresql://conduit@127.0.0.1:5440/conduit_test"
)
BACKENDS = ("memory", "sqlite", "redis", "postgres")
DURABLE_BACKENDS = ("sqlite", "redis", "postgres")


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def postgres_url() -> str:
    return POSTGRES_URL


@dataclass
class StoreFactory:
    """Opens stores of one backend, all at the same per-test location (file, key prefix or
    schema), so a second `open()` after `close()` sees what the first one wrote."""

    backend: str
    tmp_path: Path
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    opened: list[FeedbackStore] = field(default_factory=list)

    @property
    def durable(self) -> bool:
        return self.backend in DURABLE_BACKENDS

    @property
    def redis_prefix(self) -> str:
        return f"conduit-test-{self.token}:"

    @property
    def pg_schema(self) -> str:
        return f"conduit_test_{self.token}"

    async def open(self, **kwargs: Any) -> FeedbackStore:
        store: FeedbackStore
        if self.backend == "memory":
            store = InMemoryFeedbackStore(**kwargs)
        elif self.backend == "sqlite":
            store = SqliteFeedbackStore(self.tmp_path / "feedback.db", **kwargs)
        elif self.backend == "redis":
            from redis.asyncio import Redis

            store = RedisFeedbackStore(
                Redis.from_url(REDIS_URL), prefix=self.redis_prefix, **kwargs
            )
        elif self.backend == "postgres":
            store = PostgresFeedbackStore(
                database_url=POSTGRES_URL, schema=self.pg_schema, **kwargs
            )
        else:  # pragma: no cover - the parameter list above is closed
            raise AssertionError(self.backend)
        await store.initialize()
        self.opened.append(store)
        return store

    async def cleanup(self) -> None:
        for store in self.opened:
            await store.close()
        if self.backend == "redis":
            from redis.asyncio import Redis

            client = Redis.from_url(REDIS_URL)
            try:
                # A test-only scan over this test's own prefix; the store itself never scans.
                keys = [k async for k in client.scan_iter(match=f"{self.redis_prefix}*")]
                if keys:
                    await client.delete(*keys)
            finally:
                await client.aclose()
        elif self.backend == "postgres":
            import asyncpg

            conn = await asyncpg.connect(POSTGRES_URL)
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {self.pg_schema} CASCADE")
            finally:
                await conn.close()


async def _factory(backend: str, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    factory = StoreFactory(backend, tmp_path)
    try:
        yield factory
    finally:
        await factory.cleanup()


@pytest.fixture(params=BACKENDS)
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    async for factory in _factory(request.param, tmp_path):
        yield factory


@pytest.fixture(params=DURABLE_BACKENDS)
async def durable_store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    async for factory in _factory(request.param, tmp_path):
        yield factory


@pytest.fixture
async def store(store_factory: StoreFactory) -> FeedbackStore:
    return await store_factory.open()


OpenStore = Callable[..., Awaitable[FeedbackStore]]


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server of the test module's own, for tests that stall Redis on purpose:
    stalling the shared test server would stall every other test using it."""
    from sync_cluster import PrivateRedis

    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()
