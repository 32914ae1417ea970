"""Device receipts: the phone's own word that a push arrived (POST /receipts).

APNs and FCM accepting a push is not the phone ringing.  Each push carries its delivery's random
``receipt_id`` (worker/delivery/payloads.py ``RECEIPT_ID_KEY``); the app sends it back from its
PushKit or FCM handler and the delivery records when that happened.  The first receipt counts: a
repeat (the app retrying a request whose answer it lost) changes nothing and is answered the same.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from worker.storage.models import Delivery, WebhookEvent

RECEIPT_ID_LENGTH = 32  # deliveries.new_receipt_id: 16 random bytes as hex


class ReceiptAnswer(enum.Enum):
    RECORDED = "recorded"  # the first receipt of this push
    DUPLICATE = "duplicate"  # recorded before; the first time is kept
    NOT_FOUND = "not_found"  # no push of the caller's app carried this id
    OTHER_USER = "other_user"  # a push of the app, sent to another user


@dataclass(frozen=True, slots=True)
class Receipt:
    answer: ReceiptAnswer
    delivery_id: int | None = None
    event_id: int | None = None
    platform: str | None = None
    kind: str | None = None
    phone_received_at: datetime | None = None
    phone_latency_ms: float | None = None  # from the webhook's arrival to the receipt


def record_receipt(
    session: Session, api_key: str, user_id: str, receipt_id: str, now: datetime
) -> Receipt:
    """Record that ``user_id``'s phone received the push that carried ``receipt_id``, in the
    Stream app ``api_key``.  Another app's push is NOT_FOUND (as if it did not exist: apps are
    tenants); another user's is OTHER_USER and records nothing."""
    found = session.execute(
        select(Delivery, WebhookEvent.received_at)
        .join(WebhookEvent, WebhookEvent.id == Delivery.event_id)
        .where(Delivery.receipt_id == receipt_id, WebhookEvent.api_key == api_key)
    ).one_or_none()
    if found is None:
        return Receipt(ReceiptAnswer.NOT_FOUND)
    delivery, webhook_received_at = found
    if delivery.user_id != user_id:
        return Receipt(ReceiptAnswer.OTHER_USER)
    latency_ms = max(0.0, (now - webhook_received_at).total_seconds() * 1000)
    # Conditional, so two receipts racing each other keep one time: whoever sets it first.
    first = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id, Delivery.phone_received_at.is_(None))
        .values(phone_received_at=now, phone_latency_ms=latency_ms)
        .returning(Delivery.id)
    ).one_or_none()
    session.refresh(delivery)
    return Receipt(
        ReceiptAnswer.RECORDED if first is not None else ReceiptAnswer.DUPLICATE,
        delivery_id=delivery.id,
        event_id=delivery.event_id,
        platform=delivery.platform,
        kind=delivery.kind,
        phone_received_at=delivery.phone_received_at,
        phone_latency_ms=delivery.phone_latency_ms,
    )
