"""Re-enqueue inbox events that were stored but never processed: the broker was down when they
arrived, or the process holding them died (embedded mode keeps its queue in memory)."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery

from worker.storage.database import Database
from worker.storage.inbox import unfinished_events
from worker.tasks import enqueue_event, enqueue_replay

log = logging.getLogger("callpush.sweeper")


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
