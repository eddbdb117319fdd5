"""`conduit-sidecar serve | stats | demo`."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from grpc_fixtures import ROOT, Sidecar, self_signed, sidecar

from conduit_sidecar._proto import conduit_pb2 as pb
from conduit_sidecar.cli import main
from conduit_sidecar.demo import bar, run_demo

__all__ = ["sidecar"]  # fixture imported for pytest


def test_stats_prints_a_readable_table(sidecar: Sidecar) -> None:
    with sidecar.channel() as channel:
        stub = sidecar.stub(channel)
        decision = stub.Route(pb.RouteRequest(text="count me"))
        stub.Track(pb.TrackRequest(query_id=decision.query_id, cost_usd=0.004, latency_s=2.0))
    result = subprocess.run(
        [sys.executable, "-m", "conduit_sidecar", "stats", "--target", sidecar.target],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["model", "selections", "share", "mean", "reward", "weight",
                                "mean", "cost", "$", "mean", "lat", "s"]  # fmt: skip
    assert set(lines[1]) <= {"-", " "}
    row = next(line for line in lines if line.startswith(decision.selected_model + " "))
    assert "%" in row
    assert any(line.startswith("policy: linucb (version ") for line in lines)
    assert any(line.startswith("pending queries: ") for line in lines)


@pytest.mark.parametrize("unbuffered", [False, True])
def test_stats_into_a_closed_pipe_stops_quietly(sidecar: Sidecar, unbuffered: bool) -> None:
    # `conduit-sidecar stats | head -0`: the reader is gone before the table is written.
    # Buffered (the default for a pipe), the write fails only when stdout is flushed, at
    # the latest by the interpreter at exit; unbuffered, print() itself fails.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "conduit_sidecar", "stats", "--target", sidecar.target],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=60)
    assert stderr == b""
    assert proc.returncode == 141


def test_stats_without_a_sidecar_fails_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["stats", "--target", f"127.0.0.1:{port}", "--timeout-s", "1"])
    assert code == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_serve_refuses_bad_settings_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--policy", "greedy"]) == 2
    assert "policy: expected one of" in capsys.readouterr().err
    assert main(["serve", "--feature-dim", "x"]) == 2
    assert "feature_dim (--feature-dim): expected int" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        ("models: [\n", "is not valid"),
        ("models: []\n", "expected a non-empty list of models"),
        ('{"models": [{"id": "a"}]}', "models[0].provider"),
    ],
)
def test_serve_refuses_a_bad_catalogue_with_exit_code_2(
    tmp_path: Path, content: str, detail: str
) -> None:
    # docs/SIDECAR.md: a bad value stops the server with exit code 2 and a message naming the
    # setting. A catalogue file that exists but cannot be used exited 1 without naming it.
    catalogue = tmp_path / "models.yaml"
    catalogue.write_text(content, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "conduit_sidecar", "serve", "--listen", "127.0.0.1:0",
         "--store-url", "memory://", "--catalogue", str(catalogue)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("conduit-sidecar: catalogue: "), result.stderr
    assert detail in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "setting"),
    [(["--seed", "-1"], "seed"), (["--feature-dim", "4"], "feature_dim")],
)
def test_serve_refuses_settings_the_policy_refuses_with_exit_code_2(
    args: list[str], setting: str
) -> None:
    # Valid for the config, refused by the Router / core when the app is built: that
    # InvalidArgument exited 1.
    result = subprocess.run(
        [sys.executable, "-m", "conduit_sidecar", "serve", "--listen", "127.0.0.1:0",
         "--store-url", "memory://", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("conduit-sidecar: "), result.stderr
    assert f"{setting}: " in result.stderr and "Traceback" not in result.stderr


def test_stats_refuses_a_bad_timeout_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    # The client's ValueError used to escape main() as a traceback.
    for value in ("0", "inf"):
        assert main(["stats", "--target", "127.0.0.1:1", "--timeout-s", value]) == 2
        assert "timeout_s must be > 0" in capsys.readouterr().err


async def test_demo_shows_routing_shift_with_a_progress_bar() -> None:
    out = io.StringIO()
    assert await run_demo(rounds=100, seed=1, out=out) == 0
    text = out.getvalue()
    bars = [line for line in text.splitlines() if line.startswith("[")]
    assert len(bars) == 10
    assert bars[-1].startswith(bar(100, 100)) and "100/100" in bars[-1]
    assert "easy:" in bars[0] and "hard:" in bars[0]
    assert "feedback: thumbs=100" in text


def test_demo_refuses_too_few_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--rounds", "3"]) == 2
    assert "rounds: must be >= 10" in capsys.readouterr().err


def test_bar() -> None:
    assert bar(0, 10) == "[" + "-" * 24 + "]"
    assert bar(5, 10) == "[" + "#" * 12 + "-" * 12 + "]"


def _serve_fails(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conduit_sidecar", "serve", "--listen", "127.0.0.1:0",
         "--store-url", "memory://", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_files_that_are_not_text_are_one_line_errors(tmp_path: Path) -> None:
    # A config or catalogue file that is not UTF-8 (a binary, a Latin-1 export) escaped as a
    # UnicodeDecodeError traceback; a YAML error spanned four lines of the log.
    binary = tmp_path / "settings.yaml"
    binary.write_bytes(b"policy: \xe9t\xe9\n")
    unclosed = tmp_path / "unclosed.yaml"
    unclosed.write_text("policy: [linucb\n")
    for args, message in [
        (["--config", str(binary)], f"config: {str(binary)!r} is not UTF-8 text"),
        (["--catalogue", str(binary)], f"catalogue: {str(binary)!r} is not UTF-8 text"),
        (["--config", str(unclosed)], f"config: {str(unclosed)!r} is not valid YAML: expected"),
        (["--catalogue", str(tmp_path)], f"catalogue: not a regular file {str(tmp_path)!r}"),
    ]:
        result = _serve_fails(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"conduit-sidecar: {message}"), result.stderr
        assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback


def test_stats_against_a_tls_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `stats` had no TLS option at all: against a TLS-only sidecar it could only fail, with
    # a bare "Socket closed".
    cert, key = self_signed(tmp_path)
    server = Sidecar(
        ["--store-url", "memory://", "--tls-cert", str(cert), "--tls-key", str(key)],
        tmp_path / "sidecar.log",
    )
    try:
        target = ["stats", "--target", server.target, "--timeout-s", "2"]
        assert main([*target, "--root-cert", str(cert)]) == 0
        assert "pending queries: 0" in capsys.readouterr().out
        assert main(target) == 1  # plaintext to the TLS port: says what to try
        assert "if it serves TLS, pass --root-cert" in capsys.readouterr().err
        assert main([*target, "--root-cert", str(key)]) == 2  # a key is no certificate
        assert "root_cert: " in capsys.readouterr().err
        assert main([*target, "--root-cert", str(tmp_path / "none.pem")]) == 2
        assert "root_cert: cannot read" in capsys.readouterr().err
    finally:
        assert server.terminate() == 0


def test_json_logs_stay_json_when_clients_fail_the_tls_handshake(tmp_path: Path) -> None:
    # grpcio logged a plain-text INFO line per failed handshake into the JSON log: one per
    # reconnection attempt of a client that does not speak TLS (about one a second).
    cert, key = self_signed(tmp_path)
    server = Sidecar(
        ["--store-url", "memory://", "--json-logs", "--tls-cert", str(cert), "--tls-key", str(key)],
        tmp_path / "sidecar.log",
    )
    try:
        assert main(["stats", "--target", server.target, "--timeout-s", "2"]) == 1  # plaintext
    finally:
        assert server.terminate() == 0
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert all(line.startswith("{") for line in lines), lines
    assert [json.loads(line)["level"] for line in lines] == ["INFO"] * len(lines)
