"""call.ring: where a ring becomes an APNs VoIP push and an FCM data message.

The phones must ring within milliseconds, exactly once, and never after the ring is over:
  1. recipients = members minus the caller and anyone who already answered (recipients.py);
  2. their active devices: APNs VoIP tokens and FCM tokens, and the regular APNs token of an
     iPhone that has no VoIP token (a time-sensitive alert rings it);
  3. each (event, device) push is claimed in the deliveries table before it is sent;
  4. everything is sent in one concurrent batch per push provider, marked ``at_most_once``;
  5. pushes the provider certainly did not take (429, 5xx, no connection) are retried with
     capped exponential backoff until the ring deadline, checking before each attempt that the
     call was not accepted, rejected or ended in the meantime; one that never got through is
     ``failed`` with the provider's last reason;
  6. a push whose answer was lost after it was written (a timeout, a dropped connection, a worker
     killed mid-send) is ``unconfirmed`` and never sent again: a second VoIP push is a second
     CallKit call (worker/push/base.py);
  7. after the pushes, each recipient who got none is recorded ``skipped`` with the reason
     (worker/delivery/recipient_outcomes.py), and the event's outcome says how many the ring
     reached.
The retries sleep in the task's thread, holding no database connection (README: scaling out).
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from worker.delivery import payloads
from worker.delivery.device_sources import one_ring_per_phone
from worker.delivery.push_outcomes import record_push_outcomes
from worker.delivery.recipient_outcomes import event_reach, record_unreached
from worker.delivery.recipients import ring_recipients
from worker.delivery.services import Services
from worker.foundation.settings import RingSettings
from worker.push.base import Platform, PushKind, PushMessage, PushOutcome, PushResult
from worker.storage import deliveries, inbox, preferences
from worker.storage.deliveries import Claim
from worker.storage.devices import DeviceTarget
from worker.storage.inbox import StoredEvent
from worker.storage.models import DeliveryStatus, EventStatus
from worker.stream.api import StreamApiError
from worker.stream.events import (
    ACCEPTED,
    ENDED,
    LIVE_STARTED,
    REJECTED,
    RING_STOPPERS,
    SESSION_ENDED,
    CallEvent,
    InvalidEvent,
    parse_stored_body,
)

log = logging.getLogger("callpush.ring")


@dataclass(frozen=True, slots=True)
class RingStops:
    everyone: str | None  # the reason the whole ring is over, if it is
    users: frozenset[str]  # callees who accepted or rejected already


def ring_deadline(event: CallEvent, stored: StoredEvent, default_timeout_ms: int) -> datetime:
    """When the callee's phone stops ringing anyway (stream-protocol.md §5).  Counted from the
    earlier of Stream's created_at and our receipt, so a clock skew never extends a ring."""
    started = min(filter(None, (event.created_at, stored.received_at)))
    return started + timedelta(milliseconds=event.ring_timeout_ms or default_timeout_ms)


def ring_targets(
    found: Sequence[DeviceTarget], *, alert_ring: bool = True
) -> list[tuple[DeviceTarget, PushKind]]:
    """How each device rings: an APNs VoIP token through PushKit (CallKit), an FCM token
    through a data message, and a regular APNs token through a time-sensitive alert when its
    phone has no VoIP token (an app without CallKit) and ``alert_ring`` is on.

    Never both kinds to one phone: a regular token is left out when a VoIP token of its user is
    on the same phone (``hardware_id``), or may be (either token's ``hardware_id`` unknown)."""
    voip_phones: dict[str, set[str | None]] = {}
    for device in found:
        if device.platform is Platform.APNS and device.voip:
            voip_phones.setdefault(device.user_id, set()).add(device.hardware_id or None)
    targets = []
    for device in found:
        if device.platform is Platform.APNS and device.voip:
            targets.append((device, PushKind.VOIP))
        elif device.platform is Platform.FCM:
            targets.append((device, PushKind.DATA))
        elif alert_ring and not _may_share_a_phone(device, voip_phones.get(device.user_id)):
            targets.append((device, PushKind.ALERT))
    return targets


def _may_share_a_phone(device: DeviceTarget, voip_phones: set[str | None] | None) -> bool:
    if not voip_phones:
        return False
    hardware_id = device.hardware_id or None
    return hardware_id is None or None in voip_phones or hardware_id in voip_phones


