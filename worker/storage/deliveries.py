"""Delivery records: one row per (event, device), claimed before the push and settled after,
and one per recipient who got no push at all (``skipped``, with the reason).

The unique (event_id, device_id) key is what makes a redelivered task or a retried webhook send
nothing twice: whoever inserts the row owns the push.  A recipient's row has no device
(``device_id`` NULL, which the key does not constrain) and an empty kind: the column is
nullable already (a deleted device's rows keep their history), so it needs no migration, and
the empty kind tells it apart from a deleted device's row.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from worker.foundation.logging_setup import redact_token
from worker.push.base import PushKind, PushOutcome, PushResult
from worker.storage.devices import DeviceTarget
from worker.storage.models import Delivery, DeliveryStatus, utcnow
from worker.storage.upsert import insert_ignoring_conflicts

RESULT_STATUS = {
    PushResult.SENT: DeliveryStatus.SENT,
    PushResult.TOKEN_INVALID: DeliveryStatus.TOKEN_INVALID,
    PushResult.RETRY: DeliveryStatus.RETRY,
    PushResult.FAILED: DeliveryStatus.FAILED,
    PushResult.UNCONFIRMED: DeliveryStatus.UNCONFIRMED,
}
# What an unconfirmed ring's reason adds to the provider's, for `trace` and `events show`.
NOT_RESENT = "answer lost, not re-sent to avoid a second ring"
# A ring claim whose worker died mid-send: its request may have been written.
ABANDONED_MID_SEND = "worker stopped mid-send"
# The kind of a recipient's own row (no device, no push): see the module docstring.
RECIPIENT_ROW_KIND = ""
# Bound parameters per IN (...) list, well under every backend's limit.
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Claim:
    delivery_id: int
    device: DeviceTarget
    kind: PushKind
    # The provider label of the claim ("apns", "fcm:android-2", ...), as the row records it.
    provider: str = ""
    attempt: int = 1  # the delivery's attempts, this one included
    # What the push carries for the phone's receipt (payloads.RECEIPT_ID_KEY); None for a row
    # claimed before receipts existed.
    receipt_id: str | None = None


def new_receipt_id() -> str:
    """128 random bits: only the phone the push went to can know it (POST /receipts trusts
    it no further than that, and checks the user)."""
    return secrets.token_hex(16)


def claim_deliveries(
    session: Session,
    event_id: int,
    targets: Sequence[tuple[DeviceTarget, PushKind, str]],
    lease: timedelta,
    *,
    take_over_sending: bool = True,
) -> list[Claim]:
    """Claim the pushes of ``targets`` (device, kind, provider name) for this event.

    Returns only the ones this caller now owns: new rows, rows a previous attempt left as RETRY,
    and, with ``take_over_sending``, SENDING rows whose lease ran out (their worker died before
    recording an answer).  Rings pass False: such a row's request may have reached the provider
    (:func:`settle_abandoned_sends` closes it instead).
    """
    if not targets:
        return []
    now = utcnow()
    by_device = {device.device_id: (device, kind, provider) for device, kind, provider in targets}
    rows = [
        {
            "event_id": event_id,
            "device_id": device.device_id,
            "user_id": device.user_id,
            "platform": device.platform.value,
            "kind": kind.value,
            "token_hint": redact_token(device.token),
            "provider": provider,
            "status": DeliveryStatus.SENDING,
            "attempts": 1,
            "created_at": now,
            "claimed_at": now,
            "receipt_id": new_receipt_id(),
        }
        for device, kind, provider in targets
    ]
    statement = insert_ignoring_conflicts(session, Delivery, ["event_id", "device_id"]).returning(
        Delivery.id, Delivery.device_id, Delivery.receipt_id
    )
    claimed = {
        row.device_id: (row.id, 1, row.receipt_id) for row in session.execute(statement, rows)
    }

    unclaimed = [device_id for device_id in by_device if device_id not in claimed]
    if unclaimed:
        claimable = Delivery.status == DeliveryStatus.RETRY
        if take_over_sending:
            stale = and_(
                Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_at < now - lease
            )
            claimable = or_(claimable, stale)
        takeover = session.execute(
            update(Delivery)
            .where(Delivery.event_id == event_id, Delivery.device_id.in_(unclaimed), claimable)
            .values(
                status=DeliveryStatus.SENDING,
                claimed_at=now,
                attempts=Delivery.attempts + 1,
            )
            .returning(Delivery.id, Delivery.device_id, Delivery.attempts, Delivery.receipt_id)
        )
        claimed.update({row.device_id: (row.id, row.attempts, row.receipt_id) for row in takeover})
    return [
        Claim(delivery_id, *by_device[device_id], attempt, receipt_id)
        for device_id, (delivery_id, attempt, receipt_id) in claimed.items()
    ]


def settle_abandoned_sends(session: Session, event_id: int, lease: timedelta) -> int:
    """Settle the event's SENDING claims older than ``lease`` as UNCONFIRMED: their worker died
    mid-send, perhaps after writing the request, so they are not sent again.  For rings, which
    must never ring twice; returns how many."""
    settled = session.execute(
        update(Delivery)
        .where(
            Delivery.event_id == event_id,
            Delivery.status == DeliveryStatus.SENDING,
            Delivery.claimed_at < utcnow() - lease,
        )
        .values(
            status=DeliveryStatus.UNCONFIRMED,
            reason=f"{ABANDONED_MID_SEND}: {NOT_RESENT}",
            finished_at=utcnow(),
        )
        .returning(Delivery.id)
    )
    return len(settled.all())


def unsettled_claim_times(
    session: Session, event_id: int, user_ids: Sequence[str] | None = None
) -> list[datetime]:
    """When each still-SENDING claim of the event (to these users) was taken."""
    query = select(Delivery.claimed_at).where(
        Delivery.event_id == event_id, Delivery.status == DeliveryStatus.SENDING
    )
    if user_ids is not None:
        query = query.where(Delivery.user_id.in_(list(user_ids)))
    return list(session.scalars(query))


def record_outcomes(
    session: Session,
    outcomes: Iterable[tuple[Claim, PushOutcome]],
    received_at: datetime,
) -> None:
    now = utcnow()
    latency_ms = (now - received_at).total_seconds() * 1000
    session.execute(
        update(Delivery),
        [
            {
                "id": claim.delivery_id,
                "status": RESULT_STATUS[outcome.result],
                "reason": _reason(outcome)[:255] or None,
                "status_code": outcome.status_code,
                "finished_at": now,
                "latency_ms": latency_ms,
            }
            for claim, outcome in outcomes
        ],
    )


def _reason(outcome: PushOutcome) -> str:
    if outcome.result is PushResult.UNCONFIRMED:
        return f"{outcome.reason or 'no answer'}: {NOT_RESENT}"
    return outcome.reason


def settle_without_sending(
    session: Session, claims: Iterable[Claim], status: str, reason: str
) -> None:
    """Close claims that will not be sent (again): the ring is over (EXPIRED, or FAILED after
    retries), the call was answered (CANCELLED)."""
    ids = [claim.delivery_id for claim in claims]
    if ids:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(status=status, reason=reason[:255], finished_at=utcnow())
        )


def deliveries_for_event(session: Session, event_id: int) -> list[Delivery]:
    """Every delivery row of the event, oldest first (an event's detail:
    worker/ops/event_log.py)."""
    return list(
        session.scalars(select(Delivery).where(Delivery.event_id == event_id).order_by(Delivery.id))
    )


def count_failed(session: Session, event_id: int, user_ids: Sequence[str]) -> int:
    """Failed deliveries of the event to these users (one fan-out chunk's)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(
                Delivery.event_id == event_id,
                Delivery.user_id.in_(list(user_ids)),
                Delivery.status == DeliveryStatus.FAILED,
            )
        )
        or 0
    )


