"""A client-side bound on every wait for a PostgreSQL answer.

PostgreSQL's ``statement_timeout`` bounds a statement only while the server works; libpq and
psycopg wait for an answer without any limit.  A database host that stops answering while the
kernel still acknowledges the bytes (a frozen server, a stalled proxy) would hold the waiting
thread forever: TCP keepalives and ``tcp_user_timeout`` only catch a peer that stops
acknowledging.  So every statement, commit and rollback is watched: one that has no answer after
``limit`` seconds gets its socket shut down from a watchdog thread, the driver's wait returns
with "server closed the connection unexpectedly" (an ``OperationalError``), and SQLAlchemy
discards the connection.

Cost on the ring path: a dict insert and delete per statement, no round trip.  The watchdog
wakes a few times a second and only looks at the statements in flight.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("callpush.database")


class StallGuard:
    def __init__(self, limit: float, *, resolution: float = 0.1) -> None:
        self.limit = limit
        self._resolution = resolution
        self._armed: dict[int, tuple[float, int]] = {}  # token -> (deadline, socket fd)
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.fired = 0  # connections cut so far (for tests and the log)

    @contextmanager
    def watching(self, fd: int) -> Iterator[None]:
        """Bound the wait for the server's answer inside the block."""
        token = next(self._tokens)
        with self._lock:
            self._armed[token] = (time.monotonic() + self.limit, fd)
            self._ensure_watchdog()
        try:
            yield
        finally:
            # Under the lock: once this returns, the watchdog can no longer cut this socket,
            # which the pool may hand to another thread next.
            with self._lock:
                self._armed.pop(token, None)

    def close(self) -> None:
        self._stop.set()

    def _ensure_watchdog(self) -> None:
        # After a fork the parent's thread is gone: start one in this process.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="db-stall-guard", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self._resolution):
            now = time.monotonic()
            with self._lock:
                for token, (deadline, fd) in list(self._armed.items()):
                    if now >= deadline:
                        del self._armed[token]
                        self.fired += 1
                        _cut(fd)
                        log.error(
                            "database: no answer within %.1f s; connection closed", self.limit
                        )


def _cut(fd: int) -> None:
    """Shut the connection's socket down without closing the driver's descriptor: the blocked
    wait sees end-of-file and fails; the driver closes its descriptor itself."""
    try:
        duplicate = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        duplicate.close()


def guard_dialect(dialect: Any, guard: StallGuard) -> None:
    """Route the dialect's statement, commit and rollback calls through ``guard``.

    SQLAlchemy has events for executes (``do_execute``) but none for commit and rollback, so
    the five ``Dialect.do_*`` methods of this engine's dialect instance are wrapped."""

    def fileno_of_cursor(cursor: Any) -> int:
        return int(cursor.connection.fileno())

    def fileno_of_connection(connection: Any) -> int:
        return int(connection.fileno())

    def wrap(name: str, fileno: Callable[[Any], int]) -> None:
        original = getattr(dialect, name)

        def guarded(target: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                fd = fileno(target)
            except Exception:  # already closed: nothing to wait on, let the driver say so
                return original(target, *args, **kwargs)
            with guard.watching(fd):
                return original(target, *args, **kwargs)

        setattr(dialect, name, guarded)

    for name in ("do_execute", "do_execute_no_params", "do_executemany"):
        wrap(name, fileno_of_cursor)
    for name in ("do_commit", "do_rollback"):
        wrap(name, fileno_of_connection)
