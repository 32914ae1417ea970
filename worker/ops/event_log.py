"""The event log, read side: what came in, what was sent, and how long it took.

Plain functions over a Session returning frozen dataclasses, shared by `callpush events` /
`callpush trace`, the admin API and the dashboard, so all three show the same facts.  Device
tokens appear only as the redacted hint stored on each delivery (or :func:`redact_token`).
Every query can be narrowed to one Stream app (``api_key``): call ids and user ids are only
unique within an app.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from worker.delivery.recipient_outcomes import PUSHED_EVENT_TYPES, Reach, reach_of
from worker.delivery.recipients import ring_recipients
from worker.foundation.durations import parse_duration
from worker.foundation.logging_setup import redact_token
from worker.foundation.text_escaping import escape_unsafe_in_json
from worker.ops import user_events
from worker.storage import deliveries as delivery_records
from worker.storage import preferences
from worker.storage.models import (
    Delivery,
    DeliveryStatus,
    Device,
    EventStatus,
    FanoutChunk,
    WebhookEvent,
    utcnow,
)
from worker.stream.events import RING, InvalidEvent, parse_call_event

log = logging.getLogger("callpush.event_log")

EVENT_STATUSES = (
    EventStatus.RECEIVED,
    EventStatus.PROCESSING,
    EventStatus.PROCESSED,
    EventStatus.IGNORED,
    EventStatus.FAILED,
)
DELIVERY_STATUSES = (
    DeliveryStatus.SENT,
    DeliveryStatus.FAILED,
    DeliveryStatus.EXPIRED,
    DeliveryStatus.UNCONFIRMED,
    DeliveryStatus.TOKEN_INVALID,
    DeliveryStatus.CANCELLED,
    DeliveryStatus.SKIPPED,
    DeliveryStatus.RETRY,
    DeliveryStatus.SENDING,
)
MAX_LIMIT = 1000
# Ids are 64-bit (BIGINT on PostgreSQL, INTEGER on SQLite); a larger one names no event.
MAX_ID = 2**63 - 1
# A stored body is shown as its JSON document only up to this depth and size; deeper or larger
# ones (never sent by Stream; an import or an older, more permissive version may have stored
# them) are shown as text, so no view recurses or allocates without bound.
MAX_BODY_DEPTH = 64
MAX_BODY_CHARS = 4 * 1024 * 1024

# --- time arguments: --since 1h, --until 2024-05-01T06:00:00Z --------------------------------


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """A point in time: a duration ago (``1h``, ``2d``) or an ISO 8601 timestamp (``Z`` or an
    offset; a timestamp without one is UTC, a bare date is its midnight UTC)."""
    value = text.strip()
    try:
        return (now or utcnow()) - parse_duration(value)
    except (ValueError, OverflowError):
        pass
    normalised = value[:-1] + "+00:00" if value[-1:] in ("z", "Z") else value
    try:
        parsed = datetime.fromisoformat(normalised)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30m, 1h, 2d) nor an ISO 8601 timestamp "
            "(2024-05-01T06:00:00Z)"
        ) from None
    try:
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError(f"{text!r} is out of the range of UTC times") from None


# --- the views --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventSummary:
    id: int
    api_key: str  # the Stream app that sent it
    event_type: str
    call_cid: str | None
    status: str
    status_reason: str | None
    received_at: datetime
    processed_at: datetime | None
    replays: int
    pushes: Mapping[str, int]  # deliveries by status
    # How many recipients a push reached; None for an event that pushes nothing.
    reach: Reach | None = None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: int
    device_id: int | None
    user_id: str
    platform: str
    kind: str
    token_hint: str  # redacted when it was stored
    provider: str
    status: str
    reason: str | None
    status_code: int | None
    attempts: int
    created_at: datetime
    claimed_at: datetime
    finished_at: datetime | None
    latency_ms: float | None  # webhook arrival to the provider's answer
    # The phone's receipt (POST /receipts; None when the app sends none) and the time from the
    # webhook's arrival to it: "delivered to phone, +N ms".
    phone_received_at: datetime | None = None
    phone_latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class EventDetail:
    id: int
    webhook_id: str
    api_key: str
    event_type: str
    call_cid: str | None
    session_id: str | None
    event_created_at: datetime | None
    received_at: datetime
    attempt: int
    status: str
    status_reason: str | None
    processing_attempts: int
    replays: int
    replay_force: bool
    processed_at: datetime | None
    # Who the event was meant for: a fan-out's stored chunks, or a ring's members minus the
    # caller; None when not known (an event that needs no push, or one that failed early).
    recipients: tuple[str, ...] | None
    deliveries: tuple[DeliveryView, ...]
    body: Any  # the stored JSON document (its text when it is not JSON)
    reach: Reach | None = None  # as EventSummary.reach

    @property
    def pushes(self) -> dict[str, int]:
        return _count_by_status(d.status for d in self.deliveries)


@dataclass(frozen=True, slots=True)
class TraceEntry:
    at: datetime
    # "webhook" | "recipients" | "push" | "phone" (the phone's receipt of a push) | "device" (a
    # recipient who got no push, and why: their devices now, e.g. a token that moved to another
    # user)
    kind: str
    event_id: int
    event_type: str
    summary: str
    api_key: str | None = None  # the event's Stream app
    status: str | None = None
    user_id: str | None = None
    platform: str | None = None
    push_kind: str | None = None
    token_hint: str | None = None
    reason: str | None = None
    latency_ms: float | None = None
    reach: Reach | None = None  # a webhook's: how many of its recipients a push reached


@dataclass(frozen=True, slots=True)
class DeviceSummary:
    id: int
    api_key: str
    user_id: str
    platform: str
    voip: bool
    token_hint: str
    app_id: str | None
    push_provider_name: str | None  # which of the app's push providers; None = the default
    source: str
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None
    moved_to_user_id: str | None  # the token was registered by this user of the app since
    last_push_status: str | None
    last_push_at: datetime | None
    last_push_event_id: int | None


# --- queries ----------------------------------------------------------------------------------


def list_events(
    session: Session,
    status: str | None = None,
    event_type: str | None = None,
    call_cid: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    api_key: str | None = None,
    user_id: str | None = None,
) -> list[EventSummary]:
    """The newest events first, filtered; each with its pushes counted by status.  With
    ``user_id``, only the events that concerned that user (worker.ops.user_events): callers bound
    the time window (``since``), as that search reads the window's bodies."""
    conditions = event_conditions(api_key, status, event_type, call_cid, since, until)
    limit = max(1, min(limit, MAX_LIMIT))
    query = select(WebhookEvent).where(*conditions)
    if user_id is not None:
        ids, _more = user_events.matching_event_ids(session, user_id, conditions, limit)
        query = select(WebhookEvent).where(WebhookEvent.id.in_(ids))
    rows = list(session.scalars(query.order_by(WebhookEvent.id.desc()).limit(limit)))
    counts = _push_counts_by_event(session, [row.id for row in rows])
    reaches = delivery_records.recipient_reach(session, [row.id for row in rows])
    return [
        dataclasses.replace(
            _summary(row, counts.get(row.id, {})), reach=_reach(row, reaches.get(row.id))
        )
        for row in rows
    ]


