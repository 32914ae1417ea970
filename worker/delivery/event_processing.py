"""Processing one stored webhook: load it, hand it to the handler of its type, record the result.

Takes plain values (an event id) and a :class:`Services`, so it is tested without Celery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from worker.delivery.notifications import plan_fanout
from worker.delivery.ringing import deliver_ring
from worker.delivery.services import Services
from worker.delivery.unexpected_errors import unexpected_reason
from worker.foundation.handoff import RetryLater
from worker.foundation.logging_setup import bind_log_context, log_context
from worker.storage import inbox
from worker.storage.db_errors import is_transient_db_error
from worker.storage.inbox import StoredEvent
from worker.storage.models import EventStatus
from worker.stream.event_age import stale_reason
from worker.stream.events import (
    LIVE_STARTED,
    MISSED,
    NOTIFICATION,
    RING,
    SESSION_STARTED,
    CallEvent,
    InvalidEvent,
    parse_stored_body,
)

log = logging.getLogger("callpush.events")

# A handler returns the event's final (status, reason), or None when the event is finished
# later (a fan-out's last chunk finishes it).
Handler = Callable[[Services, StoredEvent, CallEvent], tuple[str, str] | None]

# docs/stream-protocol.md §6, the event -> action table.  Its keys are the types intake queues
# (worker/intake/webhooks.py PROCESSED_TYPES; a test holds the two equal).
HANDLERS: dict[str, Handler] = {
    RING: deliver_ring,
    NOTIFICATION: plan_fanout,
    MISSED: plan_fanout,
    SESSION_STARTED: plan_fanout,
    LIVE_STARTED: plan_fanout,
}


def process_event(services: Services, event_id: int) -> str:
    """Process one inbox event; returns its final status.  Safe to call again for the same id
    (a redelivered task): finished events are skipped and pushes are claimed per device.

    An unexpected error ends the event as failed, with the reason, once: retrying what failed
    for no transient reason would fail again, forever.  Only a database that is away (the
    event cannot even be marked) propagates, leaving the event to the inbox sweeper."""
    with log_context(event_id=event_id):
        return _process_event(services, event_id)


def _process_event(services: Services, event_id: int) -> str:
    with services.db.transaction() as session:
        row = inbox.start_processing(session, event_id)
        if row is None:
            return "skipped"
        bind_log_context(call_cid=row.call_cid)  # reset by process_event's log_context
        stored = StoredEvent(
            row.id, row.received_at, row.api_key, row.replay_force, row.processing_attempts
        )
        body, event_type, allow_stale = row.body, row.event_type, row.allow_stale
    try:
        result = _handle(services, stored, event_type, body, allow_stale)
    except RetryLater as later:
        with services.db.transaction() as session:
            inbox.note_event(session, event_id, f"will retry: {later.reason}")
        raise
    except Exception as error:
        if is_transient_db_error(error):
            raise
        log.exception("event %s (%s) failed: unexpected error", event_id, event_type)
        with services.db.transaction() as session:
            inbox.finish_event(session, event_id, EventStatus.FAILED, unexpected_reason(error))
        return EventStatus.FAILED
    if result is None:
        log.info("event %s (%s) fanned out", event_id, event_type)
        return EventStatus.PROCESSING
    status, reason = result
    with services.db.transaction() as session:
        inbox.finish_event(session, event_id, status, reason)
    level = logging.WARNING if status == EventStatus.FAILED else logging.INFO
    log.log(level, "event %s (%s) %s: %s", event_id, event_type, status, reason)
    return status


def _handle(
    services: Services, stored: StoredEvent, event_type: str, body: str, allow_stale: bool
) -> tuple[str, str] | None:
    handler = HANDLERS.get(event_type)
    if handler is None:
        return EventStatus.IGNORED, "no push for this event type"
    try:
        event = parse_stored_body(body)
    except InvalidEvent as error:
        return EventStatus.FAILED, f"unreadable event: {error}"
    if not allow_stale:
        # Stored as ignored when it arrived stale; this keeps a replay from pushing it.
        max_age = timedelta(seconds=services.settings.intake.max_event_age_seconds)
        stale = stale_reason(event.created_at, stored.received_at, max_age)
        if stale is not None:
            return EventStatus.IGNORED, stale
    return handler(services, stored, event)
