"""Celery tasks: adapters that load by id and call one domain function.

The task functions are module-level and reach their app through ``self.app`` (bind=True): a
Celery app registers its tasks on every app in the process (shared tasks), so a closure over one
app would serve another app's messages with the wrong services.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celery import Celery, Task

from worker.delivery.event_processing import process_event
from worker.delivery.notifications import RetryLater, deliver_chunk
from worker.ops.metrics import enqueue_headers
from worker.runtime.amqp_broker import countdown_for

if TYPE_CHECKING:
    from worker.intake.publish_breaker import PublishBreaker

PROCESS_RING = "callpush.process_ring_event"
PROCESS_EVENT = "callpush.process_event"
DELIVER_CHUNK = "callpush.deliver_chunk"
SWEEP_INBOX = "callpush.sweep_inbox"
PURGE_OLD_EVENTS = "callpush.purge_old_events"


def process_ring_event(self: Task, event_id: int) -> str:
    from worker.runtime.celery_app import services_of

    return process_event(services_of(self.app), event_id)


def process_bulk_event(self: Task, event_id: int) -> str:
    from worker.runtime.celery_app import services_of

    try:
        return process_event(services_of(self.app), event_id)
    except RetryLater as later:
        # The domain bounds the attempts (fanout.max_retries) and picks the delay; the task is
        # registered with max_retries=None so Celery adds no bound of its own.  (Passing
        # max_retries=None to retry() does not do that: Celery reads it as "the task's
        # default", 3, and then fails the task with the event left "processing".)
        # A fresh stamp: the queue's age counts from when the retry is due (worker/ops/metrics.py).
        delay = countdown_for(self.app.conf.broker_url, later.delay)
        raise self.retry(countdown=delay, headers=enqueue_headers(delay)) from later


def deliver_fanout_chunk(self: Task, event_id: int, chunk_index: int) -> None:
    from worker.runtime.celery_app import services_of

    run = deliver_chunk(services_of(self.app), event_id, chunk_index, self.request.retries)
    if run.retry_in is not None:  # the domain bounds the attempts and picks the delay
        delay = countdown_for(self.app.conf.broker_url, run.retry_in)
        raise self.retry(countdown=delay, headers=enqueue_headers(delay))


def sweep_inbox(self: Task) -> int:
    from worker.runtime.celery_app import services_of
    from worker.runtime.inbox_sweeper import requeue_unfinished

    services = services_of(self.app)
    sweeper = services.settings.sweeper
    return requeue_unfinished(
        services.db,
        self.app,
        older_than=timedelta(seconds=sweeper.min_age_seconds),
        max_attempts=sweeper.max_attempts,
    )


def purge_old_events(self: Task) -> dict[str, int]:
    from worker.ops.retention import purge_in_batches
    from worker.runtime.celery_app import services_of

    services = services_of(self.app)
    days = services.settings.retention.days
    if not days:  # 0 = keep events forever
        return {}
    return purge_in_batches(services.db, timedelta(days=days)).as_dict()


def register(app: Celery) -> None:
    from worker.runtime.celery_app import BULK_QUEUE, RING_QUEUE

    # Queues by route, not by the deprecated task attribute: rings alone on the ring queue.
    app.conf.task_routes = {
        PROCESS_RING: {"queue": RING_QUEUE},
        PROCESS_EVENT: {"queue": BULK_QUEUE},
        DELIVER_CHUNK: {"queue": BULK_QUEUE},
        SWEEP_INBOX: {"queue": BULK_QUEUE},
        PURGE_OLD_EVENTS: {"queue": BULK_QUEUE},
    }
    task = app.task
    task(name=PROCESS_RING, acks_late=True, bind=True)(process_ring_event)
    task(name=PROCESS_EVENT, acks_late=True, bind=True, max_retries=None)(process_bulk_event)
    task(name=DELIVER_CHUNK, acks_late=True, bind=True, max_retries=None)(deliver_fanout_chunk)
    task(name=SWEEP_INBOX, bind=True)(sweep_inbox)
    task(name=PURGE_OLD_EVENTS, bind=True)(purge_old_events)


def enqueue_event(app: Celery, event_id: int, event_type: str) -> None:
    """Queue an inbox event for processing: rings on the ring queue, the rest on bulk."""
    name, queue = _route(event_type)
    # The stamp is what the queue's age is read from (worker/ops/metrics.py).
    options: dict[str, Any] = {"queue": queue, "headers": enqueue_headers()}
    app.send_task(name, args=[event_id], **options)


def enqueue_event_guarded(
    app: Celery, breaker: PublishBreaker, event_id: int, event_type: str
) -> bool:
    """:func:`enqueue_event` through the broker's circuit breaker: False (and the event left
    in the inbox) when the broker failed or its circuit is open; never raises for that."""
    return breaker.publish(
        _route(event_type)[1],
        lambda: enqueue_event(app, event_id, event_type),
        (event_id, event_type),
    )


def _route(event_type: str) -> tuple[str, str]:
    from worker.runtime.celery_app import BULK_QUEUE, RING_QUEUE
    from worker.stream.events import RING

    return (PROCESS_RING, RING_QUEUE) if event_type == RING else (PROCESS_EVENT, BULK_QUEUE)


def enqueue_chunk(app: Celery, event_id: int, chunk_index: int) -> None:
    from worker.runtime.celery_app import BULK_QUEUE

    app.send_task(
        DELIVER_CHUNK, args=[event_id, chunk_index], queue=BULK_QUEUE, headers=enqueue_headers()
    )


def enqueue_replay(app: Celery, event_id: int) -> None:
    """A replayed event goes through the normal processing path, on the bulk queue even for a
    ring, so replaying last night's failures never delays a live ring."""
    from worker.runtime.celery_app import BULK_QUEUE

    app.send_task(PROCESS_EVENT, args=[event_id], queue=BULK_QUEUE, headers=enqueue_headers())
