"""A verified Stream event becomes an inbox row: the rules the HTTP receiver and an operator's
`callpush events import` share (status by type, the call's fields, the dedupe id)."""

from __future__ import annotations

import hashlib
from typing import Any

from worker.event_processing import stored_status
from worker.storage.inbox import NewWebhook
from worker.storage.models import EventStatus
from worker.stream_events import InvalidEvent, parse_call_event, parse_event_type


def webhook_for_event(
    document: Any,
    body: bytes,
    *,
    api_key: str,
    webhook_id: str | None,
    attempt: int = 1,
) -> NewWebhook:
    """The row to store for the parsed ``document`` whose JSON text is ``body``.  Raises
    InvalidEvent (a 400 at the receiver) for an event we must act on but cannot read."""
    try:
        event_type = parse_event_type(document)
    except InvalidEvent as error:
        raise InvalidEvent(f"malformed event: {error}") from None
    status, reason = stored_status(event_type)
    call_cid = session_id = created_at = None
    try:
        event = parse_call_event(document)
        call_cid, session_id, created_at = event.call_cid, event.session_id, event.created_at
    except InvalidEvent as error:
        if status == EventStatus.RECEIVED:
            raise InvalidEvent(f"malformed {event_type} event: {error}") from None
    return NewWebhook(
        # No X-Webhook-Id (an import, or a proxy that dropped it): the body deduplicates.
        webhook_id=(webhook_id or "").strip()[:128] or "sha256:" + hashlib.sha256(body).hexdigest(),
        api_key=api_key,
        event_type=event_type[:64],
        body=body.decode("utf-8", "replace"),
        call_cid=call_cid,
        session_id=session_id,
        event_created_at=created_at,
        attempt=attempt,
        status=status,
        status_reason=reason,
    )