def event_conditions(
    api_key: str | None = None,
    status: str | None = None,
    event_type: str | None = None,
    call_cid: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: int | None = None,
) -> list[ColumnElement[bool]]:
    """The event log's filters as conditions on WebhookEvent (``before``: ids below it, the
    cursor of the next page)."""
    conditions: list[ColumnElement[bool]] = []
    if api_key is not None:
        conditions.append(WebhookEvent.api_key == api_key)
    if status is not None:
        conditions.append(WebhookEvent.status == status)
    if event_type is not None:
        conditions.append(WebhookEvent.event_type == event_type)
    if call_cid is not None:
        conditions.append(WebhookEvent.call_cid == call_cid)
    if since is not None:
        conditions.append(WebhookEvent.received_at >= since)
    if until is not None:
        conditions.append(WebhookEvent.received_at < until)
    if before is not None:
        conditions.append(WebhookEvent.id < before)
    return conditions


def event_detail(session: Session, event_id: int) -> EventDetail | None:
    if not 1 <= event_id <= MAX_ID:
        return None
    row = session.get(WebhookEvent, event_id)
    if row is None:
        return None
    deliveries = delivery_records.deliveries_for_event(session, event_id)
    body = load_body(row.body)
    return EventDetail(
        id=row.id,
        webhook_id=row.webhook_id,
        api_key=row.api_key,
        event_type=row.event_type,
        call_cid=row.call_cid,
        session_id=row.session_id,
        event_created_at=row.event_created_at,
        received_at=row.received_at,
        attempt=row.attempt,
        status=row.status,
        status_reason=row.status_reason,
        processing_attempts=row.processing_attempts,
        replays=row.replays,
        replay_force=row.replay_force,
        processed_at=row.processed_at,
        recipients=_recipients(session, row, body),
        deliveries=tuple(delivery_view(d) for d in deliveries),
        body=body,
        reach=_reach(row, delivery_records.recipient_reach(session, [row.id]).get(row.id)),
    )


