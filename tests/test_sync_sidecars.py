"""Replicas that agree, with real processes: three `conduit-sidecar serve` processes on one
Redis (and on one PostgreSQL), a kill -9 under load, restarts on the SQLite default, and a
snapshot written with other feature settings refused at start.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_fixtures import Sidecar
from sync_backends import REDIS_URL, unique_namespace
from sync_cluster import (
    STORES,
    Routed,
    agree,
    clean_namespace,
    learned,
    replay,
    route,
    start,
    thumbs,
    wait_until_agree,
)

from conduit_sidecar._proto import conduit_pb2 as pb


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh state namespace, whose Redis keys and PostgreSQL tables are removed after."""
    ns = unique_namespace()
    yield ns
    clean_namespace(ns)


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


def _catalogue(path: Path, ids: list[str]) -> str:
    models = [
        {
            "id": model_id,
            "provider": "test",
            "input_usd_per_mtok": 1.0,
            "output_usd_per_mtok": 2.0,
            "expected_latency_s": 1.0,
            "quality_prior": 0.5,
        }
        for model_id in ids
    ]
    path.write_text(json.dumps({"models": models}))
    return str(path)


def test_a_changed_catalogue_keeps_what_remains(namespace: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conduit.db'}"
    old = _catalogue(tmp_path / "old.json", ["keep-a", "keep-b", "retired"])
    first = start(tmp_path, "first", url, namespace, "--catalogue", old)
    with first.channel() as channel:
        stub = first.stub(channel)
        dim = len(stub.Route(pb.RouteRequest(text="dim", include_features=True)).features)
        for i, model in enumerate(["keep-a", "keep-b", "retired"] * 3):
            features = [1.0] + [(i % 3) / 3] * (dim - 1)
            stub.Update(
                pb.UpdateRequest(
                    model_id=model, cost_usd=0.001, quality_score=0.3 * (i % 3), latency_s=1.0,
                    features=features,
                ),
                timeout=10,
            )  # fmt: skip
        before = learned(stub)
    assert first.terminate() == 0
    new = _catalogue(tmp_path / "new.json", ["keep-a", "keep-b", "newcomer"])
    second = start(tmp_path, "second", url, namespace, "--catalogue", new)
    try:
        with second.channel() as channel:
            after = learned(second.stub(channel))
        assert set(after) == {"keep-a", "keep-b", "newcomer"}
        for model in ("keep-a", "keep-b"):
            assert after[model] == pytest.approx(before[model], abs=1e-9)
        assert after["newcomer"][0] == 0.0
        log = second.log()
        assert "catalogue changed" in log and "retired" in log and "newcomer" in log
    finally:
        assert second.terminate() == 0
