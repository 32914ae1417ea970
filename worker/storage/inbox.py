"""The durable inbox: a webhook is committed here before Stream gets its 2xx."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, false, or_, select, update
from sqlalchemy.orm import Session

from worker.storage.models import EventStatus, WebhookEvent, utcnow
from worker.storage.upsert import insert_ignoring_conflicts


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    event_id: int
    duplicate: bool  # Stream retried a webhook we already hold, or its body was replayed
    status: str
    # The duplicate had another webhook id: the same body re-sent (a replay), not a retry.
    replayed_body: bool = False


@dataclass(frozen=True, slots=True)
class NewWebhook:
    webhook_id: str
    api_key: str
    event_type: str
    body: str
    body_digest: str | None = None  # sha256 of the verified body, hex
    call_cid: str | None = None
    session_id: str | None = None
    event_created_at: datetime | None = None
    received_at: datetime | None = None  # default: now
    attempt: int = 1
    status: str = EventStatus.RECEIVED
    status_reason: str | None = None
    allow_stale: bool = False


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """The facts of an inbox row that processing needs, detached from any session."""

    event_id: int
    received_at: datetime
    api_key: str
    replay_force: bool = False  # an operator insisted: re-ring even an expired ring
    attempt: int = 1  # how many times processing of this event has started


def store_webhook(
    session: Session, webhook: NewWebhook, dedupe_window: timedelta | None = None
) -> StoredWebhook:
    """Insert the webhook unless the inbox holds one with its webhook_id (Stream's retries), or
    one of the same app with the same body received within ``dedupe_window`` (a replay under a
    new id).  Both are unique indexes, so concurrent copies store one row, whichever wins."""
    received_at = webhook.received_at or utcnow()
    new_id = _insert(session, webhook, received_at)
    if new_id is not None:
        return StoredWebhook(new_id, duplicate=False, status=webhook.status)
    existing = _conflicting(session, webhook)
    if existing is None:  # the conflicting row was deleted meanwhile (a purge): store anew
        new_id = _insert(session, webhook, received_at)
        if new_id is not None:
            return StoredWebhook(new_id, duplicate=False, status=webhook.status)
        existing = _conflicting(session, webhook)
        if existing is None:
            raise RuntimeError(f"webhook {webhook.webhook_id} neither stored nor found")
    same_id = existing.webhook_id == webhook.webhook_id
    if (
        not same_id
        and dedupe_window is not None
        and existing.received_at < received_at - dedupe_window
    ):
        # The same body long ago (outside the window): the old row gives up its digest.
        session.execute(
            update(WebhookEvent).where(WebhookEvent.id == existing.id).values(body_digest=None)
        )
        new_id = _insert(session, webhook, received_at)
        if new_id is not None:
            return StoredWebhook(new_id, duplicate=False, status=webhook.status)
        existing = _conflicting(session, webhook) or existing
    return StoredWebhook(
        existing.id, duplicate=True, status=existing.status, replayed_body=not same_id
    )


def _insert(session: Session, webhook: NewWebhook, received_at: datetime) -> int | None:
    statement = (
        # Any unique index: webhook_id, or (api_key, body_digest).
        insert_ignoring_conflicts(session, WebhookEvent, None)
        .values(
            webhook_id=webhook.webhook_id,
            api_key=webhook.api_key,
            event_type=webhook.event_type,
            call_cid=webhook.call_cid,
            session_id=webhook.session_id,
            event_created_at=webhook.event_created_at,
            received_at=received_at,
            attempt=webhook.attempt,
            body=webhook.body,
            body_digest=webhook.body_digest,
            status=webhook.status,
            status_reason=webhook.status_reason,
            processing_attempts=0,
            allow_stale=webhook.allow_stale,
        )
        .returning(WebhookEvent.id)
    )
    new_id: int | None = session.execute(statement).scalar_one_or_none()
    return new_id


def _conflicting(session: Session, webhook: NewWebhook) -> Any:
    """The stored row the webhook collided with: same webhook id first, else same body."""
    same_body = (
        and_(
            WebhookEvent.api_key == webhook.api_key,
            WebhookEvent.body_digest == webhook.body_digest,
        )
        if webhook.body_digest is not None
        else false()
    )
    return session.execute(
        select(
            WebhookEvent.id, WebhookEvent.webhook_id, WebhookEvent.status, WebhookEvent.received_at
        )
        .where(or_(WebhookEvent.webhook_id == webhook.webhook_id, same_body))
        .order_by((WebhookEvent.webhook_id == webhook.webhook_id).desc())
        .limit(1)
    ).first()


def load_event(session: Session, event_id: int) -> WebhookEvent | None:
    return session.get(WebhookEvent, event_id)


def start_processing(session: Session, event_id: int) -> WebhookEvent | None:
    """Mark an event as being processed; None when it is finished already (a redelivery, or a
    retry of an event that has failed for good meanwhile: only a replay reopens it).
    One statement: it is on every ring's path."""
    return session.scalars(
        update(WebhookEvent)
        .where(
            WebhookEvent.id == event_id,
            WebhookEvent.status.not_in(
                [EventStatus.PROCESSED, EventStatus.IGNORED, EventStatus.FAILED]
            ),
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


@dataclass(frozen=True, slots=True)
class UnfinishedEvent:
    event_id: int
    event_type: str
    replayed: bool
    attempts: int  # how many times its processing has started
    fanout_planned: bool  # planned: waiting for its chunks, which have bounds of their own


def unfinished_events(
    session: Session, older_than: timedelta | None = None
) -> list[UnfinishedEvent]:
    """Events stored but not processed: after a crash, or a broker outage."""
    query = select(
        WebhookEvent.id,
        WebhookEvent.event_type,
        WebhookEvent.replays,
        WebhookEvent.processing_attempts,
        WebhookEvent.fanout_chunks,
    ).where(WebhookEvent.status.in_([EventStatus.RECEIVED, EventStatus.PROCESSING]))
    if older_than is not None:
        query = query.where(WebhookEvent.received_at < utcnow() - older_than)
    rows = session.execute(query.order_by(WebhookEvent.id))
    return [
        UnfinishedEvent(
            row.id,
            row.event_type,
            row.replays > 0,
            row.processing_attempts,
            row.fanout_chunks is not None,
        )
        for row in rows
    ]


def give_up(session: Session, event_id: int, max_attempts: int) -> str | None:
    """Mark an unfinished event failed because its processing started ``max_attempts`` times
    without finishing; returns the reason, or None when it finished meanwhile."""
    row = session.execute(
        select(WebhookEvent.processing_attempts, WebhookEvent.status_reason).where(
            WebhookEvent.id == event_id
        )
    ).first()
    if row is None:
        return None
    last = f"; last: {row.status_reason}" if row.status_reason else ""
    reason = f"gave up after {row.processing_attempts} attempts{last}"
    done = session.execute(
        update(WebhookEvent)
        .where(
            WebhookEvent.id == event_id,
            WebhookEvent.status.in_([EventStatus.RECEIVED, EventStatus.PROCESSING]),
            WebhookEvent.processing_attempts >= max_attempts,
        )
        .values(status=EventStatus.FAILED, status_reason=reason, processed_at=utcnow())
        .returning(WebhookEvent.id)
    ).first()
    return reason if done is not None else None


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
