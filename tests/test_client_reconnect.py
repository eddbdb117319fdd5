"""How soon the clients notice that a sidecar is back: the wait between attempts and grpc's
own reconnection backoff are both capped at about a second."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from conduit_sidecar.client import MAX_BACKOFF_S, AsyncConduitClient, ConduitClient
from conduit_sidecar.errors import Unavailable


@pytest.fixture
def closing_listener() -> Iterator[tuple[int, list[float]]]:
    """A loopback port that accepts each TCP connection and closes it at once (a sidecar
    that is not up yet), recording when each connection attempt arrived."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    attempts: list[float] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # closed by the fixture
                return
            attempts.append(time.monotonic())
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], attempts
    server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close() alone does not)
    server.close()
    thread.join(timeout=5)


def test_the_wait_between_attempts_is_capped() -> None:
    # The doubling was uncapped: attempt 8 of a client with many attempts could wait 12.8 s,
    # and a client kept failing for 16 s after an 8 s outage had ended.
    client = ConduitClient(max_attempts=100, backoff_s=0.05)
    try:
        assert max(client._delay(attempt) for attempt in range(40) for _ in range(20)) <= 1.0
        assert MAX_BACKOFF_S == 1.0
    finally:
        client.close()


def test_the_channel_tries_to_reconnect_about_every_second(
    closing_listener: tuple[int, list[float]],
) -> None:
    # grpc's default reconnection backoff (1 s, then 1.6x, up to 120 s) made 3 attempts in
    # these 3 s, so a restarted sidecar went unnoticed for seconds: calls on a channel in
    # backoff fail at once without connecting. Now at least every 1.2 s (1 s, 20% jitter).
    port, attempts = closing_listener
    started = time.monotonic()
    with ConduitClient(f"127.0.0.1:{port}", timeout_s=3.0, max_attempts=1000) as client:
        with pytest.raises(Unavailable):
            client.get_stats()
    assert len(attempts) >= 5, [round(t - started, 2) for t in attempts]


async def test_the_async_client_reconnects_as_often(
    closing_listener: tuple[int, list[float]],
) -> None:
    port, attempts = closing_listener
    async with AsyncConduitClient(f"127.0.0.1:{port}", timeout_s=3.0, max_attempts=1000) as c:
        with pytest.raises(Unavailable):
            await c.list_models()
    assert len(attempts) >= 5
