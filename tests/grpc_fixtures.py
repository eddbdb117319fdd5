"""A real sidecar process for the gRPC tests: `python -m conduit_sidecar serve` on a free
loopback port (the server binds 127.0.0.1:0 and logs the port it got, so there is no
pick-then-bind race), with its log in a file so a chatty server never blocks on a pipe."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conduit_sidecar._proto import conduit_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
_PORT_LINE = re.compile(r"serving conduit\.v1\.ConduitService on [\d.]+:(\d+)")
_METRICS_LINE = re.compile(r"metrics (\d+)\)")
START_TIMEOUT_S = 30.0


class SidecarExited(RuntimeError):
    """The process exited before serving; the message holds its log."""


class Sidecar:
    """One `conduit-sidecar serve` process."""

    def __init__(self, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
        # The default store lives under $XDG_STATE_HOME: keep it inside the test's directory.
        full_env["XDG_STATE_HOME"] = str(log_path.parent / "state")
        full_env.update(env or {})
        self._log = open(log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conduit_sidecar", "serve", "--listen", "127.0.0.1:0", *args],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.port = self._wait_for_port()
        except BaseException:
            self.stop()
            raise
        self.target = f"127.0.0.1:{self.port}"
        match = _METRICS_LINE.search(self.log())
        self.metrics_port = int(match.group(1)) if match else None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            match = _PORT_LINE.search(self.log())
            if match:
                return int(match.group(1))
            if self.proc.poll() is not None:
                raise SidecarExited(f"sidecar exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"sidecar did not start within {START_TIMEOUT_S}s:\n{self.log()}")

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def stub(self, channel: grpc.Channel) -> Any:
        return conduit_pb2_grpc.ConduitServiceStub(channel)

    def health(self, service: str = "", metadata: Any = None) -> int:
        with self.channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=service)
            return int(stub.Check(request, timeout=5, metadata=metadata).status)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if not self._log.closed:
            self._log.close()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    """A module-wide sidecar on the in-memory store (fast; restarts are tested separately)."""
    log = tmp_path_factory.mktemp("sidecar") / "sidecar.log"
    server = Sidecar(["--store-url", "memory://", "--metrics-port", "0"], log)
    yield server
    server.terminate()


@pytest.fixture
def stub(sidecar: Sidecar) -> Iterator[Any]:
    with sidecar.channel() as channel:
        yield sidecar.stub(channel)


@contextmanager
def serving(servicer: Any) -> Iterator[str]:
    """A test's own ConduitService implementation (e.g. one that fails on purpose) served on a
    free loopback port; yields its target."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    conduit_pb2_grpc.add_ConduitServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost and its key, as PEM files."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key
