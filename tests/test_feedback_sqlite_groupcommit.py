"""Group commit in the SQLite feedback store (stores/sqlite.py, stores/sqlite_writer.py).

Commits are counted through the writer's instrumented `commits` counter, never by timing.
What another process would find in the file is read through a separate sqlite3 connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from conduit_sidecar import Query, Router
from conduit_sidecar.errors import NotFound, Unavailable
from conduit_sidecar.feedback import FeedbackCollector, FeedbackEvent, SqliteFeedbackStore
from conduit_sidecar.feedback.stores.sqlite_writer import GroupCommitWriter
from conduit_sidecar.query import RoutingDecision
from tests.test_stores import make_collector

REPO = Path(__file__).resolve().parents[1]


async def decisions(count: int, prefix: str = "q") -> list[RoutingDecision]:
    router = Router(models=["cheap-model", "mid-model", "strong-model"], feature_dim=16)
    return [await router.route(Query(text=f"{prefix} {i}")) for i in range(count)]


def in_file(path: Path) -> set[str]:
    """Query ids committed to the file, as another connection (or process) sees them."""
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT query_id FROM queries")}
    finally:
        conn.close()


async def test_200_concurrent_decisions_share_far_fewer_commits(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    store = SqliteFeedbackStore(path, decision_durability="commit")
    try:
        await store.initialize()
        batch = await decisions(200)
        before = store.writer.commits
        stored = await asyncio.gather(*(store.log_decision(d, 60.0) for d in batch))
        assert stored == [True] * 200
        commits = store.writer.commits - before
        assert 1 <= commits <= 20, commits  # one per group, not one per decision
        # Every call returned after the commit that contained it: all in the file already.
        assert in_file(path) == {d.query_id for d in batch}
        # The insert-unless-pending check still runs per decision inside the group.
        again = await asyncio.gather(*(store.log_decision(d, 60.0) for d in batch[:20]))
        assert again == [False] * 20
    finally:
        await store.close()


async def test_a_commit_mode_decision_is_in_the_file_when_the_call_returns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.db"
    store = SqliteFeedbackStore(path, decision_durability="commit", flush_interval_s=1.0)
    try:
        for d in await decisions(3):
            assert await store.log_decision(d, 60.0)
            assert d.query_id in in_file(path)
    finally:
        await store.close()


async def test_a_buffered_decision_is_found_by_an_immediate_track_and_feedback(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.db"
    # A long flush interval: the decision is certainly still queued when Track arrives.
    store = SqliteFeedbackStore(path, flush_interval_s=1.0)
    assert store.decision_durability == "buffered"  # the default
    collector = make_collector(store)
    try:
        first, decision = await decisions(2)
        await collector.log_decision(first)  # before its first commit the store makes it wait
        commits = store.writer.commits
        await collector.log_decision(decision)
        assert store.writer.commits == commits  # returned without a commit of its own
        assert decision.query_id not in in_file(path)  # still queued
        pending = await store.get(decision.query_id)  # read-your-writes through the queue
        assert pending is not None and pending.decision == decision
        await collector.track(decision.query_id, cost=0.001, latency=0.5)
        result = await collector.record(FeedbackEvent(decision.query_id, "thumbs", {"value": "up"}))
        assert not result.duplicate and result.applied_weight == 1.0
        assert decision.query_id in in_file(path)  # Track returned after its commit
    finally:
        await store.close()


async def test_closing_flushes_every_queued_decision(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    store = SqliteFeedbackStore(path, flush_interval_s=1.0)
    batch = await decisions(101)
    await store.log_decision(batch[0], 60.0)
    for d in batch[1:]:
        assert await store.log_decision(d, 60.0)
    assert len(in_file(path)) < 101  # some are still queued
    await store.close()
    assert in_file(path) == {d.query_id for d in batch}
    with pytest.raises(Unavailable, match="closed"):
        await store.log_decision(batch[0], 60.0)
    reopened = SqliteFeedbackStore(path)
    try:
        assert await reopened.pending_count() == 101
        for d in batch:
            pending = await reopened.get(d.query_id)
            assert pending is not None and pending.decision == d
    finally:
        await reopened.close()


async def test_buffered_decisions_keep_live_entries_and_replace_expired_ones(
    tmp_path: Path,
) -> None:
    store = SqliteFeedbackStore(tmp_path / "f.db", flush_interval_s=1.0)
    collector = make_collector(store)
    try:
        warm, live, old = await decisions(3)
        await collector.log_decision(warm)  # the first write waits for its commit
        await collector.log_decision(old, ttl_seconds=0.2)
        await collector.track(old.query_id, cost=0.001, ttl_seconds=0.2)
        await collector.record(FeedbackEvent(old.query_id, "thumbs", {"value": "up"}))
        await asyncio.sleep(0.3)  # `old` expires
        await collector.log_decision(live)
        commits = store.writer.commits
        other = dataclasses.replace(live, selected_model="strong-model", reasoning="other")
        renewed = dataclasses.replace(old, reasoning="logged again")
        for d in (other, renewed):  # one run of buffered decisions, one executemany
            assert await store.log_decision(d, 60.0)
        assert store.writer.commits == commits  # still queued
        kept = await store.get(live.query_id)
        assert kept is not None and kept.decision == live  # a live entry is left as is
        fresh = await store.get(old.query_id)
        assert fresh is not None and fresh.decision == renewed
        assert fresh.accumulators.quality_den == 0 and fresh.accumulators.cost_usd is None
        again = await collector.record(FeedbackEvent(old.query_id, "thumbs", {"value": "up"}))
        assert not again.duplicate  # the expired entry's marks went with it
    finally:
        await store.close()


async def test_a_commit_mode_decision_replaces_an_expired_one_and_its_marks(
    tmp_path: Path,
) -> None:
    store = SqliteFeedbackStore(tmp_path / "f.db", decision_durability="commit")
    collector = make_collector(store)
    try:
        (old,) = await decisions(1)
        await collector.log_decision(old, ttl_seconds=0.2)
        await collector.track(old.query_id, cost=0.001, ttl_seconds=0.2)
        await collector.record(FeedbackEvent(old.query_id, "thumbs", {"value": "up"}))
        await asyncio.sleep(0.3)  # `old` expires
        renewed = dataclasses.replace(old, reasoning="logged again")
        assert await store.log_decision(renewed, 60.0)
        fresh = await store.get(old.query_id)
        assert fresh is not None and fresh.decision == renewed
        assert fresh.accumulators.quality_den == 0 and fresh.accumulators.cost_usd is None
        again = await collector.record(FeedbackEvent(old.query_id, "thumbs", {"value": "up"}))
        assert not again.duplicate  # the expired entry's marks went with it
    finally:
        await store.close()


_CHILD = r"""
import asyncio, sys
from conduit_sidecar import Query, Router
from conduit_sidecar.feedback import SqliteFeedbackStore

