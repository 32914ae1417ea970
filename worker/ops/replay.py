"""Replaying events: what would be re-sent (dry run), and putting events back through the normal
processing path on the bulk queue, so a replay never delays live rings.

Without ``force``, devices that already got the push are skipped and an expired ring is not
re-rung (it is past its deadline, so processing records it as expired again).  With ``force``,
everything but a disabled token is sent again and a ring gets a fresh deadline.  An event that
arrived stale (never pushed) stays unpushed unless replayed with ``allow_stale``.

A recipient recorded ``skipped`` (muted, no usable token: a row without a device) is not
re-sent as such, with or without ``force``: the replay resolves the recipients and their
devices again, so one whose situation changed (unmuted, a new token) is pushed and the others
are recorded skipped again, with the reason as it is then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from worker.storage.models import (
    ChunkStatus,
    Delivery,
    DeliveryStatus,
    EventStatus,
    FanoutChunk,
    WebhookEvent,
)

# Statuses a replay sends again.  A disabled token (token_invalid) is never pushed again.
REPLAYED = frozenset({DeliveryStatus.FAILED, DeliveryStatus.RETRY})
REPLAYED_WITH_FORCE = REPLAYED | {
    DeliveryStatus.SENT,
    DeliveryStatus.UNCONFIRMED,  # may have rung: re-rung only when the operator insists
    DeliveryStatus.EXPIRED,
    DeliveryStatus.CANCELLED,
    DeliveryStatus.SKIPPED,  # a device's push skipped by an older version (muted)
}


@dataclass(frozen=True, slots=True)
class DeviceReplay:
    user_id: str
    platform: str
    token_hint: str
    previous_status: str


@dataclass(frozen=True, slots=True)
class EventReplay:
    event_id: int
    event_type: str
    call_cid: str | None
    status: str
    resend: list[DeviceReplay] = field(default_factory=list)
    skipped: int = 0  # deliveries left alone (already sent, or a dead token)


def plan_replay(session: Session, event_ids: Sequence[int], force: bool) -> list[EventReplay]:
    """What a replay of these events would do; changes nothing (``--dry-run``).  Recipients with
    no delivery record yet (the event failed before sending) are resolved again when replayed."""
    statuses = REPLAYED_WITH_FORCE if force else REPLAYED
    plans = []
    for event in session.scalars(
        select(WebhookEvent).where(WebhookEvent.id.in_(list(event_ids))).order_by(WebhookEvent.id)
    ):
        rows = session.scalars(
            select(Delivery).where(Delivery.event_id == event.id, Delivery.device_id.is_not(None))
        ).all()
        resend = [
            DeviceReplay(d.user_id, d.platform, d.token_hint, d.status)
            for d in rows
            if d.status in statuses
        ]
        plans.append(
            EventReplay(
                event.id,
                event.event_type,
                event.call_cid,
                event.status,
                resend,
                skipped=len(rows) - len(resend),
            )
        )
    return plans


def reopen_for_replay(
    session: Session, event_id: int, force: bool, allow_stale: bool = False
) -> bool:
    """Make the event and its unsent pushes processable again.  False for an unknown event.
    ``allow_stale``: push it even if it arrived too old to push (once allowed, it stays so)."""
    event = session.get(WebhookEvent, event_id, with_for_update=True)
    if event is None:
        return False
    statuses = REPLAYED_WITH_FORCE if force else REPLAYED
    session.execute(
        update(Delivery)
        .where(
            Delivery.event_id == event_id,
            Delivery.status.in_(list(statuses)),
            # Only a device's push can be claimed again; recipients' rows are recomputed.
            Delivery.device_id.is_not(None),
        )
        .values(status=DeliveryStatus.RETRY)
    )
    session.execute(
        update(FanoutChunk)
        .where(FanoutChunk.event_id == event_id)
        .values(status=ChunkStatus.PENDING, reason=None, finished_at=None)
    )
    event.status = EventStatus.RECEIVED
    event.status_reason = "replay requested" + (" (force)" if force else "")
    event.replay_force = force
    event.allow_stale = event.allow_stale or allow_stale
    event.replays += 1
    # The attempts of this run: the sweeper's cap and the fan-out's retries count afresh.
    event.processing_attempts = 0
    event.fanout_chunks = None
    event.processed_at = None
    return True