def call_trace(session: Session, call_cid: str, api_key: str | None = None) -> list[TraceEntry]:
    """One call's timeline: every webhook received, the recipients each event resolved to (its
    devices), every push with its outcome and its latency from webhook to provider, and the
    recipients who got none with their devices' state (no device, a dead token, a token that
    moved to another user).  ``api_key`` keeps to one app's call of that id."""
    query = select(WebhookEvent).where(WebhookEvent.call_cid == call_cid)
    if api_key is not None:
        query = query.where(WebhookEvent.api_key == api_key)
    events = list(session.scalars(query.order_by(WebhookEvent.received_at, WebhookEvent.id)))
    by_event: dict[int, list[Delivery]] = {event.id: [] for event in events}
    if events:
        for delivery in session.scalars(
            select(Delivery).where(Delivery.event_id.in_(list(by_event))).order_by(Delivery.id)
        ):
            by_event[delivery.event_id].append(delivery)
    entries: list[TraceEntry] = []
    reaches = delivery_records.recipient_reach(session, list(by_event))
    for event in events:
        reach = _reach(event, reaches.get(event.id))
        reason = f": {event.status_reason}" if event.status_reason else ""
        if reach and not (event.status_reason or "").startswith(reach.summary):
            reason = f": {reach.summary}{'; ' + event.status_reason if event.status_reason else ''}"
        replayed = f", replayed {event.replays}x" if event.replays else ""
        entries.append(
            TraceEntry(
                at=event.received_at,
                kind="webhook",
                event_id=event.id,
                event_type=event.event_type,
                summary=f"{event.event_type} received; {event.status}{reason}{replayed}",
                status=event.status,
                api_key=event.api_key,
                reach=reach,
            )
        )
        pushes = by_event[event.id]
        entries.extend(_unreached_recipients(session, event, {d.user_id for d in pushes}))
        if not pushes:
            continue
        users = sorted({d.user_id for d in pushes})
        shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
        pushed = [d for d in pushes if not delivery_records.is_recipient_row(d)]
        entries.append(
            TraceEntry(
                at=min(d.created_at for d in pushes),
                kind="recipients",
                event_id=event.id,
                event_type=event.event_type,
                summary=f"{len(pushed)} device(s) of {len(users)} user(s): {shown}",
                api_key=event.api_key,
            )
        )
        for d in pushes:
            latency = f" after {format_latency(d.latency_ms)}" if d.latency_ms is not None else ""
            why = f" ({d.reason})" if d.reason else ""
            device = " ".join(part for part in (d.platform, d.kind, d.token_hint) if part)
            entries.append(
                TraceEntry(
                    at=d.finished_at or d.claimed_at,
                    kind="push",
                    event_id=event.id,
                    event_type=event.event_type,
                    summary=f"{d.status}{why}{latency}: {d.user_id} {device}".rstrip(),
                    status=d.status,
                    user_id=d.user_id,
                    platform=d.platform,
                    push_kind=d.kind,
                    token_hint=d.token_hint,
                    reason=d.reason,
                    latency_ms=d.latency_ms,
                    api_key=event.api_key,
                )
            )
            if d.phone_received_at is not None:
                entries.append(_phone_entry(event, d, d.phone_received_at))
    order = {"webhook": 0, "recipients": 1, "push": 2, "phone": 3, "device": 4}
    # Stable: within the same instant a webhook comes before what it caused.
    return sorted(entries, key=lambda e: (e.at, order[e.kind]))


