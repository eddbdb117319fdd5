"""Replicas that agree, with real processes: three `conduit-sidecar serve` processes on one
Redis (and on one PostgreSQL), a kill -9 under load, and a Redis stopped under load.

The expected statistics come from a single in-process Router + FeedbackCollector that replays
the same decisions and signals sequentially (DESIGN section 2: the replicas' sums must add up
to exactly that).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_fixtures import Sidecar
from sync_backends import POSTGRES_URL, REDIS_URL, unique_namespace

from conduit_sidecar._proto import conduit_pb2 as pb
from conduit_sidecar.feedback import FeedbackCollector, FeedbackEvent, builtin_adapters
from conduit_sidecar.query import RoutingDecision
from conduit_sidecar.reward import PRESETS
from conduit_sidecar.router import Router
from conduit_sidecar.sync.postgres_store import PostgresPolicyStateStore
from conduit_sidecar.sync.redis_store import RedisPolicyStateStore

SYNC_S = "0.2"
STORES = {"redis": REDIS_URL, "postgres": POSTGRES_URL}


@dataclass
class Routed:
    """What a client saw for one query: enough to replay it in one process."""

    query_id: str
    model: str
    features: list[float]
    cost_usd: float
    latency_s: float
    thumbs: str


def thumbs(query_id: str, value: str) -> pb.RecordFeedbackRequest:
    payload = struct_pb2.Struct()
    payload.update({"value": value})
    return pb.RecordFeedbackRequest(query_id=query_id, signal_type="thumbs", payload=payload)


def route(stub: Any, i: int) -> Routed:
    text = f"question {i}: {['sort a list', 'prove a lemma', 'write a haiku'][i % 3]} #{i}"
    response = stub.Route(pb.RouteRequest(text=text, include_features=True), timeout=10)
    return Routed(
        query_id=response.query_id,
        model=response.selected_model,
        features=list(response.features),
        cost_usd=0.0005 * (1 + i % 7),
        latency_s=0.3 + 0.1 * (i % 5),
        thumbs="up" if i % 3 else "down",
    )


def replay(routed: list[Routed]) -> dict[str, tuple[float, float]]:
    """(weight_sum, mean_reward) per model after one process applies everything in order."""

    async def run() -> dict[str, tuple[float, float]]:
        router = Router()
        collector = FeedbackCollector(router)
        for adapter in builtin_adapters():
            collector.register_adapter(adapter)
        for r in routed:
            decision = RoutingDecision(
                query_id=r.query_id,
                selected_model=r.model,
                confidence=0.5,
                features=r.features,
                scores={r.model: 0.0},
                propensity=1.0,
                reasoning="replay",
                policy_version=0,
                reward_weights=PRESETS["balanced"],
                session_id=None,
                user_id=None,
                metadata={},
            )
            await collector.log_decision(decision)
            await collector.track(r.query_id, cost=r.cost_usd, latency=r.latency_s)
            await collector.record(FeedbackEvent(r.query_id, "thumbs", {"value": r.thumbs}))
        return {m: (s.weight_sum, s.mean_reward) for m, s in router.stats().items()}

    return asyncio.run(run())


def learned(stub: Any) -> dict[str, tuple[float, float]]:
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    return {m.model_id: (m.weight_sum, m.mean_reward) for m in stats.models}


def agree(got: dict[str, tuple[float, float]], want: dict[str, tuple[float, float]]) -> bool:
    return got.keys() == want.keys() and all(
        abs(got[m][0] - want[m][0]) <= 1e-9 and abs(got[m][1] - want[m][1]) <= 1e-9 for m in want
    )


def wait_until_agree(stubs: list[Any], want: dict[str, tuple[float, float]]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(agree(learned(s), want) for s in stubs):
            return
        time.sleep(0.1)
    for s in stubs:  # show the difference
        assert learned(s) == pytest.approx(want, abs=1e-9)


def routes_during_outage(stub: Any) -> None:
    """Route keeps answering from the local policy while the store is down, promptly."""
    for i in range(5):
        began = time.monotonic()
        assert stub.Route(pb.RouteRequest(text=f"during the outage {i}"), timeout=10).selected_model
        assert time.monotonic() - began < 5.0


def recovered(router_stub: Any, tracker_stub: Any, timeout_s: float = 20.0) -> Routed:
    """Routes on one replica and tracks on the other until both work again (the store is
    back); returns the first query that was routed, logged and tracked."""
    deadline = time.monotonic() + timeout_s
    i = 100
    while True:
        try:
            r = route(router_stub, i)
            tracker_stub.Track(
                pb.TrackRequest(query_id=r.query_id, cost_usd=r.cost_usd, latency_s=r.latency_s),
                timeout=10,
            )
            return r
        except grpc.RpcError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not recovered {timeout_s} s after the store returned: {exc.details()}"
                ) from exc
            time.sleep(0.2)
            i += 1


def start(tmp_path: Path, name: str, store_url: str, namespace: str, *extra: str) -> Sidecar:
    args = ["--store-url", store_url, "--state-namespace", namespace, "--sync-interval-s"]
    return Sidecar([*args, SYNC_S, *extra], tmp_path / f"{name}.log")


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh state namespace, whose Redis keys and PostgreSQL tables are removed after."""
    ns = unique_namespace()
    yield ns

    async def clean() -> None:
        for store in (
            RedisPolicyStateStore.from_url(REDIS_URL, namespace=ns),
            PostgresPolicyStateStore(POSTGRES_URL, namespace=ns),
        ):
            try:
                await store.delete_all()
            finally:
                await store.close()

    asyncio.run(clean())


