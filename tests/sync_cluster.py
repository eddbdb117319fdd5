"""Helpers for the multi-process sync tests: sidecar processes, a client-side record of what
was routed, the single-process replay every replica must equal, and a private redis-server.

Expected statistics come from one in-process Router + FeedbackCollector replaying the same
decisions and signals sequentially (DESIGN section 2: the replicas' sums must add up to that).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_fixtures import Sidecar
from sync_backends import POSTGRES_URL, REDIS_URL

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


def clean_namespace(ns: str) -> None:
    """Removes a namespace's policy state from the shared Redis and PostgreSQL servers."""

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Keeps the Redis server busy for ARGV[1] microseconds (it runs one command at a time), as a
# slow command from another client does: commands arriving meanwhile wait in their sockets.
BUSY_SCRIPT = """
local t = redis.call('TIME')
local start = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = 0
while true do
  n = n + 1
  if n % 1000 == 0 then
    local u = redis.call('TIME')
    if tonumber(u[1]) * 1000000 + tonumber(u[2]) - start > tonumber(ARGV[1]) then break end
  end
end
return n
"""


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


class RouteLoad:
    """Route calls on every stub from a background thread while a fault happens; counts the
    answers and keeps every failure (Route must never fail because of the store)."""

    def __init__(self, stubs: list[Any]) -> None:
        self.stubs = stubs
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            stub = self.stubs[i % len(self.stubs)]
            try:
                stub.Route(pb.RouteRequest(text=f"load {i}: what is a monad?"), timeout=10)
                self.ok += 1
            except grpc.RpcError as exc:
                self.failures.append(f"{exc.code()}: {exc.details()}")
            i += 1

    def __enter__(self) -> RouteLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def outage_fails_fast_then_recovers(
    tmp_path: Path, store: Any, store_url: str, namespace: str, *, call_timeout_s: float,
    fail_bound_s: float,
) -> None:  # fmt: skip
    """The outage scenario shared by the Redis and PostgreSQL tests.

    `store` is a private server with stop()/start(). Two sidecars learn from six signals and
    agree; then, under continuous Route load on both, the store stops: Track and
    RecordFeedback must fail with UNAVAILABLE within `fail_bound_s` and a message, Route keeps
    answering; the store returns and everything works again without restarting the sidecars,
    and both replicas equal a one-process replay.
    """
    sidecars = [start(tmp_path, f"s{k}", store_url, namespace) for k in range(2)]
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

        with RouteLoad([a, b]) as load:  # Route traffic on both replicas throughout
            store.stop()
            for call in (
                lambda: b.Track(
                    pb.TrackRequest(query_id=routed[0].query_id, latency_s=1.0),
                    timeout=call_timeout_s,
                ),
                lambda: b.RecordFeedback(
                    thumbs(routed[1].query_id, "down"), timeout=call_timeout_s
                ),
            ):
                began = time.monotonic()
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
                assert time.monotonic() - began < fail_bound_s  # fails fast, does not hang
                assert info.value.details()  # a message, not an empty status
            routes_during_outage(a)
            time.sleep(1.0)  # a few sync rounds fail meanwhile; the sidecars keep running

            store.start()
            more = [recovered(a, b)]
        assert load.failures == [], load.failures[:5]
        assert load.ok > 20
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