def build_ring_message(
    services: Services,
    event: CallEvent,
    claim: Claim,
    *,
    time_to_live: int,
    event_id: int,
    api_key: str,
) -> PushMessage:
    """The ring push of one claim, through the provider of the device for the app ``api_key``."""
    device = claim.device
    provider = services.provider_for(api_key, device)
    if claim.kind is PushKind.DATA:
        return payloads.fcm_ring(
            event,
            device,
            time_to_live=time_to_live,
            event_id=event_id,
            provider=provider,
            receipt_id=claim.receipt_id,
        )
    name = next((m.display_name for m in event.members if m.user_id == device.user_id), "")
    text = services.push_text(api_key, event, device.user_id, name)
    build = payloads.apns_voip_ring if claim.kind is PushKind.VOIP else payloads.apns_alert_ring
    return build(
        event,
        device,
        bundle_id=services.bundle_id(provider),
        time_to_live=time_to_live,
        event_id=event_id,
        text=text,
        provider=provider,
        receipt_id=claim.receipt_id,
    )


def find_ring_stops(session: Session, event: CallEvent, stored: StoredEvent) -> RingStops:
    """Accepted / rejected / ended events of this call that came after the ring."""
    everyone: str | None = None
    users: set[str] = set()
    for stop in inbox.stop_events_for_call(
        session,
        event.call_cid,
        RING_STOPPERS,
        since=stored.received_at - timedelta(minutes=10),
        api_key=stored.api_key,
    ):
        if stop.session_id and event.session_id and stop.session_id != event.session_id:
            continue  # a stop for another session of the same call
        if stop.event_created_at and event.created_at:
            if stop.event_created_at < event.created_at:
                continue
        elif stop.received_at < stored.received_at:
            continue
        actor = _actor_of(stop.body)
        if stop.event_type in (ENDED, SESSION_ENDED, LIVE_STARTED):
            everyone = stop.event_type
        elif stop.event_type == REJECTED and actor == event.created_by_id:
            everyone = "call.rejected by the caller"
        elif stop.event_type in (ACCEPTED, REJECTED) and actor:
            users.add(actor)
    return RingStops(everyone, frozenset(users))


def _actor_of(body: str) -> str | None:
    """Who sent a stop event (its ``user``): the one who accepted or rejected."""
    try:
        return parse_stored_body(body).actor_id
    except InvalidEvent:
        return None