def record_skipped_recipients(
    session: Session, event_id: int, reasons: Mapping[str, str], users: Sequence[str]
) -> None:
    """Record each user of ``reasons`` as ``skipped`` with its reason, replacing the recipient
    rows an earlier run of the event (a replay, a redelivered task) left for ``users``: a row
    tells the recipient's situation at the latest run, and one who has a push now has no row."""
    ids = list(dict.fromkeys(users))
    for start in range(0, len(ids), _CHUNK):
        session.execute(
            delete(Delivery).where(
                Delivery.event_id == event_id,
                Delivery.device_id.is_(None),
                Delivery.kind == RECIPIENT_ROW_KIND,
                Delivery.user_id.in_(ids[start : start + _CHUNK]),
            )
        )
    if not reasons:
        return
    now = utcnow()
    session.execute(
        insert(Delivery),
        [
            {
                "event_id": event_id,
                "device_id": None,
                "user_id": user_id,
                "platform": "",
                "kind": RECIPIENT_ROW_KIND,
                "token_hint": "",
                "provider": "",
                "status": DeliveryStatus.SKIPPED,
                "reason": reason[:255],
                "attempts": 0,
                "created_at": now,
                "claimed_at": now,
                "finished_at": now,
            }
            for user_id, reason in reasons.items()
        ],
    )


def is_recipient_row(delivery: Delivery) -> bool:
    """A recipient who got no push (no device), rather than one device's push."""
    return delivery.device_id is None and delivery.kind == RECIPIENT_ROW_KIND


def recipient_reach(session: Session, event_ids: Sequence[int]) -> dict[int, tuple[int, int, int]]:
    """Per event: (recipients, reached, unconfirmed), the distinct users with a recorded
    outcome, those of them with a push the provider accepted (``sent``), and those with a push
    whose answer was lost (``unconfirmed``).  Every recipient has a row (a push, or a
    ``skipped`` row of their own), so the first is the event's recipient count."""
    if not event_ids:
        return {}

    def users_with(status: str) -> Any:
        return func.count(func.distinct(case((Delivery.status == status, Delivery.user_id))))

    rows = session.execute(
        select(
            Delivery.event_id,
            func.count(func.distinct(Delivery.user_id)),
            users_with(DeliveryStatus.SENT),
            users_with(DeliveryStatus.UNCONFIRMED),
        )
        .where(Delivery.event_id.in_(list(event_ids)))
        .group_by(Delivery.event_id)
    ).all()
    return {
        event_id: (int(users), int(reached), int(unconfirmed))
        for event_id, users, reached, unconfirmed in rows
    }
