"""A real Celery worker (threads pool) running inside this process.

Used by `callpush run` (embedded mode, in-memory broker) and by the tests against a real Redis.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from celery import Celery
from celery.worker import WorkController

from worker.runtime.amqp_broker import is_amqp
from worker.runtime.tasks import BULK_QUEUE, RING_QUEUE
from worker.runtime.thread_pool import ThreadPool


class _ReadyWorkController(WorkController):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        if self.hub is not None and is_amqp(self.app.conf.broker_url):
            # In the worker's thread, before its loop: the loop wakes this often, so it sees
            # a stop request (_stop_from_its_own_thread) at once, not at its next message.
            self.hub.call_repeatedly(STOP_CHECK_SECONDS, _nothing)  # type: ignore[attr-defined]
        self.ready.set()


# How soon an in-process AMQP worker notices it was asked to stop.
STOP_CHECK_SECONDS = 0.2


def _nothing() -> None:
    return None


@contextmanager
def inprocess_worker(
    app: Celery,
    *,
    queues: Sequence[str] = (RING_QUEUE, BULK_QUEUE),
    concurrency: int = 4,
    hostname: str = "callpush-embedded@localhost",
    startup_timeout: float = 30.0,
    shutdown_timeout: float = 30.0,
) -> Iterator[WorkController]:
    controller = _ReadyWorkController(
        app=app,
        pool=ThreadPool,
        concurrency=concurrency,
        queues=list(queues),
        hostname=hostname,
        loglevel="WARNING",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        prefetch_multiplier=1,
    )
    thread = threading.Thread(target=controller.start, name="celery-worker", daemon=True)
    thread.start()
    if not controller.ready.wait(startup_timeout):
        raise RuntimeError("the in-process Celery worker did not start")
    try:
        yield controller
    finally:
        # Warm shutdown: running tasks finish; unacked ones go back to the broker (acks_late).
        if is_amqp(app.conf.broker_url):
            _stop_from_its_own_thread(thread, shutdown_timeout)
        else:
            controller.stop(in_sighandler=False)
            thread.join(shutdown_timeout)


def _stop_from_its_own_thread(thread: threading.Thread, timeout: float) -> None:
    """An AMQP connection is not thread-safe: stopped from here, the consumer's basic.cancel
    waits for an answer the worker thread's event loop reads instead, until the socket's read
    timeout.  So the worker is asked to stop as a signal handler asks a `celery worker`
    (celery/apps/worker.py: ``state.should_stop``), and its own loop shuts it down."""
    from celery.worker import state

    state.should_stop = 0  # type: ignore[assignment]  # EX_OK: a warm shutdown
    try:
        thread.join(timeout)
    finally:
        state.should_stop = None  # the next worker of this process starts afresh
