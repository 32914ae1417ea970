"""Re-enqueue inbox events that were stored but never processed: the broker was down when they
arrived, or the process holding them died (embedded mode keeps its queue in memory).

Two ways in: the periodic sweep (``callpush beat``; events older than ``sweeper.min_age``) and
the drain a web process runs the moment the broker answers again after an outage
(:mod:`worker.publish_breaker`), so a ring stored meanwhile is queued within a second, not a
minute.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta

from celery import Celery
from sqlalchemy import select

from worker.storage.database import Database
from worker.storage.inbox import unfinished_events
from worker.storage.models import EventStatus, WebhookEvent
from worker.stream_events import RING
from worker.tasks import enqueue_event, enqueue_replay

log = logging.getLogger("callpush.sweeper")

# Publishes one event (id, type); False when it could not (the broker failed again).
PublishEvent = Callable[[int, str], bool]
# Ids per query of the drain (an IN list).
ID_BATCH = 1000


def requeue_unfinished(db: Database, celery: Celery, older_than: timedelta | None) -> int:
    with db.transaction() as session:
        unfinished = unfinished_events(session, older_than)
    for event_id, event_type, replayed in unfinished:
        if replayed:  # a replay stays on the bulk queue, never ahead of live rings
            enqueue_replay(celery, event_id)
        else:
            enqueue_event(celery, event_id, event_type)
    if unfinished:
        log.warning("re-enqueued %d unprocessed inbox events", len(unfinished))
    return len(unfinished)


def requeue_unpublished(db: Database, publish: PublishEvent, events: Mapping[int, str]) -> int:
    """Queue the given events (id -> type) that no worker has started meanwhile (still
    ``received``), rings first, oldest first; the rest are done or on their way.  Returns how
    many were published."""
    waiting: list[int] = []
    ids = sorted(events)
    with db.transaction() as session:
        for start in range(0, len(ids), ID_BATCH):
            waiting.extend(
                session.scalars(
                    select(WebhookEvent.id).where(
                        WebhookEvent.id.in_(ids[start : start + ID_BATCH]),
                        WebhookEvent.status == EventStatus.RECEIVED,
                    )
                )
            )
    queued = 0
    for event_id in sorted(waiting, key=lambda i: (events[i] != RING, i)):
        if publish(event_id, events[event_id]):
            queued += 1
    return queued
