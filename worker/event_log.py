"""The event log, read side: what came in, what was sent, and how long it took.

Plain functions over a Session returning frozen dataclasses, shared by `callpush events` /
`callpush trace`, the admin API and the dashboard, so all three show the same facts.  Device
tokens appear only as the redacted hint stored on each delivery (or :func:`redact_token`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from worker.durations import parse_duration
from worker.push.base import redact_token
from worker.recipients import ring_recipients
from worker.storage.models import (
    Delivery,
    DeliveryStatus,
    Device,
    EventStatus,
    FanoutChunk,
    WebhookEvent,
    utcnow,
)
from worker.stream_events import RING, InvalidEvent, parse_call_event

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
    DeliveryStatus.TOKEN_INVALID,
    DeliveryStatus.CANCELLED,
    DeliveryStatus.SKIPPED,
    DeliveryStatus.RETRY,
    DeliveryStatus.SENDING,
)
MAX_LIMIT = 1000

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
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


# --- the views --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventSummary:
    id: int
    event_type: str
    call_cid: str | None
    status: str
    status_reason: str | None
    received_at: datetime
    processed_at: datetime | None
    replays: int
    pushes: Mapping[str, int]  # deliveries by status


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

    @property
    def pushes(self) -> dict[str, int]:
        return _count_by_status(d.status for d in self.deliveries)


@dataclass(frozen=True, slots=True)
class TraceEntry:
    at: datetime
    kind: str  # "webhook" | "recipients" | "push"
    event_id: int
    event_type: str
    summary: str
    status: str | None = None
    user_id: str | None = None
    platform: str | None = None
    push_kind: str | None = None
    token_hint: str | None = None
    reason: str | None = None
    latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class DeviceSummary:
    id: int
    user_id: str
    platform: str
    voip: bool
    token_hint: str
    app_id: str | None
    source: str
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None
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
) -> list[EventSummary]:
    """The newest events first, filtered; each with its pushes counted by status."""
    query = select(WebhookEvent)
    if status is not None:
        query = query.where(WebhookEvent.status == status)
    if event_type is not None:
        query = query.where(WebhookEvent.event_type == event_type)
    if call_cid is not None:
        query = query.where(WebhookEvent.call_cid == call_cid)
    if since is not None:
        query = query.where(WebhookEvent.received_at >= since)
    if until is not None:
        query = query.where(WebhookEvent.received_at < until)
    limit = max(1, min(limit, MAX_LIMIT))
    rows = list(session.scalars(query.order_by(WebhookEvent.id.desc()).limit(limit)))
    counts = _push_counts_by_event(session, [row.id for row in rows])
    return [_summary(row, counts.get(row.id, {})) for row in rows]


def event_detail(session: Session, event_id: int) -> EventDetail | None:
    row = session.get(WebhookEvent, event_id)
    if row is None:
        return None
    deliveries = session.scalars(
        select(Delivery).where(Delivery.event_id == event_id).order_by(Delivery.id)
    )
    try:
        body: Any = json.loads(row.body)
    except ValueError:
        body = row.body
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
        deliveries=tuple(_delivery_view(d) for d in deliveries),
        body=body,
    )


def call_trace(session: Session, call_cid: str) -> list[TraceEntry]:
    """One call's timeline: every webhook received, the recipients each event resolved to (its
    devices), and every push with its outcome and its latency from webhook to provider."""
    events = list(
        session.scalars(
            select(WebhookEvent)
            .where(WebhookEvent.call_cid == call_cid)
            .order_by(WebhookEvent.received_at, WebhookEvent.id)
        )
    )
    by_event: dict[int, list[Delivery]] = {event.id: [] for event in events}
    if events:
        for delivery in session.scalars(
            select(Delivery).where(Delivery.event_id.in_(list(by_event))).order_by(Delivery.id)
        ):
            by_event[delivery.event_id].append(delivery)
    entries: list[TraceEntry] = []
    for event in events:
        reason = f": {event.status_reason}" if event.status_reason else ""
        replayed = f", replayed {event.replays}x" if event.replays else ""
        entries.append(
            TraceEntry(
                at=event.received_at,
                kind="webhook",
                event_id=event.id,
                event_type=event.event_type,
                summary=f"{event.event_type} received; {event.status}{reason}{replayed}",
                status=event.status,
            )
        )
        pushes = by_event[event.id]
        if not pushes:
            continue
        users = sorted({d.user_id for d in pushes})
        shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
        entries.append(
            TraceEntry(
                at=min(d.created_at for d in pushes),
                kind="recipients",
                event_id=event.id,
                event_type=event.event_type,
                summary=f"{len(pushes)} device(s) of {len(users)} user(s): {shown}",
            )
        )
        for d in pushes:
            latency = f" after {format_latency(d.latency_ms)}" if d.latency_ms is not None else ""
            why = f" ({d.reason})" if d.reason else ""
            entries.append(
                TraceEntry(
                    at=d.finished_at or d.claimed_at,
                    kind="push",
                    event_id=event.id,
                    event_type=event.event_type,
                    summary=(
                        f"{d.status}{why}{latency}: {d.user_id} {d.platform} {d.kind} "
                        f"{d.token_hint}"
                    ),
                    status=d.status,
                    user_id=d.user_id,
                    platform=d.platform,
                    push_kind=d.kind,
                    token_hint=d.token_hint,
                    reason=d.reason,
                    latency_ms=d.latency_ms,
                )
            )
    order = {"webhook": 0, "recipients": 1, "push": 2}
    # Stable: within the same instant a webhook comes before what it caused.
    return sorted(entries, key=lambda e: (e.at, order[e.kind]))


def push_counts(session: Session, since: datetime) -> dict[str, int]:
    """Pushes by result since ``since`` (every status present, zero or not), for the dashboard.
    A replayed push keeps its row's created_at, so finished_at counts as well."""
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(or_(Delivery.created_at >= since, Delivery.finished_at >= since))
        .group_by(Delivery.status)
    ).all()
    counts = dict.fromkeys(DELIVERY_STATUSES, 0)
    counts.update({status: int(n) for status, n in rows})
    return counts


def find_devices(session: Session, user_id: str | None, limit: int = 100) -> list[DeviceSummary]:
    """A user's devices (tokens redacted) with the last push each one got."""
    query = select(Device).order_by(Device.user_id, Device.id)
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
            user_id=d.user_id,
            platform=d.platform,
            voip=d.voip,
            token_hint=redact_token(d.token),
            app_id=d.app_id,
            source=d.source,
            created_at=d.created_at,
            disabled_at=d.disabled_at,
            disabled_reason=d.disabled_reason,
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


def format_pushes(counts: Mapping[str, int]) -> str:
    """``2 sent, 1 failed`` (only the statuses that occur)."""
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "-"


# --- helpers ----------------------------------------------------------------------------------


def _summary(row: WebhookEvent, pushes: Mapping[str, int]) -> EventSummary:
    return EventSummary(
        id=row.id,
        event_type=row.event_type,
        call_cid=row.call_cid,
        status=row.status,
        status_reason=row.status_reason,
        received_at=row.received_at,
        processed_at=row.processed_at,
        replays=row.replays,
        pushes=pushes,
    )


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
    return None


def _delivery_view(d: Delivery) -> DeliveryView:
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
    )


def _push_time(d: Delivery) -> datetime:
    return d.finished_at or d.claimed_at