@pytest.mark.parametrize("backend", ["redis", "postgres"])
def test_three_sidecars_count_each_signal_once_and_agree(
    backend: str, namespace: str, tmp_path: Path
) -> None:
    url = STORES[backend]
    sidecars = [start(tmp_path, f"s{k}", url, namespace) for k in range(3)]
    channels = [s.channel() for s in sidecars]
    try:
        first, second, third = (s.stub(c) for s, c in zip(sidecars, channels, strict=True))
        routed = [route(first, i) for i in range(24)]
        for r in routed:
            second.Track(
                pb.TrackRequest(query_id=r.query_id, cost_usd=r.cost_usd, latency_s=r.latency_s)
            )
            assert not second.RecordFeedback(thumbs(r.query_id, r.thumbs), timeout=10).duplicate
            again = third.RecordFeedback(thumbs(r.query_id, r.thumbs), timeout=10)
            assert again.duplicate  # the same signal on another replica counts once
        wait_until_agree([first, second, third], replay(routed))
    finally:
        for c in channels:
            c.close()
        for s in sidecars:
            assert s.terminate() == 0


def test_kill_9_under_load_loses_no_routed_query_and_counts_nothing_twice(
    namespace: str, tmp_path: Path
) -> None:
    # Zero loss window: a call's policy delta is in Redis before the call returns.
    victim = start(tmp_path, "victim", REDIS_URL, namespace, "--sync-interval-s", "0")
    peer = start(tmp_path, "peer", REDIS_URL, namespace, "--sync-interval-s", "0")
    channels = [victim.channel(), peer.channel()]
    restarted: Sidecar | None = None
    try:
        stub, peer_stub = victim.stub(channels[0]), peer.stub(channels[1])
        routed = [route(stub, i) for i in range(20)]
        for r in routed:
            stub.Track(
                pb.TrackRequest(query_id=r.query_id, cost_usd=r.cost_usd, latency_s=r.latency_s)
            )
        for r in routed[:10]:  # half of the feedback before the crash
            stub.RecordFeedback(thumbs(r.query_id, r.thumbs), timeout=10)

        stop = threading.Event()
        load_routed: list[Routed] = []  # routed under load, as the client saw them
        unacked: list[tuple[str, Routed]] = []  # calls that failed at the crash
        errors: list[str] = []

        def load() -> None:  # Route + Track + feedback until the victim dies
            i = 1000
            while not stop.is_set():
                try:
                    r = route(stub, i)
                except grpc.RpcError as exc:
                    errors.append(str(exc.code()))
                    break  # never acknowledged: the client does not know the query
                load_routed.append(r)
                for kind in ("track", "feedback"):
                    try:
                        if kind == "track":
                            track = pb.TrackRequest(
                                query_id=r.query_id, cost_usd=r.cost_usd, latency_s=r.latency_s
                            )
                            stub.Track(track, timeout=5)
                        else:
                            stub.RecordFeedback(thumbs(r.query_id, r.thumbs), timeout=5)
                    except grpc.RpcError as exc:
                        errors.append(str(exc.code()))
                        unacked.append((kind, r))
                        if kind == "track":
                            unacked.append(("feedback", r))
                        return
                i += 1

        thread = threading.Thread(target=load)
        thread.start()
        time.sleep(1.0)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        stop.set()
        thread.join(timeout=30)
        assert errors, "the load should have seen the crash"

        restarted = start(tmp_path, "restarted", REDIS_URL, namespace, "--sync-interval-s", "0")
        with restarted.channel() as channel:
            new = restarted.stub(channel)
            for r in routed[10:]:  # routed before the crash, feedback after it: still applies
                assert not new.RecordFeedback(thumbs(r.query_id, r.thumbs), timeout=10).duplicate
            for r in routed[:10]:  # a client retrying what it sent before the crash
                assert new.RecordFeedback(thumbs(r.query_id, r.thumbs), timeout=10).duplicate
            # The client retries what failed at the crash. A retried signal answered
            # `duplicate` had landed before the kill; its policy delta may or may not have been
            # published (docs/OPERATIONS.md: the one in-flight call), so both are accepted.
            ambiguous: list[Routed] = []
            for kind, r in unacked:
                if kind == "track":
                    new.Track(
                        pb.TrackRequest(
                            query_id=r.query_id, cost_usd=r.cost_usd, latency_s=r.latency_s
                        ),
                        timeout=10,
                    )
                elif new.RecordFeedback(thumbs(r.query_id, r.thumbs), timeout=10).duplicate:
                    ambiguous.append(r)
            assert len(load_routed) > 5, "too little load before the crash"
            everything = routed + load_routed
            candidates = [replay(everything)]
            if ambiguous:
                lost = {r.query_id for r in ambiguous}
                candidates.append(replay([r for r in everything if r.query_id not in lost]))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                states = [learned(new), learned(peer_stub)]
                if any(all(agree(st, want) for st in states) for want in candidates):
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"no agreement with the replay: {states} vs {candidates}")
    finally:
        for c in channels:
            c.close()
        victim.stop()
        if restarted is not None:
            assert restarted.terminate() == 0
        assert peer.terminate() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server this test owns (append-only file, so a restart keeps its data)."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.dir = directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_redis_outage_fails_fast_then_recovers_without_restart(tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path)
    ns = unique_namespace()
    sidecars = [start(tmp_path, f"s{k}", redis.url, ns) for k in range(2)]
    channels = [s.channel() for s in sidecars]
    try:
        a, b = (s.stub(c) for s, c in zip(sidecars, channels, strict=True))
        routed = [route(a, i) for i in range(6)]
        for r in routed:
            b.Track(
                pb.TrackRequest(query_id=r.query_id, cost_usd=r.cost_usd, latency_s=r.latency_s)
            )
            b.RecordFeedback(thumbs(r.query_id, r.thumbs), timeout=10)
        wait_until_agree([a, b], replay(routed))

        redis.stop()
        for call in (
            lambda: b.Track(
                pb.TrackRequest(query_id=routed[0].query_id, latency_s=1.0), timeout=10
            ),
            lambda: b.RecordFeedback(thumbs(routed[1].query_id, "down"), timeout=10),
        ):
            began = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
            assert time.monotonic() - began < 5.0  # fails fast, does not hang
            assert info.value.details()  # a message, not an empty status
        routes_during_outage(a)
        time.sleep(1.0)  # a few sync rounds fail meanwhile; the sidecars must keep running

        redis.start()
        more = [recovered(a, b)]
        r = more[0]
        assert not b.RecordFeedback(thumbs(r.query_id, r.thumbs), timeout=10).duplicate
        wait_until_agree([a, b], replay(routed + more))
        for s in sidecars:
            assert "policy sync recovered" in s.log(), s.log()
    finally:
        for c in channels:
            c.close()
        for s in sidecars:
            assert s.terminate() == 0
        redis.stop()


