"""The device registry: which push tokens each user has."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from worker.push.base import Platform
from worker.storage.models import Device, utcnow


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


def add_device(
    session: Session,
    *,
    user_id: str,
    platform: Platform,
    token: str,
    voip: bool = False,
    app_id: str | None = None,
    push_provider_name: str | None = None,
) -> Device:
    """Register a token, or move an existing one to this user and re-enable it (a phone that
    changed hands, or a token that came back after being pruned)."""
    device = session.scalar(
        select(Device).where(Device.platform == platform.value, Device.token == token)
    )
    if device is None:
        device = Device(user_id=user_id, platform=platform.value, token=token)
        session.add(device)
    device.user_id = user_id
    device.voip = voip
    device.app_id = app_id
    device.push_provider_name = push_provider_name
    device.disabled_at = None
    device.disabled_reason = None
    session.flush()
    return device


def list_devices(
    session: Session, user_id: str | None = None, include_disabled: bool = True
) -> list[Device]:
    query = select(Device).order_by(Device.user_id, Device.id)
    if user_id is not None:
        query = query.where(Device.user_id == user_id)
    if not include_disabled:
        query = query.where(Device.disabled_at.is_(None))
    return list(session.scalars(query))


def remove_device(session: Session, token: str, user_id: str | None = None) -> int:
    statement = delete(Device).where(Device.token == token)
    if user_id is not None:
        statement = statement.where(Device.user_id == user_id)
    return session.execute(statement).rowcount  # type: ignore[attr-defined]


def active_devices_for(session: Session, user_ids: Iterable[str]) -> list[DeviceTarget]:
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return []
    rows = session.scalars(
        select(Device)
        .where(Device.user_id.in_(ids), Device.disabled_at.is_(None))
        .order_by(Device.id)
    )
    return [target_of(d) for d in rows]


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
