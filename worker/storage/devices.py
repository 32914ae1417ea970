"""The device registry: which push tokens each user of each Stream app has.

Everything is scoped by the app's API key: a token registered in one app is invisible to, and
never moved, disabled or deleted by, another.  Within an app a token is active for one user at
a time; registering it for another user (a phone that changed accounts) disables the old
owner's row with the move recorded (``moved_to_user_id``), so their rings never reach it and an
operator sees what happened.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from worker.foundation.logging_setup import redact_token
from worker.push.base import Platform
from worker.storage.models import Device, utcnow

log = logging.getLogger("callpush.devices")

# Stream's own limit: "Each user has a limit of 25 devices. When the limit is reached, the
# oldest device is automatically removed and replaced by the newly registered one."
# (https://getstream.io/chat/docs/push_devices/).  Settings.devices.max_per_user overrides it.
DEFAULT_MAX_PER_USER = 25
# Bound parameters per IN (...) query: SQLite allows 32766, PostgreSQL 65535.
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class DeviceTarget:
    """A device as the sending code sees it (a plain value, detached from the session)."""

    device_id: int
    user_id: str
    platform: Platform
    token: str
    voip: bool
    app_id: str | None
    hardware_id: str | None = None  # one physical phone (Stream's devices API, §4.3)
    # The app's push provider the token belongs to; None = the app's default provider.
    push_provider_name: str | None = None


def _moment(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def moved_reason(at: datetime) -> str:
    """The reason on a registration whose token another user of the app registered.  It names
    no user: the old owner reads it through the device API (operators see the new owner in
    ``moved_to_user_id``)."""
    return f"moved to another user at {_moment(at)}"


def evicted_reason(at: datetime, cap: int) -> str:
    return f"evicted at {_moment(at)}: the user registered more than {cap} devices"


def add_device(
    session: Session,
    *,
    api_key: str,
    user_id: str,
    platform: Platform,
    token: str,
    voip: bool = False,
    app_id: str | None = None,
    push_provider_name: str | None = None,
    max_per_user: int = DEFAULT_MAX_PER_USER,
) -> Device:
    """Register ``token`` for ``user_id`` in the app ``api_key``.

    * Registered already by this user: refreshed (and re-enabled if it had been disabled, e.g.
      pruned after a provider rejected it, or moved away and now back).
    * Active for another user of the app: that registration is disabled as moved, and the
      token becomes this user's.
    * More than ``max_per_user`` active devices: the ones registered longest ago are disabled
      as evicted (Stream's rule).

    A token is never active twice in an app (the partial unique index).  On PostgreSQL
    registrations of the same token wait for each other (a transaction-scoped advisory lock), so
    the second sees the first and records it as moved rather than failing; SQLite serialises
    writers anyway.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"callpush-device:{api_key}:{platform.value}:{token}"},
        )
    device = _register(session, api_key, user_id, platform, token, voip, app_id, max_per_user)
    device.push_provider_name = push_provider_name
    session.flush()
    return device


def _register(
    session: Session,
    api_key: str,
    user_id: str,
    platform: Platform,
    token: str,
    voip: bool,
    app_id: str | None,
    max_per_user: int,
) -> Device:
    now = utcnow()
    rows = list(
        session.scalars(
            select(Device).where(
                Device.api_key == api_key,
                Device.platform == platform.value,
                Device.token == token,
            )
        )
    )
    device = next((row for row in rows if row.user_id == user_id), None)
    for other in rows:
        if other is not device and other.disabled_at is None:
            other.disabled_at = now
            other.disabled_reason = moved_reason(now)
            other.moved_to_user_id = user_id
            log.info(
                "device %s (%s) moved from user %s to %s",
                redact_token(token),
                platform.value,
                other.user_id,
                user_id,
            )
    session.flush()  # the old owner's row is inactive before this one becomes active
    if device is None:
        device = Device(
            api_key=api_key, user_id=user_id, platform=platform.value, token=token, created_at=now
        )
        session.add(device)
    device.voip = voip
    device.app_id = app_id
    device.source = "local"
    device.registered_at = now
    device.disabled_at = None
    device.disabled_reason = None
    device.moved_to_user_id = None
    session.flush()
    _evict_beyond(session, api_key, user_id, max_per_user, now)
    return device


