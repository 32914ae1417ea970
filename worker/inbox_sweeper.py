"""Re-enqueue inbox events that were stored but never processed: the broker was down when they
arrived, or the process holding them died (embedded mode keeps its queue in memory).

Two ways in: the periodic sweep (``callpush beat``; events older than ``sweeper.min_age``) and
the drain a web process runs the moment the broker answers again after an outage
(:mod:`worker.publish_breaker`), so a ring stored meanwhile is queued within a second, not a
minute.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy import case, select

from worker.storage.database import Database
from worker.storage.inbox import unfinished_events
from worker.storage.models import EventStatus, WebhookEvent
from worker.stream_events import RING
from worker.tasks import enqueue_event, enqueue_replay

log = logging.getLogger("callpush.sweeper")

# Publishes one event (id, type); False when it could not (the broker failed again).
PublishEvent = Callable[[int, str], bool]


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


def requeue_received_since(db: Database, publish: PublishEvent, since: datetime) -> int:
    """Queue the events received since ``since`` that no worker has started (status
    ``received``, never replayed), rings first, oldest first.  Stops at the first publish that
    fails: the broker is gone again and the rest waits for the next drain or the sweeper.  An
    event queued meanwhile by the normal path may be queued twice; it is processed once."""
    with db.transaction() as session:
        rows = session.execute(
            select(WebhookEvent.id, WebhookEvent.event_type)
            .where(
                WebhookEvent.status == EventStatus.RECEIVED,
                WebhookEvent.received_at >= since,
                WebhookEvent.replays == 0,
            )
            .order_by(case((WebhookEvent.event_type == RING, 0), else_=1), WebhookEvent.id)
        ).all()
    queued = 0
    for event_id, event_type in rows:
        if not publish(event_id, event_type):
            break
        queued += 1
    return queued
