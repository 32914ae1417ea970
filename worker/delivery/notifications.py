"""Non-ring call pushes (call.notification, call.missed, call.session_started,
call.live_started) at any call size.

Planning pages through the recipients (the event's members, or Stream's QueryCallMembers) and
stores them in chunks, each delivered by its own task on the ``bulk`` queue, so a 10,000-member
call is never held in memory at once and never delays a ring.  A chunk claims its pushes per
(event, device) like a ring does; transient failures are retried by the task with exponential
backoff and full jitter, up to a cap, after which they are recorded as failed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from worker.delivery import payloads
from worker.delivery.push_outcomes import OutcomeRecorder
from worker.delivery.recipient_outcomes import event_reach, reach_of, record_unreached
from worker.delivery.recipients import recipient_pages
from worker.delivery.services import Services
from worker.delivery.unexpected_errors import is_unexpected_reason, unexpected_reason
from worker.foundation.handoff import RetryLater
from worker.foundation.logging_setup import bind_log_context, log_context
from worker.foundation.settings import DEFAULT_FCM_HIGH_PRIORITY
from worker.push.base import Platform, PushKind, PushMessage, PushResult
from worker.storage import deliveries, fanout, inbox, preferences
from worker.storage.db_errors import is_transient_db_error
from worker.storage.deliveries import Claim
from worker.storage.devices import DeviceTarget
from worker.storage.inbox import StoredEvent
from worker.storage.models import ChunkStatus, DeliveryStatus, EventStatus
from worker.stream.api import StreamApiError
from worker.stream.events import CallEvent, parse_stored_body

log = logging.getLogger("callpush.notifications")


def plan_fanout(
    services: Services, stored: StoredEvent, event: CallEvent
) -> tuple[str, str] | None:
    """Store the recipients in chunks and queue one bulk task per chunk.  Returns None: the event
    is finished by its last chunk (:func:`deliver_chunk`)."""
    if off := services.push_switched_off(stored.api_key, event):
        return EventStatus.IGNORED, off
    size = services.settings.fanout.chunk_size
    index, buffer = 0, list[tuple[str, str]]()
    queued: list[int] = []
    try:
        for page in recipient_pages(event, services.stream_api(stored.api_key)):
            buffer.extend((r.user_id, r.display_name) for r in page)
            while len(buffer) >= size:
                queued += _store_chunk(services, stored.event_id, index, buffer[:size])
                buffer, index = buffer[size:], index + 1
    except StreamApiError as error:
        # Chunks stored so far stay; planning again skips them.  Retried with backoff while
        # Stream's trouble is transient, then the event fails (and can be replayed).
        if error.retryable and stored.attempt <= services.settings.fanout.max_retries:
            delay = max(error.retry_after or 0.0, backoff_with_jitter(services, stored.attempt - 1))
            raise RetryLater(delay, f"Stream API: {error}") from error
        return EventStatus.FAILED, f"could not list the call's members from Stream: {error}"
    if buffer:
        queued += _store_chunk(services, stored.event_id, index, buffer)
        index += 1
    with services.db.transaction() as session:
        fanout.set_planned(session, stored.event_id, index)
        # A redelivered planning task re-queues the chunks a lost worker left pending.
        queued = sorted(set(queued) | set(fanout.pending_chunks(session, stored.event_id)))
    try:
        for chunk_index in queued:
            services.handoff.queue_chunk(stored.event_id, chunk_index)
    except Exception:
        # The broker is away: no reason to fail the event.  Its chunks are stored and it stays
        # processing; the inbox sweeper queues it again, and planning again queues the chunks
        # still pending.
        log.exception("event %s: could not queue its chunks; left for the sweeper", stored.event_id)
        return None
    if index == 0:
        return EventStatus.PROCESSED, f"{reach_of(event.type, 0, 0).summary}: no recipients"
    _finish_if_complete(services, stored.event_id)
    return None


def _store_chunk(
    services: Services, event_id: int, index: int, recipients: Sequence[tuple[str, str]]
) -> list[int]:
    with services.db.transaction() as session:
        return [index] if fanout.add_chunk(session, event_id, index, recipients) else []


def deliver_chunk(services: Services, event_id: int, chunk_index: int, attempt: int) -> None:
    """Send one chunk's pushes.  ``attempt`` counts from 0; while transient failures remain
    (within ``fanout.max_retries``) it raises :class:`RetryLater`, and the caller runs the
    chunk again after the delay."""
    with log_context(event_id=event_id):
        try:
            _deliver_chunk(services, event_id, chunk_index, attempt)
        except RetryLater:
            raise
        except Exception as error:
            if is_transient_db_error(error):
                raise  # the task fails; the sweeper re-queues the event's pending chunks
            # Running it again would fail again (and the sweeper would re-queue it forever):
            # the chunk ends failed, and with it the event once every chunk is finished.
            log.exception("chunk %s of event %s failed: unexpected error", chunk_index, event_id)
            with services.db.transaction() as session:
                fanout.finish_chunk(
                    session, event_id, chunk_index, ChunkStatus.FAILED, unexpected_reason(error)
                )
            _finish_if_complete(services, event_id)


def _deliver_chunk(services: Services, event_id: int, chunk_index: int, attempt: int) -> None:
    settings = services.settings
    with services.db.transaction() as session:
        recipients = fanout.load_chunk_recipients(session, event_id, chunk_index)
        row = inbox.load_event(session, event_id)
        if recipients is None or row is None:
            return
        bind_log_context(call_cid=row.call_cid)
        stored = StoredEvent(row.id, row.received_at, row.api_key)
        event = parse_stored_body(row.body)
        names = dict(recipients)
        muted = preferences.muted_until(session, row.api_key, list(names), services.now())
        found = services.device_source(row.api_key).devices_for(
            session, [user for user in names if user not in muted]
        )
        targets = alert_targets(found)
        claims = deliveries.claim_deliveries(
            session,
            event_id,
            [(d, kind, services.provider_label(row.api_key, d)) for d, kind in targets],
            lease=services.claim_lease(),
        )
        # Recorded with the claims: a bulk push is not latency-critical, and a chunk run again
        # records its recipients' situation afresh.
        record_unreached(
            session,
            event_id=event_id,
            api_key=row.api_key,
            event_type=event.type,
            recipients=list(names),
            muted=muted,
            active=found,
            pushed={device.user_id for device, _kind in targets},
        )
    retry: list[Claim] = []
    retry_after = 0.0
    # At most ``send_batch`` pushes in flight, each answer recorded as it arrives: a worker
    # killed mid-chunk leaves unrecorded only the pushes in flight at that moment, and only
    # those are sent again by whoever takes its claims over (README: guarantees).
    size = settings.fanout.send_batch
    with OutcomeRecorder(
        services.db, event_id, stored.received_at, provider_of=services.sender.provider_name
    ) as recorder:
        for start in range(0, len(claims), size):
            recorder.raise_if_failed()
            part = claims[start : start + size]
            messages = [
                _message(services, stored, event, claim, names[claim.device.user_id])
                for claim in part
            ]
            outcomes = services.sender.send(messages, on_answer=recorder.answers_for(part))
            for claim, outcome in zip(part, outcomes, strict=True):
                if outcome.result is PushResult.RETRY:
                    retry.append(claim)
                    retry_after = max(retry_after, outcome.retry_after or 0.0)
    if retry:
        if attempt < settings.fanout.max_retries:
            delay = max(retry_after, backoff_with_jitter(services, attempt))
            raise RetryLater(delay, f"{len(retry)} pushes to retry")
        with services.db.transaction() as session:
            deliveries.settle_without_sending(
                session, retry, DeliveryStatus.FAILED, "retries exhausted"
            )
    with services.db.transaction() as session:
        held = deliveries.unsettled_claim_times(session, event_id, list(names))
    if held:
        # Claims of a worker that died mid-chunk (or is still sending): run again once their
        # lease is over, to take them over; the chunk is not done before.
        wait = (min(held) + services.claim_lease() - services.now()).total_seconds()
        raise RetryLater(max(0.5, wait + 0.1), "claims of another worker still held")
    with services.db.transaction() as session:
        failed = deliveries.count_failed(session, event_id, list(names))
        status = ChunkStatus.FAILED if failed else ChunkStatus.DONE
        fanout.finish_chunk(
            session, event_id, chunk_index, status, f"{failed} failed" if failed else None
        )
    _finish_if_complete(services, event_id)


def alert_targets(found: Sequence[DeviceTarget]) -> list[tuple[DeviceTarget, PushKind]]:
    """Plain APNs tokens get alerts, FCM tokens data messages; VoIP tokens get nothing but
    rings (Apple ends apps whose VoIP pushes do not report a call, §3.3)."""
    targets = []
    for device in found:
        if device.platform is Platform.APNS and not device.voip:
            targets.append((device, PushKind.ALERT))
        elif device.platform is Platform.FCM:
            targets.append((device, PushKind.DATA))
    return targets


def _message(
    services: Services, stored: StoredEvent, event: CallEvent, claim: Claim, receiver_name: str
) -> PushMessage:
    text = services.push_text(stored.api_key, event, claim.device.user_id, receiver_name)
    provider = services.provider_for(stored.api_key, claim.device)
    if claim.kind is PushKind.ALERT:
        return payloads.apns_alert(
            event,
            claim.device,
            text,
            bundle_id=services.bundle_id(provider),
            event_id=stored.event_id,
            provider=provider,
            receipt_id=claim.receipt_id,
        )
    app = services.settings.app_for_key(stored.api_key)
    high = event.type in (app.fcm_high_priority if app is not None else DEFAULT_FCM_HIGH_PRIORITY)
    return payloads.fcm_data(
        event,
        claim.device,
        text,
        event_id=stored.event_id,
        high_priority=high,
        provider=provider,
        receipt_id=claim.receipt_id,
    )


def backoff_with_jitter(services: Services, attempt: int) -> float:
    """Exponential backoff with full jitter (AWS architecture blog), never below 0.5 s."""
    fan = services.settings.fanout
    ceiling = min(fan.retry_backoff_max_seconds, fan.retry_backoff_seconds * 2**attempt)
    return max(0.5, random.uniform(0, ceiling))


def _finish_if_complete(services: Services, event_id: int) -> None:
    with services.db.transaction() as session:
        complete, failed_chunks = fanout.completion(session, event_id)
        if not complete:
            return
        row = inbox.load_event(session, event_id)
        reach = event_reach(session, event_id, row.event_type if row else "")
        summary = f"{reach.summary}: {fanout.delivery_summary(session, event_id)}"
        if failed_chunks:
            why = fanout.failed_chunk_reason(session, event_id)
            if is_unexpected_reason(why):  # otherwise the summary says it all ("2 failed")
                summary += f"; a chunk failed: {why}"
        status = EventStatus.FAILED if failed_chunks else EventStatus.PROCESSED
        inbox.finish_event(session, event_id, status, summary)
    if failed_chunks:
        log.warning("event %s failed: %s", event_id, summary)