def deliver_ring(services: Services, stored: StoredEvent, event: CallEvent) -> tuple[str, str]:
    """Send the ring pushes of one call.ring event; return the event's final status and reason."""
    deadline = ring_deadline(event, stored, services.settings.ring.default_timeout_ms)
    if stored.replay_force:
        timeout = event.ring_timeout_ms or services.settings.ring.default_timeout_ms
        deadline = services.now() + timedelta(milliseconds=timeout)
    if off := services.push_switched_off(stored.api_key, event):
        return EventStatus.IGNORED, off
    source = services.device_source(stored.api_key)
    try:
        recipients = ring_recipients(event, services.stream_api(stored.api_key))
    except StreamApiError as error:
        # The ring cannot wait for Stream: ring the members the event lists.
        log.warning("ring %s: could not list the members from Stream (%s)", event.call_cid, error)
        recipients = ring_recipients(event)
    counts: Counter[str] = Counter()
    lease = services.claim_lease()
    try:
        # One transaction for everything before the first push: the ring path's round trips.
        with services.db.transaction() as session:
            muted = preferences.muted_until(session, stored.api_key, recipients, services.now())
            found = source.devices_for(session, [r for r in recipients if r not in muted])
            app = services.settings.app_for_key(stored.api_key)
            alert_ring = app is None or app.alert_ring
            targets = [
                (device, kind, services.provider_label(stored.api_key, device))
                for device, kind in ring_targets(one_ring_per_phone(found), alert_ring=alert_ring)
            ]
            claims = _claim_unless_stopped(session, event, stored, targets, lease, counts)
    except StreamApiError as error:
        # No retry after the ring: by the time Stream answers again the phone should have rung.
        return EventStatus.FAILED, f"could not list devices from Stream: {error}"
    settled = counts[DeliveryStatus.CANCELLED] + counts[DeliveryStatus.UNCONFIRMED]
    all_ours = len(claims) + settled == len(targets)
    while True:
        if claims:
            _send_until_deadline(services, event, stored, claims, deadline, counts)
        if all_ours:
            break
        # Pushes another worker claimed and has not settled: a live one finishes them; a dead
        # one's (kill -9 mid-send) are settled unconfirmed once their lease runs out (never
        # re-sent: the request may have been written), and its pending retries taken over.
        with services.db.transaction() as session:
            held = deliveries.unsettled_claim_times(session, stored.event_id)
        if not held:
            break
        takeover_at = min(held) + lease
        if takeover_at >= deadline:
            counts["held by another worker"] += len(held)
            break
        services.sleep(max(0.0, (takeover_at - services.now()).total_seconds()) + 0.01)
        with services.db.transaction() as session:
            claims = _claim_unless_stopped(session, event, stored, targets, lease, counts)
    # After the pushes, never before them: the ring path's latency is the sends'.
    with services.db.transaction() as session:
        counts[DeliveryStatus.SKIPPED] += record_unreached(
            session,
            event_id=stored.event_id,
            api_key=stored.api_key,
            event_type=event.type,
            recipients=recipients,
            muted=muted,
            active=found,
            pushed={device.user_id for device, _kind, _provider in targets},
            alert_ring=alert_ring,
        )
        reach = event_reach(session, stored.event_id, event.type)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()) if n)
    failed = counts.get(DeliveryStatus.FAILED, 0)
    status = EventStatus.FAILED if failed else EventStatus.PROCESSED
    return status, f"{reach.summary}: {summary}" if summary else reach.summary


@dataclass(slots=True)
class _Waiting:
    """A push the provider did not take, waiting for its next attempt."""

    claim: Claim
    due: datetime
    last: PushOutcome  # the provider's answer to the latest attempt


def _send_until_deadline(
    services: Services,
    event: CallEvent,
    stored: StoredEvent,
    claims: list[Claim],
    deadline: datetime,
    counts: Counter[str],
) -> None:
    """Send the claimed pushes; retry those the provider certainly did not take until the ring
    is over.  Each waits for its own backoff (a Retry-After for one never delays another)."""
    lease = services.claim_lease()
    last: dict[int, PushOutcome] = {}  # by delivery id: the answer before this attempt
    waiting: dict[int, _Waiting] = {}
    due = claims
    while due or waiting:
        if due:
            for item in _attempt(services, event, stored, due, deadline, last, counts):
                waiting[item.claim.delivery_id] = item
        if not waiting:
            return
        wake = min(item.due for item in waiting.values())
        # Outside any transaction: a sleeping ring holds no database connection.
        services.sleep(max(0.0, (wake - services.now()).total_seconds()))
        now = services.now()
        ready = [item for item in waiting.values() if item.due <= now]
        for item in ready:
            del waiting[item.claim.delivery_id]
            last[item.claim.delivery_id] = item.last
        # Claimed again, and dropped if the call was answered or ended in the meantime (or if
        # another worker took the retry over: it settles it).
        targets = [
            (i.claim.device, i.claim.kind, services.provider_label(stored.api_key, i.claim.device))
            for i in ready
        ]
        with services.db.transaction() as session:
            due = _claim_unless_stopped(session, event, stored, targets, lease, counts)


