"""A TCP server that accepts connections and never answers: a database or broker host that hangs.

The kernel completes every TCP handshake and acknowledges every byte, so a client sees a healthy
socket whose peer just never writes: only the client's own timeouts can save it.  Switched to
forwarding (``forward_to(host, port)``), it relays new connections to a real server, so a test can
bring a dependency "back"; ``blackhole()`` switches it back, and connections relayed until then
stop moving in both directions (as when a server process freezes): the client's established,
pooled connections hang too.  ``drop()`` closes every connection instead, relayed or new (as
when a server process stops), until ``forward_to`` brings it back.

Use the ``blackhole`` fixture (tests/fakes/pytest_plugin.py) or :func:`running_blackhole`.
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Blackhole:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._target: tuple[str, int] | None = None
        self._dropping = False  # drop(): every connection is closed at once
        self._generation = 0  # bumped by every switch: relays of an older one stop moving
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept_loop, name="blackhole", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, template: str) -> str:
        """``template`` with ``{port}`` filled in, e.g. ``"redis://127.0.0.1:{port}/3"``."""
        return template.format(port=self.port)

    def forward_to(self, host: str, port: int) -> None:
        """From now on, relay new connections to ``host:port``."""
        with self._lock:
            self._target = (host, port)
            self._dropping = False
            self._generation += 1

    def blackhole(self) -> None:
        """From now on, accept and never answer; connections relayed so far freeze."""
        with self._lock:
            self._target = None
            self._dropping = False
            self._generation += 1

    def drop(self) -> None:
        """From now on, close every connection: those relayed so far and each new one at
        once, as a server process that stopped (its clients see the connection reset)."""
        with self._lock:
            self._target = None
            self._dropping = True
            self._generation += 1
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except BlockingIOError:
                self._stop.wait(0.01)
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                if self._dropping:
                    client.close()
                    continue
                self._sockets.append(client)
                target, generation = self._target, self._generation
            if target is not None:
                threading.Thread(
                    target=self._relay, args=(client, target, generation), daemon=True
                ).start()
            # Else: held open, never read from, never written to.

    def _relay(self, client: socket.socket, target: tuple[str, int], generation: int) -> None:
        try:
            upstream = socket.create_connection(target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            if self._generation != generation and self._dropping:  # dropped meanwhile
                client.close()
                upstream.close()
                return
            self._sockets.append(upstream)
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                if self._generation != generation:
                    # Switched: stop relaying but keep both ends open, so the client waits.
                    self._stop.wait()
                    return
                for key, _ in selector.select(timeout=0.05):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = source.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        client.close()
                        upstream.close()
                        return
                    try:
                        peers[source].sendall(data)
                    except BlockingIOError:
                        peers[source].setblocking(True)
                        peers[source].sendall(data)
                        peers[source].setblocking(False)
                    except OSError:
                        client.close()
                        upstream.close()
                        return


@contextmanager
def running_blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    try:
        yield hole
    finally:
        hole.close()
