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

from worker.celery_app import BULK_QUEUE, RING_QUEUE


class _ReadyWorkController(WorkController):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        self.ready.set()


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
        pool="threads",
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
        controller.stop(in_sighandler=False)
        thread.join(shutdown_timeout)