def _attempt(
    services: Services,
    event: CallEvent,
    stored: StoredEvent,
    claims: list[Claim],
    deadline: datetime,
    last: dict[int, PushOutcome],
    counts: Counter[str],
) -> list[_Waiting]:
    """One attempt at the claimed pushes; returns those to try again, each with its time."""
    remaining = (deadline - services.now()).total_seconds()
    if remaining <= 0:
        _give_up(services, claims, last, counts, attempted=False)
        return []
    ttl = max(1, math.ceil(remaining))
    messages = [
        replace(
            build_ring_message(
                services,
                event,
                claim,
                time_to_live=ttl,
                event_id=stored.event_id,
                api_key=stored.api_key,
            ),
            at_most_once=True,
        )
        for claim in claims
    ]
    outcomes = services.sender.send(messages)
    recorded = record_push_outcomes(
        services.db,
        stored.event_id,
        stored.received_at,
        claims,
        outcomes,
        provider_of=services.sender.provider_name,
        ring=True,
    )
    # A retried push is counted once it settles (sent, failed, ...).
    counts.update({s: n for s, n in recorded.items() if s != DeliveryStatus.RETRY})
    now = services.now()
    waiting, out_of_time = [], []
    for claim, outcome in zip(claims, outcomes, strict=True):
        if outcome.result is not PushResult.RETRY:
            continue
        due = now + timedelta(seconds=ring_retry_delay(services.settings.ring, claim, outcome))
        if due < deadline:
            waiting.append(_Waiting(claim, due, outcome))
        else:  # never sleep past the end of the ring
            last[claim.delivery_id] = outcome
            out_of_time.append(claim)
    _give_up(services, out_of_time, last, counts, attempted=True)
    return waiting


def ring_retry_delay(ring: RingSettings, claim: Claim, outcome: PushOutcome) -> float:
    """Seconds before the next attempt of a push after ``claim.attempt`` attempts: capped
    exponential backoff with "equal jitter" (half fixed, half random: AWS Architecture Blog,
    "Exponential Backoff And Jitter"), or the provider's Retry-After when that is longer."""
    exponent = min(claim.attempt - 1, 30)
    ceiling = min(ring.retry_backoff_max_ms, ring.retry_backoff_ms * 2**exponent) / 1000
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, outcome.retry_after or 0.0)


def _give_up(
    services: Services,
    claims: Sequence[Claim],
    last: dict[int, PushOutcome],
    counts: Counter[str],
    *,
    attempted: bool,
) -> None:
    """The ring is over for these claims (``attempted``: just now).  Not tried by this run (a
    ring processed too late, a replay after the ring): ``expired``.  Tried and refused until the
    end: ``failed``, with the provider's last reason and the number of attempts."""
    if not claims:
        return
    expired: list[tuple[Claim, int]] = []
    failed: list[tuple[Claim, int]] = []
    for claim in claims:
        tried = attempted or claim.delivery_id in last
        attempts = claim.attempt if attempted else claim.attempt - 1
        (failed if tried else expired).append((claim, attempts))
    with services.db.transaction() as session:
        deliveries.settle_without_sending(
            session,
            [claim for claim, _ in expired],
            DeliveryStatus.EXPIRED,
            "ring over before it could be sent",
        )
        for claim, attempts in failed:
            answer = last.get(claim.delivery_id)
            why = f"{answer.reason}: " if answer and answer.reason else ""
            reason = f"{why}not accepted in {attempts} attempt(s) before the ring was over"
            deliveries.settle_without_sending(session, [claim], DeliveryStatus.FAILED, reason)
    counts[DeliveryStatus.EXPIRED] += len(expired)
    counts[DeliveryStatus.FAILED] += len(failed)


def _claim_unless_stopped(
    session: Session,
    event: CallEvent,
    stored: StoredEvent,
    targets: Sequence[tuple[DeviceTarget, PushKind, str]],
    lease: timedelta,
    counts: Counter[str],
) -> list[Claim]:
    """Claim the ring pushes, then cancel those the call's accepted / rejected / ended events
    stop (stream-protocol.md §3.7): checked before every attempt, retries included.  A claim
    whose worker died mid-send is settled unconfirmed, never taken over."""
    counts[DeliveryStatus.UNCONFIRMED] += deliveries.settle_abandoned_sends(
        session, stored.event_id, lease
    )
    claims = deliveries.claim_deliveries(
        session, stored.event_id, targets, lease, take_over_sending=False
    )
    if stored.replay_force or not claims:
        return claims
    stops = find_ring_stops(session, event, stored)
    if stops.everyone:
        cancelled, keep = claims, []
    else:
        cancelled = [c for c in claims if c.device.user_id in stops.users]
        keep = [c for c in claims if c.device.user_id not in stops.users]
    if cancelled:
        reason = stops.everyone or "callee already answered"
        deliveries.settle_without_sending(session, cancelled, DeliveryStatus.CANCELLED, reason)
        counts[DeliveryStatus.CANCELLED] += len(cancelled)
    return keep
