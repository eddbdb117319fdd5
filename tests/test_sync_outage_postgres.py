"""PostgreSQL restarted under two running sidecars: Track and RecordFeedback fail fast with
UNAVAILABLE while it is down, everything works again within seconds of its return without
restarting the sidecars, and the replicas' learned statistics agree with a one-process replay.

The test owns a private PostgreSQL cluster (initdb in a temporary directory, its own port)
so it can stop and start it without touching the shared test server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sync_backends import closed_port
from sync_cluster import (
    RouteLoad,
    recovered,
    replay,
    route,
    routes_during_outage,
    start,
    thumbs,
    wait_until_agree,
)

from conduit_sidecar._proto import conduit_pb2 as pb

PG_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def _as_postgres(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PrivatePostgres:
    def __init__(self) -> None:
        self.bin = PG_BINS[-1]
        self.dir = Path(tempfile.mkdtemp(prefix="conduit-pg-"))
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        self.port = closed_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            _as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-U", "conduit",
                          "--auth=trust", "-N"]),
            check=True, capture_output=True,
        )  # fmt: skip
        self.start()
        subprocess.run(
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "conduit",
             "-d", "postgres", "-qc", "CREATE DATABASE conduit"],
            check=True, capture_output=True,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://conduit@127.0.0.1:{self.port}/conduit"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", *args]),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off"
        self._ctl("-l", str(self.dir / "server.log"), "-o", options, "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        yield server
    finally:
        server.destroy()


@pytest.mark.skipif(not PG_BINS, reason="PostgreSQL server binaries not installed")
def test_postgres_restart_fails_fast_then_recovers_without_restart(
    postgres: PrivatePostgres, tmp_path: Path
) -> None:
    sidecars = [start(tmp_path, f"s{k}", postgres.url, "conduit") for k in range(2)]
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
            postgres.stop()
            for call in (
                lambda: b.Track(
                    pb.TrackRequest(query_id=routed[0].query_id, latency_s=1.0), timeout=20
                ),
                lambda: b.RecordFeedback(thumbs(routed[1].query_id, "down"), timeout=20),
            ):
                began = time.monotonic()
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
                assert time.monotonic() - began < 12.0  # bounded by the store's connect timeout
                assert info.value.details()
            routes_during_outage(a)
            time.sleep(1.0)  # sync rounds fail meanwhile; the sidecars keep running

            postgres.start()
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
