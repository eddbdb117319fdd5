"""Contract of every PolicyStateStore backend, against real Redis and PostgreSQL servers."""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sync_backends import BACKENDS, POSTGRES_URL, closed_port, store_factory, unique_namespace

from conduit_sidecar.errors import Unavailable
from conduit_sidecar.sync.postgres_store import PostgresPolicyStateStore
from conduit_sidecar.sync.redis_store import RedisPolicyStateStore
from conduit_sidecar.sync.sqlite_store import SqlitePolicyStateStore
from conduit_sidecar.sync.state_store import (
    PAGE_SIZE,
    START,
    DeltaGap,
    DeltaRecord,
    PolicyStateStore,
    Snapshot,
    open_state_store,
)


def pid() -> str:
    return uuid.uuid4().hex


def num(value: int) -> bytes:
    return struct.pack("<q", value)


def unnum(data: bytes) -> int:
    return int(struct.unpack("<q", data)[0])


class SumFolder:
    """Folds integer deltas into an integer base: exactness is easy to check."""

    def __init__(self) -> None:
        self.total = 0
        self.seen: list[str] = []

    def begin(self, base: Snapshot | None) -> None:
        self.total = unnum(base.data) if base is not None else 0

    def add(self, record: DeltaRecord) -> None:
        self.total += unnum(record.data)
        self.seen.append(record.cursor)

    def finish(self) -> tuple[bytes, dict[str, Any]]:
        return num(self.total), {"kind": "sum"}


@pytest.fixture(params=BACKENDS)
async def make(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], PolicyStateStore]]:
    async with store_factory(request.param, tmp_path) as factory:
        await factory().initialize()
        yield factory


async def total_state(store: PolicyStateStore) -> int:
    """Base plus every delta after its watermark: what a restoring replica would compute."""
    base = await store.load_snapshot()
    total = unnum(base.data) if base is not None else 0
    deltas = await store.read_all_deltas(base.watermark if base is not None else START)
    return total + sum(unnum(d.data) for d in deltas)


async def test_empty_store(make: Callable[[], PolicyStateStore]) -> None:
    store = make()
    assert await store.load_snapshot() is None
    assert await store.read_deltas(START) == []
    assert await store.cutoff_cursor(0.0) is None
    stats = await store.storage_stats()
    assert (stats.delta_count, stats.snapshot_bytes, stats.watermark) == (0, 0, START)


async def test_deltas_are_read_in_order_after_a_cursor(
    make: Callable[[], PolicyStateStore],
) -> None:
    store = make()
    cursors = [
        await store.publish_delta(f"r{i % 3}", num(i), publish_id=pid())
        for i in range(PAGE_SIZE + 10)
    ]
    assert len(set(cursors)) == len(cursors)
    page = await store.read_deltas(START)
    assert len(page) == PAGE_SIZE
    assert [unnum(d.data) for d in page] == list(range(PAGE_SIZE))
    assert [d.replica_id for d in page[:3]] == ["r0", "r1", "r2"]
    everything = await store.read_all_deltas(START)
    assert [d.cursor for d in everything] == cursors
    after = await store.read_all_deltas(cursors[5])
    assert [unnum(d.data) for d in after] == list(range(6, PAGE_SIZE + 10))
    bounded = await store.read_deltas(cursors[5], upto=cursors[8])
    assert [unnum(d.data) for d in bounded] == [6, 7, 8]
    assert await store.read_deltas(cursors[-1]) == []


