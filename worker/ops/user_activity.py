"""One user's side of the event log: "did Bob's phone ring?".

The events that concerned the user in a time window (as the caller, the one who accepted,
rejected or ended the call, a member, a fan-out recipient, or the owner of a device that got a
push: worker.ops.user_events), newest first and paged by an id cursor, each with every push to each
of the user's devices (result, reason, latency) and, for a recipient who got none, why (muted, no
device, a dead token).  With the user's devices and call-push preferences it is the user page of
the dashboard and ``GET /admin/users/<user_id>``; ``callpush trace --user`` prints it.  Scoped by
app when given (user ids are only unique within a Stream app).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.ops import event_log, user_events
from worker.storage import preferences
from worker.storage.models import (
    Delivery,
    Device,
    EventStatus,
    UserPreference,
    WebhookEvent,
    utcnow,
)
from worker.stream.events import LIVE_STARTED, MISSED, NOTIFICATION, RING, SESSION_STARTED

# Without --since / ?since= a user search covers this much: it reads the window's bodies.
DEFAULT_WINDOW = timedelta(hours=24)
DEFAULT_LIMIT = 50
# The event types that push to their recipients (README: Events, and who is told).
PUSHED_TYPES = frozenset({RING, NOTIFICATION, MISSED, SESSION_STARTED, LIVE_STARTED})


@dataclass(frozen=True, slots=True)
class UserEvent:
    id: int
    api_key: str
    event_type: str
    call_cid: str | None
    status: str
    status_reason: str | None
    received_at: datetime
    roles: tuple[str, ...]  # actor, caller, member, recipient (worker.ops.user_events)
    pushes: tuple[event_log.DeliveryView, ...]  # to this user's devices only
    # A recipient of a pushed event with no push recorded: why, from their devices now.
    no_push: str | None


@dataclass(frozen=True, slots=True)
class UserActivity:
    user_id: str
    api_key: str | None
    since: datetime
    until: datetime | None
    events: tuple[UserEvent, ...]
    next_before: int | None  # the cursor of the next (older) page, None on the last


@dataclass(frozen=True, slots=True)
class PreferenceView:
    api_key: str
    muted: bool
    muted_until: datetime | None
    muted_now: bool
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class UserOverview:
    user_id: str
    api_key: str | None
    devices: tuple[event_log.DeviceSummary, ...]
    preferences: tuple[PreferenceView, ...]
    activity: UserActivity


def user_activity(
    session: Session,
    user_id: str,
    since: datetime,
    until: datetime | None = None,
    api_key: str | None = None,
    limit: int = DEFAULT_LIMIT,
    before: int | None = None,
) -> UserActivity:
    limit = max(1, min(limit, event_log.MAX_LIMIT))
    conditions = event_log.event_conditions(api_key, since=since, until=until, before=before)
    ids, more = user_events.matching_event_ids(session, user_id, conditions, limit)
    rows = list(
        session.scalars(
            select(WebhookEvent).where(WebhookEvent.id.in_(ids)).order_by(WebhookEvent.id.desc())
        )
    )
    pushes: dict[int, list[Delivery]] = {event_id: [] for event_id in ids}
    if ids:
        for delivery in session.scalars(
            select(Delivery)
            .where(Delivery.event_id.in_(ids), Delivery.user_id == user_id)
            .order_by(Delivery.id)
        ):
            pushes[delivery.event_id].append(delivery)
    in_chunks = user_events.chunk_recipient_of(session, user_id, ids)
    explain = _NoPushExplainer(session, user_id)
    found = []
    for row in rows:
        roles = user_events.roles_in_body(event_log.load_body(row.body), user_id)
        if pushes[row.id] or row.id in in_chunks:
            roles.add(user_events.RECIPIENT)
        found.append(
            UserEvent(
                id=row.id,
                api_key=row.api_key,
                event_type=row.event_type,
                call_cid=row.call_cid,
                status=row.status,
                status_reason=row.status_reason,
                received_at=row.received_at,
                roles=tuple(sorted(roles)),
                pushes=tuple(event_log.delivery_view(d) for d in pushes[row.id]),
                no_push=None if pushes[row.id] else explain.why(row, roles),
            )
        )
    return UserActivity(
        user_id=user_id,
        api_key=api_key,
        since=since,
        until=until,
        events=tuple(found),
        next_before=ids[-1] if more and ids else None,
    )


def user_overview(
    session: Session,
    user_id: str,
    since: datetime,
    until: datetime | None = None,
    api_key: str | None = None,
    limit: int = DEFAULT_LIMIT,
    before: int | None = None,
) -> UserOverview:
    """Devices (active and disabled, with the last push each got), call-push preferences and
    the recent events with each device's outcome."""
    query = select(UserPreference).where(UserPreference.user_id == user_id)
    if api_key is not None:
        query = query.where(UserPreference.api_key == api_key)
    now = utcnow()
    prefs = tuple(
        PreferenceView(
            api_key=p.api_key,
            muted=p.muted,
            muted_until=p.muted_until,
            muted_now=preferences.is_muted(p, now),
            updated_at=p.updated_at,
        )
        for p in session.scalars(query.order_by(UserPreference.api_key))
    )
    return UserOverview(
        user_id=user_id,
        api_key=api_key,
        devices=tuple(
            event_log.find_devices(session, user_id, limit=event_log.MAX_LIMIT, api_key=api_key)
        ),
        preferences=prefs,
        activity=user_activity(session, user_id, since, until, api_key, limit, before),
    )


class _NoPushExplainer:
    """Why a recipient got no push: muted at the time, or their devices in the app now (read
    once per app)."""

    def __init__(self, session: Session, user_id: str) -> None:
        self._session = session
        self._user_id = user_id
        self._devices: dict[str, Sequence[Device]] = {}

    def why(self, event: WebhookEvent, roles: set[str]) -> str | None:
        if (
            user_events.CALLER in roles
            or event.event_type not in PUSHED_TYPES
            or event.status not in (EventStatus.PROCESSED, EventStatus.FAILED)
        ):
            return None
        if event.api_key not in self._devices:
            self._devices[event.api_key] = list(
                self._session.scalars(
                    select(Device)
                    .where(Device.api_key == event.api_key, Device.user_id == self._user_id)
                    .order_by(Device.disabled_at.is_not(None), Device.disabled_at.desc(), Device.id)
                )
            )
        at = event.processed_at or event.received_at
        muted = preferences.muted_users(self._session, event.api_key, [self._user_id], at)
        state = event_log.describe_devices(self._devices[event.api_key], event.event_type == RING)
        return f"no push: {'call pushes muted; ' if muted else ''}{state}"


def is_known_user(session: Session, user_id: str, api_key: str | None = None) -> bool:
    """Whether the user has a device or ever got a push (in the app, when given): for a search
    that could be a user id or an event id."""
    devices = select(Device.id).where(Device.user_id == user_id)
    pushes = select(Delivery.id).where(Delivery.user_id == user_id)
    if api_key is not None:
        devices = devices.where(Device.api_key == api_key)
        pushes = pushes.join(WebhookEvent, WebhookEvent.id == Delivery.event_id).where(
            WebhookEvent.api_key == api_key
        )
    return (
        session.scalar(devices.limit(1)) is not None or session.scalar(pushes.limit(1)) is not None
    )