def _evict_beyond(session: Session, api_key: str, user_id: str, cap: int, now: datetime) -> None:
    active = list(
        session.scalars(
            select(Device)
            .where(
                Device.api_key == api_key,
                Device.user_id == user_id,
                Device.disabled_at.is_(None),
            )
            .order_by(Device.registered_at.desc(), Device.id.desc())
        )
    )
    for stale in active[max(cap, 1) :]:
        stale.disabled_at = now
        stale.disabled_reason = evicted_reason(now, cap)
        log.info(
            "device %s of user %s evicted: more than %d devices",
            redact_token(stale.token),
            user_id,
            cap,
        )
    session.flush()


def list_devices(
    session: Session,
    api_key: str,
    user_id: str | None = None,
    *,
    include_disabled: bool = True,
    include_moved: bool = True,
) -> list[Device]:
    """The app's devices (one user's, when given).  ``include_moved=False`` leaves out the
    registrations whose token moved to another user: history, no longer the user's."""
    query = select(Device).where(Device.api_key == api_key).order_by(Device.user_id, Device.id)
    if user_id is not None:
        query = query.where(Device.user_id == user_id)
    if not include_disabled:
        query = query.where(Device.disabled_at.is_(None))
    if not include_moved:
        query = query.where(Device.moved_to_user_id.is_(None))
    return list(session.scalars(query))


def remove_device(session: Session, api_key: str, token: str, user_id: str | None = None) -> int:
    """Delete the app's registrations of ``token`` (only ``user_id``'s, when given).  A
    registration that moved to another user is not its old owner's to delete: it stays as the
    record of the move (404 for them)."""
    statement = delete(Device).where(
        Device.api_key == api_key, Device.token == token, Device.moved_to_user_id.is_(None)
    )
    if user_id is not None:
        statement = statement.where(Device.user_id == user_id)
    return session.execute(statement).rowcount  # type: ignore[attr-defined]


def active_devices_for(
    session: Session, api_key: str, user_ids: Iterable[str]
) -> list[DeviceTarget]:
    """The users' devices in the app that may be pushed to."""
    ids = list(dict.fromkeys(user_ids))
    found: list[Device] = []
    for start in range(0, len(ids), _CHUNK):
        found.extend(
            session.scalars(
                select(Device).where(
                    Device.api_key == api_key,
                    Device.user_id.in_(ids[start : start + _CHUNK]),
                    Device.disabled_at.is_(None),
                )
            )
        )
    found.sort(key=lambda d: d.id)
    return [target_of(d) for d in found]


def disabled_devices_for(
    session: Session, api_key: str, user_ids: Iterable[str]
) -> dict[str, list[Device]]:
    """The users' disabled devices in the app, the most recently disabled first: why a user
    without an active token got no push."""
    ids = list(dict.fromkeys(user_ids))
    found: dict[str, list[Device]] = {}
    for start in range(0, len(ids), _CHUNK):
        for device in session.scalars(
            select(Device)
            .where(
                Device.api_key == api_key,
                Device.user_id.in_(ids[start : start + _CHUNK]),
                Device.disabled_at.is_not(None),
            )
            .order_by(Device.disabled_at.desc(), Device.id.desc())
        ):
            found.setdefault(device.user_id, []).append(device)
    return found


def target_of(device: Device) -> DeviceTarget:
    return DeviceTarget(
        device.id,
        device.user_id,
        Platform(device.platform),
        device.token,
        device.voip,
        device.app_id,
        device.hardware_id,
        device.push_provider_name,
    )


def disable_devices(session: Session, device_ids: Iterable[int], reason: str) -> None:
    """Prune dead tokens (APNs 410/BadDeviceToken, FCM UNREGISTERED): never pushed to again."""
    ids = list(device_ids)
    if ids:
        session.execute(
            update(Device)
            .where(Device.id.in_(ids), Device.disabled_at.is_(None))
            .values(disabled_at=utcnow(), disabled_reason=reason[:255])
        )
