"""The durable inbox: a webhook is committed here before Stream gets its 2xx."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from worker.storage.models import EventStatus, WebhookEvent, utcnow
from worker.storage.upsert import insert_ignoring_conflicts


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    event_id: int
    duplicate: bool  # Stream retried a webhook we already hold
    status: str


@dataclass(frozen=True, slots=True)
class NewWebhook:
    webhook_id: str
    api_key: str
    event_type: str
    body: str
    call_cid: str | None = None
    session_id: str | None = None
    event_created_at: datetime | None = None
    attempt: int = 1
    status: str = EventStatus.RECEIVED
    status_reason: str | None = None


def store_webhook(session: Session, webhook: NewWebhook) -> StoredWebhook:
    """Insert the webhook unless one with its webhook_id is already stored (Stream's retries)."""
    statement = (
        insert_ignoring_conflicts(session, WebhookEvent, ["webhook_id"])
        .values(
            webhook_id=webhook.webhook_id,
            api_key=webhook.api_key,
            event_type=webhook.event_type,
            call_cid=webhook.call_cid,
            session_id=webhook.session_id,
            event_created_at=webhook.event_created_at,
            received_at=utcnow(),
            attempt=webhook.attempt,
            body=webhook.body,
            status=webhook.status,
            status_reason=webhook.status_reason,
            processing_attempts=0,
        )
        .returning(WebhookEvent.id)
    )
    new_id = session.execute(statement).scalar_one_or_none()
    if new_id is not None:
        return StoredWebhook(new_id, duplicate=False, status=webhook.status)
    existing = session.execute(
        select(WebhookEvent.id, WebhookEvent.status).where(
            WebhookEvent.webhook_id == webhook.webhook_id
        )
    ).one()
    return StoredWebhook(existing.id, duplicate=True, status=existing.status)


def load_event(session: Session, event_id: int) -> WebhookEvent | None:
    return session.get(WebhookEvent, event_id)


def start_processing(session: Session, event_id: int) -> WebhookEvent | None:
    """Mark an event as being processed; None when it is finished already (a redelivery).
    One statement: it is on every ring's path."""
    return session.scalars(
        update(WebhookEvent)
        .where(
            WebhookEvent.id == event_id,
            WebhookEvent.status.not_in([EventStatus.PROCESSED, EventStatus.IGNORED]),
        )
        .values(
            status=EventStatus.PROCESSING,
            processing_attempts=WebhookEvent.processing_attempts + 1,
        )
        .returning(WebhookEvent)
    ).one_or_none()


def finish_event(session: Session, event_id: int, status: str, reason: str | None = None) -> None:
    session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id)
        .values(status=status, status_reason=reason, processed_at=utcnow())
    )


def note_event(session: Session, event_id: int, reason: str) -> None:
    """Say why an event is still unfinished, for the operator (`callpush events show`)."""
    session.execute(
        update(WebhookEvent).where(WebhookEvent.id == event_id).values(status_reason=reason)
    )


def unfinished_events(
    session: Session, older_than: timedelta | None = None
) -> list[tuple[int, str, bool]]:
    """(id, type, replayed) of events stored but not processed: after a crash, or a broker
    outage."""
    query = select(WebhookEvent.id, WebhookEvent.event_type, WebhookEvent.replays).where(
        WebhookEvent.status.in_([EventStatus.RECEIVED, EventStatus.PROCESSING])
    )
    if older_than is not None:
        query = query.where(WebhookEvent.received_at < utcnow() - older_than)
    rows = session.execute(query.order_by(WebhookEvent.id))
    return [(row.id, row.event_type, row.replays > 0) for row in rows]


def stop_events_for_call(
    session: Session, call_cid: str, stop_types: Iterable[str], since: datetime, *, api_key: str
) -> list[WebhookEvent]:
    """Events for the call of the app ``api_key``, of the given types, that arrived after
    ``since``.  Call ids are only unique within an app: another app's ``default:123`` is
    another call."""
    return list(
        session.scalars(
            select(WebhookEvent).where(
                WebhookEvent.api_key == api_key,
                WebhookEvent.call_cid == call_cid,
                WebhookEvent.event_type.in_(list(stop_types)),
                WebhookEvent.received_at >= since,
            )
        )
    )