@pytest.mark.parametrize(("interval", "crash"), [("1", False), ("0", True)])
def test_learning_survives_a_restart_on_the_sqlite_default(
    interval: str, crash: bool, namespace: str, tmp_path: Path
) -> None:
    # SIGTERM publishes and snapshots whatever the interval; with interval 0 even kill -9
    # loses nothing, since every Update returned only after its delta was in the file.
    url = f"sqlite:///{tmp_path / 'conduit.db'}"
    first = start(tmp_path, "first", url, namespace, "--sync-interval-s", interval)
    with first.channel() as channel:
        stub = first.stub(channel)
        models = [m.id for m in stub.ListModels(pb.ListModelsRequest()).models]
        dim = len(stub.Route(pb.RouteRequest(text="dim", include_features=True)).features)
        for i in range(12):
            features = [1.0] + [((i * 7 + j) % 5) / 5 for j in range(dim - 1)]
            stub.Update(
                pb.UpdateRequest(
                    model_id=models[i % 3], cost_usd=0.001 * i, quality_score=(i % 4) / 4,
                    latency_s=0.5, features=features, confidence=0.5 + (i % 2) / 2,
                ),
                timeout=10,
            )  # fmt: skip
        before = learned(stub)
    if crash:
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        first.stop()
    else:
        assert first.terminate() == 0
    second = start(tmp_path, "second", url, namespace)
    try:
        with second.channel() as channel:
            assert agree(learned(second.stub(channel)), before)
    finally:
        assert second.terminate() == 0


def test_sidecar_refuses_a_snapshot_with_other_feature_settings(
    namespace: str, tmp_path: Path
) -> None:
    db = tmp_path / "conduit.db"
    first = start(tmp_path, "first", f"sqlite:///{db}", namespace, "--feature-dim", "32")
    assert first.terminate() == 0
    proc = subprocess.run(
        [*_serve_cmd(), "--store-url", f"sqlite:///{db}", "--state-namespace", namespace],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "feature_dim=32" in proc.stderr and "--feature-dim 32" in proc.stderr, proc.stderr
    assert f"{namespace}_policy_base" in proc.stderr


def _serve_cmd() -> list[str]:
    return [sys.executable, "-m", "conduit_sidecar", "serve", "--listen", "127.0.0.1:0"]
