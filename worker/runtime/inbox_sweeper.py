"""Re-enqueue inbox events that were stored but never processed: the broker was down when they
arrived, or the process holding them died (embedded mode keeps its queue in memory).

Two ways in: the periodic sweep (``callpush beat``; events older than ``sweeper.min_age``) and
the drain a web process runs the moment the broker answers again after an outage
(:mod:`worker.intake.publish_breaker`), so a ring stored meanwhile is queued within a second, not a
minute.

An event whose processing keeps starting and never finishing (it kills its worker, say) is not
queued forever: after ``sweeper.max_attempts`` starts it is marked failed, for an operator to
look at and replay.  A planned fan-out is waiting for its chunks, not stuck, so it is queued
(to re-queue chunks a lost worker left) without counting against it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta

from sqlalchemy import select

from worker.foundation.handoff import Handoff
from worker.foundation.logging_setup import log_context
from worker.foundation.settings import SweeperSettings
from worker.storage.database import Database
from worker.storage.inbox import give_up, unfinished_events
from worker.storage.models import EventStatus, WebhookEvent
from worker.stream.events import RING

log = logging.getLogger("callpush.sweeper")

# Publishes one event (id, type); False when it could not (the broker failed again).
PublishEvent = Callable[[int, str], bool]
# Ids per query of the drain (an IN list).
ID_BATCH = 1000


def requeue_unfinished(
    db: Database,
    handoff: Handoff,
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
            handoff.queue_replay(event.event_id)
        else:
            handoff.queue_event(event.event_id, event.event_type)
        queued += 1
    if queued:
        log.warning("re-enqueued %d unprocessed inbox events", queued)
    return queued


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
