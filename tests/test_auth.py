"""Bearer-token authentication over real gRPC: on (missing, wrong, right token; health exempt;
reflection protected) and off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_fixtures import Sidecar, SidecarExited, self_signed, sidecar
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conduit_sidecar._proto import conduit_pb2 as pb
from conduit_sidecar.auth import BearerTokenInterceptor, bearer_token
from conduit_sidecar.client import ConduitClient
from conduit_sidecar.errors import Unauthenticated, Unavailable
from conduit_sidecar.query import Query

__all__ = ["sidecar"]  # fixture imported for pytest
TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    log = tmp_path_factory.mktemp("auth") / "sidecar.log"
    # The token comes from the environment, as in the Kubernetes manifests.
    server = Sidecar(["--store-url", "memory://"], log, env={"CONDUIT_TOKEN": TOKEN})
    yield server
    server.terminate()


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def call_route(server: Sidecar, metadata: Any) -> pb.RouteResponse:
    with server.channel() as channel:
        response: pb.RouteResponse = server.stub(channel).Route(
            pb.RouteRequest(text="hello"), metadata=metadata, timeout=10
        )
        return response


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        (None, "missing"),
        (bearer("wrong"), "wrong"),
        ((("authorization", TOKEN),), "missing"),  # no "Bearer" scheme
        ((("authorization", "Bearer "),), "missing"),
    ],
)
def test_calls_without_the_right_token_are_unauthenticated(
    secured: Sidecar, metadata: Any, reason: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call_route(secured, metadata)
    error: Any = info.value
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details().startswith("authorization:") and reason in error.details()
    assert TOKEN not in error.details()


def test_the_right_token_is_served(secured: Sidecar) -> None:
    assert call_route(secured, bearer(TOKEN)).selected_model
    # The scheme is case-insensitive, as in HTTP.
    assert call_route(secured, (("authorization", f"bearer {TOKEN}"),)).selected_model


def test_health_is_exempt_so_kubelet_probes_work(secured: Sidecar) -> None:
    assert secured.health("") == health_pb2.HealthCheckResponse.SERVING
    assert secured.health("conduit.v1.ConduitService") == health_pb2.HealthCheckResponse.SERVING


def test_reflection_needs_the_token(secured: Sidecar) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with secured.channel() as channel:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(reflect.ServerReflectionInfo(iter([request]), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        (answer,) = reflect.ServerReflectionInfo(
            iter([request]), timeout=10, metadata=bearer(TOKEN)
        )
    assert answer.list_services_response.service


def test_auth_off_serves_anyone(sidecar: Sidecar) -> None:
    assert call_route(sidecar, None).selected_model
    assert call_route(sidecar, bearer("anything")).selected_model


def test_token_parsing_and_constant_time_check() -> None:
    assert bearer_token([("authorization", "Bearer abc ")]) == "abc"
    assert bearer_token([("x-other", "Bearer abc")]) is None
    assert bearer_token([("authorization", b"Bearer abc")]) == "abc"
    assert bearer_token([("authorization", "Basic abc")]) is None
    interceptor = BearerTokenInterceptor("abc")
    assert interceptor.check([("authorization", "Bearer abc")]) is None
    assert "wrong" in (interceptor.check([("authorization", "Bearer abd")]) or "")


def test_a_token_read_from_a_file_with_its_newline_still_matches(tmp_path: Path) -> None:
    # A token mounted from a Kubernetes Secret or written with `echo` ends in a newline. The
    # server strips what clients send (and a header value cannot carry a newline at all), so
    # a configured "token\n" used to match nothing: every call was UNAUTHENTICATED, and a
    # client given the same file's text failed before sending ("Invalid metadata").
    server = Sidecar(
        ["--store-url", "memory://"], tmp_path / "sidecar.log", env={"CONDUIT_TOKEN": TOKEN + "\n"}
    )
    try:
        assert call_route(server, bearer(TOKEN)).selected_model
        with ConduitClient(server.target, token=TOKEN + "\n") as client:
            assert client.route(Query(text="token from a file")).selected_model
        with pytest.raises(grpc.RpcError) as info:
            call_route(server, bearer(TOKEN + "x"))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        assert server.terminate() == 0


def test_blank_token_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(SidecarExited, match="token: must not be blank"):
        started = Sidecar([], tmp_path / "log", env={"CONDUIT_TOKEN": "   "})
        started.terminate()  # only reached if the blank token was accepted: do not leak it


def test_tls_with_token(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = Sidecar(
        ["--store-url", "memory://", "--tls-cert", str(cert), "--tls-key", str(key)],
        tmp_path / "sidecar.log",
        env={"CONDUIT_TOKEN": TOKEN},
    )
    try:
        assert "tls on" in server.log()
        roots = cert.read_bytes()
        with ConduitClient(server.target, token=TOKEN, root_certificates=roots) as client:
            assert client.route(Query(text="over TLS")).selected_model
        with ConduitClient(server.target, root_certificates=roots) as client:
            with pytest.raises(Unauthenticated):
                client.get_stats()
        # A plaintext client cannot talk to the TLS port.
        with ConduitClient(server.target, timeout_s=2.0, max_attempts=1) as client:
            with pytest.raises(Unavailable):
                client.get_stats()
    finally:
        assert server.terminate() == 0
