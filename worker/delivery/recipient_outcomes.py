"""Every recipient of a push event accounted for: why one got no push, and whether the event
reached anyone at all (README: status glossary).

A recipient with no push gets a ``skipped`` row of their own (worker/storage/deliveries.py)
whose reason says why, in this order: call pushes muted (until when), a token of theirs the
push cannot use (a VoIP token for an alert, a plain APNs token for a ring with alert rings
off), every token disabled (which, why and when), or no device at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from worker.foundation.logging_setup import redact_token
from worker.push.base import Platform
from worker.storage import deliveries, devices
from worker.storage.devices import DeviceTarget
from worker.storage.models import Device
from worker.stream.events import LIVE_STARTED, MISSED, NOTIFICATION, RING, SESSION_STARTED

NO_DEVICE = "no active device"
# The event types that push (worker/delivery/event_processing.py HANDLERS): a finished one without a
# single recorded outcome reached nobody; other types have no reach.
PUSHED_EVENT_TYPES = frozenset({RING, NOTIFICATION, MISSED, SESSION_STARTED, LIVE_STARTED})


@dataclass(frozen=True, slots=True)
class Reach:
    """How many of an event's recipients a push reached."""

    recipients: int  # distinct users with a recorded outcome (a push or a skipped row)
    reached: int  # of them, those with a push the provider accepted (``sent``)
    # Those with a ring whose answer was lost (``unconfirmed``): it may have rung, or not.
    unconfirmed: int
    summary: str  # "reached 2 of 3 recipients", "rang nobody (2 recipients)"


def reach_of(event_type: str, recipients: int, reached: int, unconfirmed: int = 0) -> Reach:
    plural = "" if recipients == 1 else "s"
    if reached:
        summary = f"reached {reached} of {recipients} recipient{plural}"
    elif unconfirmed:
        # Not "rang nobody": an unconfirmed ring most likely rang (README: status glossary).
        verb = "rang" if event_type == RING else "reached"
        summary = f"{verb} nobody for certain ({unconfirmed} of {recipients} unconfirmed)"
    else:
        summary = f"{'rang' if event_type == RING else 'reached'} nobody"
        summary += f" ({recipients} recipient{plural})" if recipients else ""
    return Reach(recipients, reached, unconfirmed, summary)


def event_reach(session: Session, event_id: int, event_type: str) -> Reach:
    counts = deliveries.recipient_reach(session, [event_id]).get(event_id, (0, 0, 0))
    return reach_of(event_type, *counts)


def record_unreached(
    session: Session,
    *,
    event_id: int,
    api_key: str,
    event_type: str,
    recipients: Sequence[str],
    muted: Mapping[str, datetime | None],
    active: Sequence[DeviceTarget],
    pushed: set[str],
    alert_ring: bool = True,
) -> int:
    """Record a ``skipped`` row for each of ``recipients`` not in ``pushed`` (the users a push
    was claimed for), with the reason; returns how many."""
    unreached = [user for user in dict.fromkeys(recipients) if user not in pushed]
    tokens: dict[str, list[DeviceTarget]] = {}
    for device in active:
        tokens.setdefault(device.user_id, []).append(device)
    tokenless = [user for user in unreached if user not in muted and user not in tokens]
    disabled = devices.disabled_devices_for(session, api_key, tokenless) if tokenless else {}
    reasons: dict[str, str] = {}
    for user in unreached:
        if user in muted:
            until = muted[user]
            reasons[user] = (
                f"call pushes muted until {_moment(until)}" if until else "call pushes muted"
            )
        elif user in tokens:
            reasons[user] = _no_token_of_the_kind(event_type, tokens[user], alert_ring)
        elif user in disabled:
            reasons[user] = _disabled(disabled[user])
        else:
            reasons[user] = NO_DEVICE
    deliveries.record_skipped_recipients(session, event_id, reasons, recipients)
    return len(reasons)


def _no_token_of_the_kind(event_type: str, tokens: Sequence[DeviceTarget], alert_ring: bool) -> str:
    has = ", ".join(_name(t.platform.value, t.voip, t.token) for t in tokens[:3])
    if event_type == RING:
        need = "an APNs VoIP or FCM token" + ("" if alert_ring else " (alert rings are off)")
    else:
        need = "an APNs alert or FCM token (VoIP tokens carry rings only)"
    return f"no token of the kind {event_type} needs, {need}: has {has}"


def _disabled(found: Sequence[Device]) -> str:
    newest = found[0]
    name = _name(newest.platform, newest.voip, newest.token)
    at = _moment(newest.disabled_at) if newest.disabled_at else "an unknown time"
    why = newest.disabled_reason or "no reason recorded"
    more = f" (and {len(found) - 1} more disabled)" if len(found) > 1 else ""
    return f"token disabled at {at}: {name}: {why}{more}"


def _name(platform: str, voip: bool, token: str) -> str:
    kind = " voip" if voip and platform == Platform.APNS.value else ""
    return f"{platform}{kind} {redact_token(token)}"


def _moment(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")
