"""Celery tasks: adapters that load by id and call one domain function.

Each callpush Celery app registers its own tasks (``shared=False``, as Warehouse does), and a
task reaches its services through ``self.app``: the app that registered it, never a module
global.  Every task asks to run again the same way: the domain raises
:class:`~worker.foundation.handoff.RetryLater`, which bounds the attempts and picks the delay,
and the task turns it into ``self.retry``.

:class:`CeleryHandoff` is the Celery side of the domain's hand-off port: the one place that
knows task names, queues and message stamps.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, cast

from celery import Celery, Task

from worker.delivery.event_processing import process_event
from worker.delivery.notifications import deliver_chunk
from worker.delivery.services import Services
from worker.foundation.handoff import RetryLater
from worker.runtime.amqp_broker import countdown_for
from worker.runtime.inbox_sweeper import requeue_unfinished
from worker.runtime.queue_metrics import enqueue_headers
from worker.storage.retention import purge_in_batches
from worker.stream.events import RING

if TYPE_CHECKING:
    from worker.intake.publish_breaker import PublishBreaker
    from worker.runtime.celery_app import CallpushCelery

RING_QUEUE = "ring"
BULK_QUEUE = "bulk"

PROCESS_RING = "callpush.process_ring_event"
PROCESS_EVENT = "callpush.process_event"
DELIVER_CHUNK = "callpush.deliver_chunk"
SWEEP_INBOX = "callpush.sweep_inbox"
PURGE_OLD_EVENTS = "callpush.purge_old_events"
# The tasks whose first argument is an event id (the log context binds it).
EVENT_TASKS = (PROCESS_RING, PROCESS_EVENT, DELIVER_CHUNK)


def services_of(task: Task) -> Services:
    """The services of the app that registered ``task``."""
    return cast("CallpushCelery", task.app).services


def _run_again_later(task: Task, later: RetryLater) -> NoReturn:
    # The task is registered with max_retries=None so Celery adds no bound of its own (the
    # domain bounds the attempts).  (Passing max_retries=None to retry() does not do that:
    # Celery reads it as "the task's default", 3, and then fails the task with the event left
    # "processing".)  A fresh stamp: the queue's age counts from when the retry is due
    # (worker/runtime/queue_metrics.py).
    delay = countdown_for(task.app.conf.broker_url, later.delay)
    # Message headers are any JSON values (celery-types narrows them to strings).
    headers: Any = enqueue_headers(delay)
    raise task.retry(countdown=delay, headers=headers) from later


def process_ring_event(self: Task, event_id: int) -> str:
    # A ring is never retried by its task: its pushes retry inside it, until the ring is over.
    return process_event(services_of(self), event_id)


def process_bulk_event(self: Task, event_id: int) -> str:
    try:
        return process_event(services_of(self), event_id)
    except RetryLater as later:
        _run_again_later(self, later)


def deliver_fanout_chunk(self: Task, event_id: int, chunk_index: int) -> None:
    try:
        deliver_chunk(services_of(self), event_id, chunk_index, self.request.retries)
    except RetryLater as later:
        _run_again_later(self, later)


def sweep_inbox(self: Task) -> int:
    services = services_of(self)
    sweeper = services.settings.sweeper
    return requeue_unfinished(
        services.db,
        services.handoff,
        older_than=timedelta(seconds=sweeper.min_age_seconds),
        max_attempts=sweeper.max_attempts,
    )


def purge_old_events(self: Task) -> dict[str, int]:
    services = services_of(self)
    days = services.settings.retention.days
    if not days:  # 0 = keep events forever
        return {}
    return purge_in_batches(services.db, timedelta(days=days)).as_dict()


def register(app: Celery) -> None:
    """Register callpush's tasks on ``app`` alone (unshared: another app of the process, a test's
    say, never runs them with its services)."""
    # Queues by route, not by the deprecated task attribute: rings alone on the ring queue.
    app.conf.task_routes = {
        PROCESS_RING: {"queue": RING_QUEUE},
        PROCESS_EVENT: {"queue": BULK_QUEUE},
        DELIVER_CHUNK: {"queue": BULK_QUEUE},
        SWEEP_INBOX: {"queue": BULK_QUEUE},
        PURGE_OLD_EVENTS: {"queue": BULK_QUEUE},
    }
    task = app.task
    common: dict[str, Any] = {"bind": True, "shared": False}
    task(name=PROCESS_RING, acks_late=True, **common)(process_ring_event)
    task(name=PROCESS_EVENT, acks_late=True, max_retries=None, **common)(process_bulk_event)
    task(name=DELIVER_CHUNK, acks_late=True, max_retries=None, **common)(deliver_fanout_chunk)
    task(name=SWEEP_INBOX, **common)(sweep_inbox)
    task(name=PURGE_OLD_EVENTS, **common)(purge_old_events)


def route_of(event_type: str) -> tuple[str, str]:
    """The task and queue of a new event: rings on the ring queue, the rest on bulk."""
    return (PROCESS_RING, RING_QUEUE) if event_type == RING else (PROCESS_EVENT, BULK_QUEUE)


class CeleryHandoff:
    """The hand-off port (worker/foundation/handoff.py) on a Celery broker."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def queue_event(self, event_id: int, event_type: str) -> None:
        name, queue = route_of(event_type)
        # The stamp is what the queue's age is read from (worker/runtime/queue_metrics.py).
        self._app.send_task(name, args=[event_id], queue=queue, headers=enqueue_headers())

    def queue_chunk(self, event_id: int, chunk_index: int) -> None:
        self._app.send_task(
            DELIVER_CHUNK, args=[event_id, chunk_index], queue=BULK_QUEUE, headers=enqueue_headers()
        )

    def queue_replay(self, event_id: int) -> None:
        # On the bulk queue even for a ring, so replaying last night's failures never delays
        # a live ring.
        self._app.send_task(
            PROCESS_EVENT, args=[event_id], queue=BULK_QUEUE, headers=enqueue_headers()
        )

    def queue_event_guarded(self, breaker: PublishBreaker, event_id: int, event_type: str) -> bool:
        """:meth:`queue_event` through the broker's circuit breaker: False (and the event left
        in the inbox) when the broker failed or its circuit is open; never raises for that."""
        return breaker.publish(
            route_of(event_type)[1],
            lambda: self.queue_event(event_id, event_type),
            (event_id, event_type),
        )
