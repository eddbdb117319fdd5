"""A TCP relay in front of a real server that can stop forwarding, for tests of a hung
server or a network partition."""

from __future__ import annotations

import socket
import threading
import time


class FreezableRelay:
    """A TCP relay to a real server that can stop forwarding: a network partition or a hung
    server (connections stay open, no byte arrives), which loopback cannot otherwise produce
    without stopping the shared test server."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
                while self.frozen.is_set() and not self.closed.is_set():
                    time.sleep(0.05)  # hold the bytes: nothing reaches the other side
                if not data or self.closed.is_set():
                    return
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.closed.set()
        for sock in (self.listener, *self.sockets):
            sock.close()
