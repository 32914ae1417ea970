"""One asyncio event loop running in a daemon thread, for sync callers (Celery tasks, CLI).

aioapns is asyncio-only and its connection pool captures the loop it was built in
(push-libraries.md §1, "construct APNs inside the loop that will use it"), so a worker process keeps
one loop alive in a background thread and hands coroutines to it with ``run()``.

Fork safety: after ``fork()`` only the forking thread survives.  The loop thread is gone, and the
loop's selector and every socket it owns are shared with the parent, so the child must never touch
them (closing a TLS transport there would write to the parent's connection).  ``run()`` notices the
new pid, forgets the inherited loop without closing it, and starts a fresh one.  Whoever builds
objects inside the loop (ApnsProvider) must rebuild them when the loop changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class EventLoopThread:
    """Owns one event loop in one daemon thread; started lazily on first use."""

    def __init__(self, name: str = "callpush-asyncio") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        """True when this process's loop thread is running (never starts it)."""
        return (
            self._pid == os.getpid()
            and self._loop is not None
            and self._thread is not None
            and self._thread.is_alive()
        )

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop of this process, started if needed."""
        if self._pid != os.getpid():
            self._forget_inherited_loop()
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            return loop
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                self._loop, self._thread = self._start()
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` in the loop thread and wait for its result.

        On timeout the coroutine is cancelled inside the loop and :class:`TimeoutError` raised.
        """
        loop = self.loop
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("EventLoopThread.run() called from its own loop thread (deadlock)")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop, cancel what is still running in it, and join the thread."""
        if self._pid != os.getpid():
            self._forget_inherited_loop()
            return
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if thread.is_alive():
                logger.warning(
                    "event loop thread %s did not stop within %.1f s", self._name, timeout
                )

    def _forget_inherited_loop(self) -> None:
        # The parent's lock may have been held at fork time: replace it, never acquire it.
        self._lock = threading.Lock()
        self._loop = None
        self._thread = None
        self._pid = os.getpid()

    def _start(self) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(
            target=self._run_forever, args=(loop, ready), name=self._name, daemon=True
        )
        thread.start()
        ready.wait()
        return loop, thread

    @staticmethod
    def _run_forever(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
