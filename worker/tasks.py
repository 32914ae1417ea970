"""Celery tasks: adapters that load by id and call one domain function."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery, Task

from worker.event_processing import process_event
from worker.notifications import deliver_chunk

PROCESS_RING = "callpush.process_ring_event"
PROCESS_EVENT = "callpush.process_event"
DELIVER_CHUNK = "callpush.deliver_chunk"
SWEEP_INBOX = "callpush.sweep_inbox"


def register(app: Celery) -> None:
    from worker.celery_app import BULK_QUEUE, RING_QUEUE, services_of

    @app.task(name=PROCESS_RING, queue=RING_QUEUE, acks_late=True)
    def process_ring_event(event_id: int) -> str:
        return process_event(services_of(app), event_id)

    @app.task(name=PROCESS_EVENT, queue=BULK_QUEUE, acks_late=True)
    def process_bulk_event(event_id: int) -> str:
        return process_event(services_of(app), event_id)

    @app.task(name=DELIVER_CHUNK, queue=BULK_QUEUE, acks_late=True, bind=True, max_retries=None)
    def deliver_fanout_chunk(self: Task, event_id: int, chunk_index: int) -> None:
        run = deliver_chunk(services_of(app), event_id, chunk_index, self.request.retries)
        if run.retry_in is not None:  # the domain bounds the attempts and picks the delay
            raise self.retry(countdown=run.retry_in)

    @app.task(name=SWEEP_INBOX, queue=BULK_QUEUE)
    def sweep_inbox() -> int:
        from worker.inbox_sweeper import requeue_unfinished

        services = services_of(app)
        min_age = timedelta(seconds=services.settings.sweeper.min_age_seconds)
        return requeue_unfinished(services.db, app, older_than=min_age)


def enqueue_event(app: Celery, event_id: int, event_type: str) -> None:
    """Queue an inbox event for processing: rings on the ring queue, the rest on bulk."""
    from worker.celery_app import BULK_QUEUE, RING_QUEUE
    from worker.stream_events import RING

    name, queue = (PROCESS_RING, RING_QUEUE) if event_type == RING else (PROCESS_EVENT, BULK_QUEUE)
    options: dict[str, Any] = {"queue": queue}
    app.send_task(name, args=[event_id], **options)


def enqueue_chunk(app: Celery, event_id: int, chunk_index: int) -> None:
    from worker.celery_app import BULK_QUEUE

    app.send_task(DELIVER_CHUNK, args=[event_id, chunk_index], queue=BULK_QUEUE)


def enqueue_replay(app: Celery, event_id: int) -> None:
    """A replayed event goes through the normal processing path, on the bulk queue even for a
    ring, so replaying last night's failures never delays a live ring."""
    from worker.celery_app import BULK_QUEUE

    app.send_task(PROCESS_EVENT, args=[event_id], queue=BULK_QUEUE)
