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
from collections.abc import Iterator
from pathlib import Path

import pytest
from sync_backends import closed_port
from sync_cluster import outage_fails_fast_then_recovers

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


def test_postgres_restart_fails_fast_then_recovers_without_restart(
    postgres: PrivatePostgres, tmp_path: Path
) -> None:
    # The bound is the store's connect timeout: a PostgreSQL reconnect attempt takes longer
    # to give up than a Redis one.
    outage_fails_fast_then_recovers(
        tmp_path, postgres, postgres.url, "conduit", call_timeout_s=20, fail_bound_s=12.0
    )