def push_counts(session: Session, since: datetime, api_key: str | None = None) -> dict[str, int]:
    """Pushes by result since ``since`` (every status present, zero or not), for the dashboard.
    A replayed push keeps its row's created_at, so finished_at counts as well."""
    query = select(Delivery.status, func.count()).where(
        or_(Delivery.created_at >= since, Delivery.finished_at >= since)
    )
    if api_key is not None:
        query = query.join(WebhookEvent, WebhookEvent.id == Delivery.event_id).where(
            WebhookEvent.api_key == api_key
        )
    rows = session.execute(query.group_by(Delivery.status)).all()
    counts = dict.fromkeys(DELIVERY_STATUSES, 0)
    counts.update({status: int(n) for status, n in rows})
    return counts


def find_devices(
    session: Session, user_id: str | None, limit: int = 100, api_key: str | None = None
) -> list[DeviceSummary]:
    """A user's devices (tokens redacted) with the last push each one got; disabled ones with
    the reason (and, for a token that moved, who has it now)."""
    query = select(Device).order_by(Device.api_key, Device.user_id, Device.id)
    if api_key is not None:
        query = query.where(Device.api_key == api_key)
    if user_id is not None:
        query = query.where(Device.user_id == user_id)
    devices = list(session.scalars(query.limit(max(1, min(limit, MAX_LIMIT)))))
    last: dict[int, Delivery] = {}
    if devices:
        # The newest attempt per device (claimed_at moves on each retry and replay; ids do not
        # follow time, a replayed old event keeps its rows).
        ranked = (
            select(
                Delivery.id,
                func.row_number()
                .over(
                    partition_by=Delivery.device_id,
                    order_by=(Delivery.claimed_at.desc(), Delivery.id.desc()),
                )
                .label("rank"),
            )
            .where(Delivery.device_id.in_([d.id for d in devices]))
            .subquery()
        )
        newest = select(ranked.c.id).where(ranked.c.rank == 1)
        for delivery in session.scalars(select(Delivery).where(Delivery.id.in_(newest))):
            assert delivery.device_id is not None
            last[delivery.device_id] = delivery
    return [
        DeviceSummary(
            id=d.id,
            api_key=d.api_key,
            user_id=d.user_id,
            platform=d.platform,
            voip=d.voip,
            token_hint=redact_token(d.token),
            app_id=d.app_id,
            push_provider_name=d.push_provider_name,
            source=d.source,
            created_at=d.created_at,
            disabled_at=d.disabled_at,
            disabled_reason=d.disabled_reason,
            moved_to_user_id=d.moved_to_user_id,
            last_push_status=last[d.id].status if d.id in last else None,
            last_push_at=_push_time(last[d.id]) if d.id in last else None,
            last_push_event_id=last[d.id].event_id if d.id in last else None,
        )
        for d in devices
    ]


# --- JSON -------------------------------------------------------------------------------------