async def main() -> None:
    store = SqliteFeedbackStore(sys.argv[1], decision_durability="commit")
    router = Router(models=["a", "b"], feature_dim=8)
    numbers = iter(range(10**9))

    async def worker() -> None:
        for i in numbers:
            decision = await router.route(Query(text=f"q{i}"))
            await store.log_decision(decision, 3600.0)
            sys.stdout.write(decision.query_id + "\n")  # acknowledged to "the client"
            sys.stdout.flush()

    await asyncio.gather(*(worker() for _ in range(20)))

asyncio.run(main())
"""


def test_every_returned_commit_mode_decision_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    acked: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        guard = threading.Timer(120, proc.kill)  # a hung child must not hang the suite
        guard.start()
        try:
            assert proc.stdout is not None and proc.stderr is not None
            for line in proc.stdout:
                acked.append(line.rstrip("\n"))
                if len(acked) >= 300:
                    proc.send_signal(signal.SIGKILL)  # writes in flight: no close, no flush
                    break
            acked += proc.stdout.read().split("\n")[:-1]  # complete lines only
            proc.wait(timeout=30)
            assert len(acked) >= 300, proc.stderr.read()
        finally:
            guard.cancel()
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == -signal.SIGKILL
    missing = set(acked) - in_file(path)
    assert not missing, f"{len(missing)} acknowledged decisions lost"


async def test_failing_writes_in_a_group_undo_only_themselves(tmp_path: Path) -> None:
    path = tmp_path / "t.db"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    writer = GroupCommitWriter(connect, str(path), flush_interval_s=0.0)
    try:
        await writer.call(lambda c: c.execute("CREATE TABLE t (v INTEGER)"), write=True)

        def write(i: int) -> Callable[[sqlite3.Connection], int]:
            def op(conn: sqlite3.Connection) -> int:
                conn.execute("INSERT INTO t VALUES (?)", (i,))
                if i % 3 == 0:
                    raise ValueError(f"refused {i}")  # after a write of its own
                return i

            return op

        before = writer.commits
        results = await asyncio.gather(
            *(writer.call(write(i), write=True) for i in range(60)), return_exceptions=True
        )
        for i, result in enumerate(results):
            if i % 3 == 0:
                assert isinstance(result, ValueError) and str(result) == f"refused {i}"
            else:
                assert not isinstance(result, BaseException) and result == i
        assert writer.commits - before < 30
        conn = connect()
        try:
            values = sorted(v for (v,) in conn.execute("SELECT v FROM t"))
        finally:
            conn.close()
        assert values == [i for i in range(60) if i % 3]
    finally:
        await writer.close()


async def test_lost_buffered_writes_are_logged_at_most_every_30_s(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A full disk fails every buffered batch while other writes still commit now and then:
    # one warning per batch flooded the log (536 lines in 12 s, measured by the ops audit).
    # Raising "disk is full" from the write itself stands in for the disk, which a test
    # cannot fill on the shared machine.
    path = tmp_path / "t.db"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def full(conn: sqlite3.Connection, items: list[object]) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    writer = GroupCommitWriter(connect, str(path), flush_interval_s=0.0)
    try:
        with caplog.at_level(logging.WARNING, logger="conduit_sidecar.feedback.stores"):
            for _ in range(40):
                await writer.call(lambda c: c.execute("PRAGMA user_version = 1"), write=True)
                assert writer.post(full, "decision")
                await writer.call(lambda c: None, write=False)  # behind the failed batch
        assert writer.lost == 40
        lines = [r for r in caplog.records if "were not stored" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in lines]
    finally:
        await writer.close()


async def test_group_members_keep_their_own_outcomes_and_duplicates_count_once(
    tmp_path: Path,
) -> None:
    store = SqliteFeedbackStore(tmp_path / "f.db", decision_durability="commit")
    collector = make_collector(store)
    try:
        await store.initialize()
        batch = await decisions(30)
        for d in batch:
            await collector.track(d)
        calls = [
            collector.record(FeedbackEvent(d.query_id, "thumbs", {"value": "up"}))
            for d in batch
            for _ in range(3)  # each signal three times: the retries of a client
        ] + [
            collector.record(FeedbackEvent(f"never-{i}", "thumbs", {"value": "up"}))
            for i in range(10)
        ]
        before = store.writer.commits
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert store.writer.commits - before < len(calls) // 2
        applied = [r for r in results[:90] if not isinstance(r, BaseException)]
        assert len(applied) == 90
        assert sum(not r.duplicate for r in applied) == 30  # one per query, whatever the group
        assert all(isinstance(r, NotFound) for r in results[90:])
        assert await store.signal_counts() == {"thumbs": 30}
    finally:
        await store.close()


async def test_an_unreachable_store_refuses_a_buffered_decision(tmp_path: Path) -> None:
    store = SqliteFeedbackStore(tmp_path / "missing-dir" / "f.db")
    collector = FeedbackCollector(
        Router(models=["cheap-model", "mid-model", "strong-model"], feature_dim=16), store
    )
    (decision,) = await decisions(1)
    # Not accepted silently: until a commit has succeeded, buffered callers wait.
    with pytest.raises(Unavailable, match="SQLite feedback store unreachable"):
        await collector.log_decision(decision)
    with pytest.raises(Unavailable):
        await collector.log_decision(decision)
    await store.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"decision_durability": "fsync"}, "decision_durability"),
        ({"flush_interval_s": -0.001}, "flush_interval_s"),
        ({"flush_interval_s": float("nan")}, "flush_interval_s"),
        ({"flush_interval_s": 5}, "flush_interval_s"),
    ],
)
def test_bad_settings_name_their_field(
    kwargs: dict[str, object], field: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=field):
        SqliteFeedbackStore(tmp_path / "f.db", **kwargs)  # type: ignore[arg-type]
