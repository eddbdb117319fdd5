"""TCP relays in front of a real server, for tests of failures that loopback cannot otherwise
produce without stopping the shared test server: a hung server or a partition
(FreezableRelay), a lost acknowledgement (CommitReplyDropper), an outage and its end
(SwitchableRelay). Relay is their common accept loop and pumps; each variant only says what
it does to a new connection (_admit) and to the bytes it carries (_forward).
postgres_store_behind gives a feedback store of its own schema reaching PostgreSQL through
one of them."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self
from urllib.parse import urlsplit

import asyncpg

from conduit_sidecar.feedback import PostgresFeedbackStore

# One relayed connection: the client's socket and the server's.
Connection = tuple[socket.socket, socket.socket]


class Relay:
    """A TCP relay on 127.0.0.1 to a real server that forwards everything as it comes."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    @classmethod
    def to(cls, url: str) -> Self:
        """A relay to the server that `url` names (its host and port)."""
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"url names no host and port: {url!r}")
        return cls(parts.hostname, parts.port)

    def relayed(self, url: str) -> str:
        """`url` with this relay in place of its host and port (user and path kept)."""
        parts = urlsplit(url)
        user = parts.netloc.rpartition("@")[0]
        here = f"127.0.0.1:{self.port}"
        return parts._replace(netloc=f"{user}@{here}" if user else here).geturl()

    def _admit(self) -> bool:
        """Whether a new connection is relayed (False: it is closed at once)."""
        return True

    def _forward(self, data: bytes, from_client: bool, connection: Connection) -> bool:
        """Whether `data` (b"": the end of the stream) goes on to the other side. It may block
        to hold the bytes; it runs on the pump thread of that direction."""
        return True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                if not self._admit():
                    client.close()
                    continue
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self.sockets += [client, upstream]
            for src, dst, from_client in ((client, upstream, True), (upstream, client, False)):
                args = (src, dst, from_client, (client, upstream))
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, from_client: bool, connection: Connection
    ) -> None:
        try:
            while True:
                data = src.recv(65536)
                forward = self._forward(data, from_client, connection)
                if not data:
                    if forward:
                        dst.shutdown(socket.SHUT_WR)
                    return
                if forward:
                    dst.sendall(data)
        except OSError:  # a socket closed under the pump (close, cut): this direction ends
            return

    def close(self) -> None:
        self.closed.set()
        for sock in (self.listener, *self.sockets):
            sock.close()


class FreezableRelay(Relay):
    """A relay that can stop forwarding: a network partition or a hung server (connections
    stay open, no byte arrives, not even the end of a stream) while `frozen` is set."""

    def __init__(self, host: str, port: int) -> None:
        self.frozen = threading.Event()
        super().__init__(host, port)

    def _forward(self, data: bytes, from_client: bool, connection: Connection) -> bool:
        while self.frozen.is_set() and not self.closed.is_set():
            time.sleep(0.05)  # hold the bytes: nothing reaches the other side
        return not self.closed.is_set()


class CommitReplyDropper(Relay):
    """A relay to PostgreSQL that, once `armed`, forwards the next COMMIT and drops every byte
    the server sends back on that connection: the transaction commits, its acknowledgement
    never arrives (the client times out)."""

    def __init__(self, host: str, port: int) -> None:
        self.armed = threading.Event()
        self.muted: set[Connection] = set()  # connections whose replies are dropped
        super().__init__(host, port)

    def _forward(self, data: bytes, from_client: bool, connection: Connection) -> bool:
        if not from_client:
            return connection not in self.muted
        if self.armed.is_set() and b"COMMIT" in data:
            self.armed.clear()
            self.muted.add(connection)  # before the COMMIT leaves: its reply is dropped
        return True


class SwitchableRelay(Relay):
    """A relay that can be cut (open connections drop, new ones are closed as soon as they
    are accepted) and restored (`down` cleared), without stopping the shared server."""

    def __init__(self, host: str, port: int) -> None:
        self.down = threading.Event()
        super().__init__(host, port)

    def _admit(self) -> bool:
        return not self.down.is_set()

    def cut(self) -> None:
        self.down.set()
        live, self.sockets = self.sockets, []
        for sock in live:
            sock.close()


@asynccontextmanager
async def postgres_store_behind(
    relay: Relay, url: str, **options: Any
) -> AsyncIterator[PostgresFeedbackStore]:
    """A PostgresFeedbackStore (`options` passed on) in a schema of its own on the server of
    `url`, reached through `relay`. On exit the store and the relay close, then the schema is
    dropped over a direct connection."""
    schema = f"conduit_test_{uuid.uuid4().hex[:12]}"
    store = PostgresFeedbackStore(relay.relayed(url), schema=schema, **options)
    try:
        yield store
    finally:
        await store.close()
        relay.close()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()