async def test_snapshot_compare_and_set_trims_folded_deltas(
    make: Callable[[], PolicyStateStore],
) -> None:
    store = make()
    cursors = [await store.publish_delta("r", num(i), publish_id=pid()) for i in range(1, 6)]
    assert await store.save_snapshot(num(0), {"a": 1}, watermark=START, expected_watermark=None)
    # A second "first" base and a stale expectation both lose, changing nothing.
    assert not await store.save_snapshot(num(9), {}, watermark=START, expected_watermark=None)
    assert not await store.save_snapshot(
        num(9), {}, watermark=cursors[1], expected_watermark=cursors[0]
    )
    base = await store.load_snapshot()
    assert base is not None and (unnum(base.data), base.watermark, base.meta) == (
        0,
        START,
        {"a": 1},
    )
    assert await store.save_snapshot(
        num(1 + 2 + 3), {"b": 2}, watermark=cursors[2], expected_watermark=START
    )
    base = await store.load_snapshot()
    assert base is not None and base.watermark == cursors[2] and base.meta == {"b": 2}
    assert [unnum(d.data) for d in await store.read_all_deltas(cursors[2])] == [4, 5]
    assert (await store.storage_stats()).delta_count == 2
    assert await total_state(store) == 15


async def test_reader_behind_the_base_gets_a_gap(make: Callable[[], PolicyStateStore]) -> None:
    store = make()
    cursors = [await store.publish_delta("r", num(i), publish_id=pid()) for i in range(4)]
    assert await store.save_snapshot(num(1), {}, watermark=cursors[1], expected_watermark=None)
    with pytest.raises(DeltaGap) as gap:
        await store.read_deltas(cursors[0])
    assert gap.value.watermark == cursors[1]
    assert [unnum(d.data) for d in await store.read_deltas(cursors[1])] == [2, 3]


async def test_compaction_is_exact_and_respects_age(make: Callable[[], PolicyStateStore]) -> None:
    store = make()
    for i in range(1, 101):
        await store.publish_delta(f"r{i % 2}", num(i), publish_id=pid())
    # Deltas younger than the minimum age stay in the log for replicas that lag.
    assert await store.compact(SumFolder(), min_age_s=3600.0) is None
    result = await store.compact(SumFolder(), min_age_s=0.0)
    assert result is not None and result.folded == 100
    stats = await store.storage_stats()
    assert stats.delta_count == 0 and stats.watermark == result.watermark
    await store.publish_delta("r", num(1000), publish_id=pid())
    assert await total_state(store) == 5050 + 1000
    result = await store.compact(SumFolder(), min_age_s=0.0)
    assert result is not None and result.folded == 1
    base = await store.load_snapshot()
    assert base is not None and unnum(base.data) == 6050 and base.meta == {"kind": "sum"}
    assert await store.compact(SumFolder(), min_age_s=0.0) is None  # nothing left to fold


async def test_concurrent_publishers_and_compactors_lose_nothing(
    make: Callable[[], PolicyStateStore],
) -> None:
    stores = [make() for _ in range(3)]
    expected = 0

    async def publisher(k: int) -> int:
        added = 0
        for i in range(40):
            await stores[k % 3].publish_delta(f"r{k}", num(k * 1000 + i), publish_id=pid())
            added += k * 1000 + i
        return added

    async def compactor(k: int) -> None:
        for _ in range(15):
            await stores[k].compact(SumFolder(), min_age_s=0.0)
            await asyncio.sleep(0.005)

    results = await asyncio.gather(
        *(publisher(k) for k in range(6)), *(compactor(k) for k in range(3))
    )
    expected = sum(r for r in results if isinstance(r, int))
    assert await total_state(stores[0]) == expected
    await stores[1].compact(SumFolder(), min_age_s=0.0)
    assert await total_state(stores[2]) == expected
    assert (await stores[0].storage_stats()).delta_count == 0


async def test_a_retried_publish_is_appended_once(make: Callable[[], PolicyStateStore]) -> None:
    first, second = make(), make()
    cursor = await first.publish_delta("r", num(7), publish_id="r:1")
    # The acknowledgement was lost; the retry (maybe on a new connection) must not add it again.
    assert await second.publish_delta("r", num(7), publish_id="r:1") == cursor
    assert await first.publish_delta("r", num(1), publish_id="r:2") != cursor
    assert await total_state(first) == 8