def as_json(value: Any) -> Any:
    """The JSON shape of any view above (datetimes as RFC 3339 UTC with ``Z``); the CLI's
    ``--json`` and the admin API answer the same documents."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        document = {f.name: as_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, EventDetail):
            document["pushes"] = value.pushes
        return document
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    return value


def load_body(text: str) -> Any:
    """A stored body as its JSON document, or as text when it is not JSON, is nested deeper
    than MAX_BODY_DEPTH or is longer than MAX_BODY_CHARS (then cut, saying so)."""
    if len(text) > MAX_BODY_CHARS:
        return f"{text[:MAX_BODY_CHARS]}… ({len(text) - MAX_BODY_CHARS} more characters)"
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return document if _depth_at_most(document, MAX_BODY_DEPTH) else text


def _depth_at_most(document: Any, limit: int) -> bool:
    pending: list[tuple[Any, int]] = [(document, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth >= limit:
                return False
            children = value.values() if isinstance(value, dict) else value
            pending.extend((child, depth + 1) for child in children)
    return True


def body_text(body: Any, max_chars: int) -> str:
    """The body for a person to read: indented JSON (text as it is), characters that cannot be
    shown escaped, at most ``max_chars`` (then cut, saying so)."""
    text = (
        body
        if isinstance(body, str)
        else json.dumps(body, indent=2, ensure_ascii=False, sort_keys=True)
    )
    if len(text) > max_chars:
        text = f"{text[:max_chars]}\n… ({len(text) - max_chars} more characters)"
    return escape_unsafe_in_json(text)


# Lone UTF-16 surrogates: JSON may carry "\\ud800", which no terminal or web page can encode.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def readable_json(document: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """JSON text for people: non-ASCII characters as themselves, except lone surrogates (a
    stored body may hold them), which stay escaped so the text can be printed."""
    text = json.dumps(document, indent=indent, ensure_ascii=False, sort_keys=sort_keys)
    return _LONE_SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def format_latency(ms: float | None) -> str:
    """``180 ms``, ``12.4 s``, ``20 min``: a replayed push's latency counts from the original
    webhook, so it can be long."""
    if ms is None:
        return "-"
    if ms < 10_000:
        return f"{ms:.0f} ms"
    if ms < 600_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:,.0f} min"


def format_phone_receipt(phone_latency_ms: float | None) -> str:
    """``delivered to phone, +850 ms``: the phone's receipt, timed from the webhook (as the
    push's latency is)."""
    return f"delivered to phone, +{format_latency(phone_latency_ms)}"


def format_pushes(counts: Mapping[str, int]) -> str:
    """``2 sent, 1 failed`` (only the statuses that occur)."""
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "-"


# --- helpers ----------------------------------------------------------------------------------


def _summary(row: WebhookEvent, pushes: Mapping[str, int]) -> EventSummary:
    return EventSummary(
        id=row.id,
        api_key=row.api_key,
        event_type=row.event_type,
        call_cid=row.call_cid,
        status=row.status,
        status_reason=row.status_reason,
        received_at=row.received_at,
        processed_at=row.processed_at,
        replays=row.replays,
        pushes=pushes,
    )


def _reach(row: WebhookEvent, counts: tuple[int, int, int] | None) -> Reach | None:
    if counts is None:  # no outcome recorded
        finished = row.status in (EventStatus.PROCESSED, EventStatus.FAILED)
        if row.event_type not in PUSHED_EVENT_TYPES or not finished:
            return None
        counts = (0, 0, 0)
    return reach_of(row.event_type, *counts)


