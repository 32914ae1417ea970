"""A verified Stream event becomes an inbox row: the rules the HTTP receiver and an operator's
`callpush events import` share (status by type, the call's fields, the dedupe keys, staleness).

Every Stream event with a ``type`` is stored.  One the worker cannot act on (a push event without
a readable call, a ring stopper without a call id) is stored as failed with the reason, so
Stream is not made to retry what no retry can fix and the operator still sees it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from worker.foundation.settings import IntakeSettings
from worker.storage.inbox import NewWebhook
from worker.storage.models import EventStatus, utcnow
from worker.stream.event_age import stale_reason
from worker.stream.events import (
    LIVE_STARTED,
    MISSED,
    NOTIFICATION,
    RING,
    RING_STOPPERS,
    SESSION_STARTED,
    InvalidEvent,
    parse_call_event,
    parse_event_type,
    read_call_fields,
)

log = logging.getLogger("callpush.intake")

MAX_WEBHOOK_ID = 128  # the column's size
MAX_EVENT_TYPE = 64  # the column's size
# The webhook_events.attempt column is a 32-bit integer.
MAX_ATTEMPT = 2**31 - 1
# Stream's ids are UUIDs; anything else printable that fits is kept as it is.
_PLAIN_WEBHOOK_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_WEBHOOK_ID}}}")
_ASCII_NUMBER = re.compile(r"[0-9]{1,20}")

# The types a worker acts on (docs/stream-protocol.md §6): each is queued, and processed by its
# handler (worker/delivery/event_processing.py HANDLERS).  Ring stoppers need no work of their
# own: the ring handler reads them from the inbox.  Every other type is stored as ignored.
PROCESSED_TYPES = frozenset({RING, NOTIFICATION, MISSED, SESSION_STARTED, LIVE_STARTED})


def needs_processing(event_type: str) -> bool:
    """Whether a webhook of this type is queued for the worker."""
    return event_type in PROCESSED_TYPES


def stored_status(event_type: str) -> tuple[str, str | None]:
    """The status a new webhook of this type is stored with."""
    if needs_processing(event_type):
        return EventStatus.RECEIVED, None
    if event_type in RING_STOPPERS:
        return EventStatus.PROCESSED, "stops pending ring pushes of the call"
    return EventStatus.IGNORED, "no push for this event type"


@dataclass(frozen=True, slots=True)
class IntakeRules:
    """What an arriving event is checked against (from ``settings.intake``)."""

    max_event_age: timedelta
    # An operator's import: push even an event older than max_event_age.
    allow_stale: bool = False

    @classmethod
    def from_settings(cls, intake: IntakeSettings, allow_stale: bool = False) -> IntakeRules:
        return cls(timedelta(seconds=intake.max_event_age_seconds), allow_stale)


# The rules with the settings' defaults, for callers that do not pass their own.
DEFAULT_RULES = IntakeRules.from_settings(IntakeSettings())


def webhook_for_event(
    document: Any,
    body: bytes,
    *,
    api_key: str,
    webhook_id: str | None,
    received_at: datetime | None = None,
    rules: IntakeRules = DEFAULT_RULES,
    attempt: int = 1,
) -> NewWebhook:
    """The row to store for the parsed ``document`` whose JSON text is ``body`` (UTF-8).  Raises
    InvalidEvent (a 400 at the receiver) only for a document that is not an event at all: not
    an object, or no usable ``type``.  ``received_at`` defaults to now."""
    received_at = received_at or utcnow()
    try:
        event_type = parse_event_type(document)
    except InvalidEvent as error:
        raise InvalidEvent(f"malformed event: {error}") from None
    digest = hashlib.sha256(body).hexdigest()
    status, reason = stored_status(event_type)
    fields = read_call_fields(document)
    try:
        if status != EventStatus.IGNORED:
            parse_call_event(document)  # what the worker (or the ring's stop check) reads
    except InvalidEvent as error:
        status, reason = EventStatus.FAILED, f"cannot act on this {event_type} event: {error}"
    except Exception as error:  # a reader bug must not refuse (or lose) a signed event
        log.exception("could not read a %s event", event_type)
        status, reason = (
            EventStatus.FAILED,
            f"cannot act on this {event_type} event: {type(error).__name__}",
        )
    if status == EventStatus.RECEIVED and not rules.allow_stale:
        stale = stale_reason(fields.created_at, received_at, rules.max_event_age)
        if stale is not None:
            status, reason = EventStatus.IGNORED, stale
    return NewWebhook(
        webhook_id=_dedupe_id(webhook_id, digest),
        api_key=api_key,
        event_type=event_type[:MAX_EVENT_TYPE],
        body=body.decode("utf-8"),
        body_digest=digest,
        call_cid=fields.call_cid,
        session_id=fields.session_id,
        event_created_at=fields.created_at,
        received_at=received_at,
        attempt=attempt,
        status=status,
        status_reason=reason,
        allow_stale=rules.allow_stale,
    )


def load_event_json(text: str) -> Any:
    """Parse a webhook body strictly: JSON as RFC 8259 defines it, so no NaN or Infinity
    (Python's json takes them).  Raises ValueError, or RecursionError for nesting deeper than
    the parser's limit (~1000 levels)."""
    return json.loads(text, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def attempt_number(header: str | None) -> int:
    """X-Webhook-Attempt, 1 when absent or not a plain number, and never above the column's
    range (int() alone takes "²" and "١٢")."""
    text = (header or "").strip()
    if not _ASCII_NUMBER.fullmatch(text):
        return 1
    return min(max(1, int(text)), MAX_ATTEMPT)


def _dedupe_id(webhook_id: str | None, digest: str) -> str:
    """X-Webhook-Id as sent when it is a plain id that fits the column; a longer or odd one
    (control characters, NUL, non-ASCII) by its digest, so two ids are never cut to the same
    prefix; none at all (an import, a proxy that dropped it): the body's digest."""
    value = (webhook_id or "").strip()
    if not value:
        return f"sha256:{digest}"
    if _PLAIN_WEBHOOK_ID.fullmatch(value):
        return value
    return "id-sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