async def test_lock_is_exclusive_until_released(make: Callable[[], PolicyStateStore]) -> None:
    first, second = make(), make()
    token = await first.try_lock("compact", 30.0)
    assert token is not None
    assert await second.try_lock("compact", 30.0) is None
    await second.unlock("compact", "not-the-owner")
    assert await second.try_lock("compact", 30.0) is None
    await first.unlock("compact", token)
    again = await second.try_lock("compact", 30.0)
    assert again is not None
    await second.unlock("compact", again)


async def test_compaction_skips_while_another_replica_holds_the_lock(
    make: Callable[[], PolicyStateStore],
) -> None:
    first, second = make(), make()
    await first.publish_delta("r", num(5), publish_id=pid())
    token = await first.try_lock("compact", 30.0)
    assert token is not None
    assert await second.compact(SumFolder(), min_age_s=0.0) is None
    await first.unlock("compact", token)
    assert await second.compact(SumFolder(), min_age_s=0.0) is not None


async def test_unreachable_redis_is_unavailable_with_a_clear_message() -> None:
    store = RedisPolicyStateStore.from_url(
        f"redis://127.0.0.1:{closed_port()}/0", namespace=unique_namespace()
    )
    try:
        with pytest.raises(Unavailable, match=r"policy state store redis.*publish a policy delta"):
            await store.publish_delta("r", b"x", publish_id=pid())
        with pytest.raises(Unavailable, match="cannot read policy deltas"):
            await store.read_deltas(START)
    finally:
        await store.close()


async def test_unreachable_postgres_is_unavailable_with_a_clear_message() -> None:
    url = POSTGRES_URL.replace(":5440/", f":{closed_port()}/")
    store = PostgresPolicyStateStore(url, namespace=unique_namespace())
    try:
        with pytest.raises(Unavailable, match=r"policy state store postgresql.*load the base"):
            await store.load_snapshot()
        with pytest.raises(Unavailable, match="cannot lock"):
            await store.try_lock("compact", 1.0)
    finally:
        await store.close()


def test_open_state_store_picks_the_backend_from_the_url(tmp_path: Path) -> None:
    assert open_state_store("memory://").shared is False
    sqlite = open_state_store(f"sqlite:///{tmp_path}/x.db", namespace="ns")
    assert isinstance(sqlite, SqlitePolicyStateStore) and sqlite.path == tmp_path / "x.db"
    assert sqlite.base_table == "ns_policy_base"
    redis = open_state_store("redis://127.0.0.1:1/0", namespace="app1")
    assert isinstance(redis, RedisPolicyStateStore) and redis.base_key == "app1:policy:base"
    pg = open_state_store("postgresql://u@127.0.0.1:1/db")
    assert isinstance(pg, PostgresPolicyStateStore)
    assert (pg.base_table, pg.deltas_table) == ("conduit_policy_base", "conduit_policy_deltas")
    with pytest.raises(ValueError, match="store_url"):
        open_state_store("mysql://x")
    with pytest.raises(ValueError, match="namespace"):
        open_state_store("postgresql://u@h/db", namespace="Bad-Name;")


async def test_a_full_sqlite_database_reports_that_it_is_full(tmp_path: Path) -> None:
    # SQLite rolls a transaction back itself on SQLITE_FULL; the store's own ROLLBACK then
    # raised "cannot rollback - no transaction is active" in place of the real cause. The
    # database is made full by SQLite's own page limit on the store's real connection.
    store = SqlitePolicyStateStore(tmp_path / "state.db")
    await store.initialize()
    try:
        db = store._db
        assert db is not None
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(Unavailable, match="database or disk is full"):
            await store.publish_delta("r1", b"x" * 200_000, publish_id="p1")
        db.execute("PRAGMA max_page_count = 1073741823")
        # Nothing half-written, and the store works again once there is room.
        assert await store.read_deltas(START) == []
        await store.publish_delta("r1", b"x" * 200_000, publish_id="p1")
        assert len(await store.read_deltas(START)) == 1
    finally:
        await store.close()
