"""Re-enqueue inbox events that were stored but never processed: the broker was down when they
arrived, or the process holding them died (embedded mode keeps its queue in memory).

An event whose processing keeps starting and never finishing (it kills its worker, say) is not
queued forever: after ``sweeper.max_attempts`` starts it is marked failed, for an operator to
look at and replay.  A planned fan-out is waiting for its chunks, not stuck, so it is queued
(to re-queue chunks a lost worker left) without counting against it.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery

from worker.logging_setup import log_context
from worker.settings import SweeperSettings
from worker.storage.database import Database
from worker.storage.inbox import give_up, unfinished_events
from worker.tasks import enqueue_event, enqueue_replay

log = logging.getLogger("callpush.sweeper")


def requeue_unfinished(
    db: Database,
    celery: Celery,
    older_than: timedelta | None,
    max_attempts: int = SweeperSettings.model_fields["max_attempts"].default,
) -> int:
    """Queue the unfinished events again; returns how many were queued."""
    with db.transaction() as session:
        unfinished = unfinished_events(session, older_than)
    queued = 0
    for event in unfinished:
        if event.attempts >= max_attempts and not event.fanout_planned:
            with db.transaction() as session:
                reason = give_up(session, event.event_id, max_attempts)
            if reason is not None:
                with log_context(event_id=event.event_id):
                    log.error("event %s (%s) failed: %s", event.event_id, event.event_type, reason)
            continue
        if event.replayed:  # a replay stays on the bulk queue, never ahead of live rings
            enqueue_replay(celery, event.event_id)
        else:
            enqueue_event(celery, event.event_id, event.event_type)
        queued += 1
    if queued:
        log.warning("re-enqueued %d unprocessed inbox events", queued)
    return queued