def _push_counts_by_event(session: Session, event_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    if not event_ids:
        return {}
    rows = session.execute(
        select(Delivery.event_id, Delivery.status, func.count())
        .where(Delivery.event_id.in_(list(event_ids)))
        .group_by(Delivery.event_id, Delivery.status)
    ).all()
    found: dict[int, dict[str, int]] = {}
    for event_id, status, n in rows:
        found.setdefault(event_id, {})[status] = int(n)
    return {
        event_id: {s: counts[s] for s in DELIVERY_STATUSES if s in counts}
        for event_id, counts in found.items()
    }


def _count_by_status(statuses: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return {s: counts[s] for s in DELIVERY_STATUSES if s in counts}


def _recipients(session: Session, row: WebhookEvent, body: Any) -> tuple[str, ...] | None:
    chunks = list(
        session.scalars(
            select(FanoutChunk.recipients)
            .where(FanoutChunk.event_id == row.id)
            .order_by(FanoutChunk.chunk_index)
        )
    )
    if chunks:
        return tuple(user_id for chunk in chunks for user_id, _name in json.loads(chunk))
    if row.event_type == RING and isinstance(body, Mapping):
        try:
            return tuple(ring_recipients(parse_call_event(body)))
        except InvalidEvent:
            return None
        except Exception:
            # A view must show an event whatever its stored body holds: a body the parser
            # chokes on (stored by an older version) shows no recipients rather than an error.
            log.warning("event %s: recipients not shown: the body cannot be parsed", row.id)
            return None
    return None


# Recipients without a push described per event in a trace; the rest are only counted.
UNREACHED_SHOWN = 20
DEVICES_SHOWN_PER_USER = 3


def _unreached_recipients(
    session: Session, event: WebhookEvent, reached: set[str]
) -> list[TraceEntry]:
    """For an event that was processed: each recipient who got no push, with the state of
    their devices in the event's app now ("did Bob's phone ring?" - no: his token moved to
    another user, was disabled by Apple, or he has none)."""
    if event.status not in (EventStatus.PROCESSED, EventStatus.FAILED):
        return []
    body = load_body(event.body)  # a body no webhook would carry shows no recipients
    recipients = _recipients(session, event, body)
    missing = [user for user in dict.fromkeys(recipients or ()) if user not in reached]
    if not missing:
        return []
    shown = missing[:UNREACHED_SHOWN]
    devices: dict[str, list[Device]] = {user: [] for user in shown}
    for device in session.scalars(
        select(Device)
        .where(Device.api_key == event.api_key, Device.user_id.in_(shown))
        # Active first, then the most recently disabled: what explains a missing push.
        .order_by(Device.disabled_at.is_not(None), Device.disabled_at.desc(), Device.id)
    ):
        devices[device.user_id].append(device)
    at = event.processed_at or event.received_at
    muted = preferences.muted_users(session, event.api_key, shown, at)
    ring = event.event_type == RING
    entries = [
        TraceEntry(
            at=at,
            kind="device",
            event_id=event.id,
            event_type=event.event_type,
            summary=(
                f"no push to {user}: {'call pushes muted; ' if user in muted else ''}"
                f"{describe_devices(devices[user], ring)}"
            ),
            user_id=user,
            api_key=event.api_key,
        )
        for user in shown
    ]
    if len(missing) > len(shown):
        entries.append(
            TraceEntry(
                at=at,
                kind="device",
                event_id=event.id,
                event_type=event.event_type,
                summary=f"and {len(missing) - len(shown)} more recipient(s) got no push",
                api_key=event.api_key,
            )
        )
    return entries


def describe_devices(devices: Sequence[Device], ring: bool) -> str:
    if not devices:
        return "no device registered"
    described = []
    for d in devices[:DEVICES_SHOWN_PER_USER]:
        name = f"{d.platform}{' voip' if d.voip else ''} {redact_token(d.token)}"
        if d.disabled_at is None:
            # iOS rings only through a PushKit (VoIP) token.
            unrung = ring and d.platform == "apns" and not d.voip
            described.append(f"{name} active{' (not a VoIP token: never rung)' if unrung else ''}")
            continue
        moved = f", now {d.moved_to_user_id}'s" if d.moved_to_user_id else ""
        described.append(f"{name} disabled ({d.disabled_reason}{moved})")
    more = len(devices) - DEVICES_SHOWN_PER_USER
    return "; ".join(described) + (f"; and {more} more" if more > 0 else "")


def _phone_entry(event: WebhookEvent, d: Delivery, at: datetime) -> TraceEntry:
    return TraceEntry(
        at=at,
        kind="phone",
        event_id=event.id,
        event_type=event.event_type,
        summary=(
            f"{format_phone_receipt(d.phone_latency_ms)}: {d.user_id} {d.platform} {d.kind} "
            f"{d.token_hint}"
        ),
        status=d.status,
        user_id=d.user_id,
        platform=d.platform,
        push_kind=d.kind,
        token_hint=d.token_hint,
        latency_ms=d.phone_latency_ms,
        api_key=event.api_key,
    )


def delivery_view(d: Delivery) -> DeliveryView:
    return DeliveryView(
        id=d.id,
        device_id=d.device_id,
        user_id=d.user_id,
        platform=d.platform,
        kind=d.kind,
        token_hint=d.token_hint,
        provider=d.provider,
        status=d.status,
        reason=d.reason,
        status_code=d.status_code,
        attempts=d.attempts,
        created_at=d.created_at,
        claimed_at=d.claimed_at,
        finished_at=d.finished_at,
        latency_ms=d.latency_ms,
        phone_received_at=d.phone_received_at,
        phone_latency_ms=d.phone_latency_ms,
    )


def _push_time(d: Delivery) -> datetime:
    return d.finished_at or d.claimed_at
