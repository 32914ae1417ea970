"""The local copy of devices that Stream's devices API lists (Settings.devices.source="stream").

Stream is the source of truth for which tokens a user has; the ``devices`` table still holds a
row per token so that deliveries get a ``device_id`` and so that a token a provider rejected
(APNs 410, FCM UNREGISTERED) stays disabled: Stream keeps listing such tokens, and a locally
disabled row is never re-enabled by the mirror.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.push.base import Platform
from worker.storage.devices import DeviceTarget, target_of
from worker.storage.models import Device, utcnow
from worker.storage.upsert import insert_ignoring_conflicts

SOURCE = "stream"
# devices.push_provider_name's column size; Stream's names are at most 36 characters.
MAX_PROVIDER_NAME = 64
# Bound parameters per IN (...) query: SQLite allows 32766, PostgreSQL 65535.
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class MirroredDevice:
    """A usable device as Stream lists it, already mapped to our platforms."""

    platform: Platform
    token: str
    voip: bool
    hardware_id: str | None
    push_provider_name: str | None = None


def sync_stream_devices(
    session: Session, listed: Mapping[str, Sequence[MirroredDevice]]
) -> list[DeviceTarget]:
    """Make the rows match what Stream lists per user and return the users' usable devices.

    Only differences are written: a row is inserted for a new token, and a row whose user,
    voip flag, hardware id, push provider name or source differs is updated (a phone that
    changed hands moves to the user Stream lists it under).  ``disabled_at`` is never touched.
    A call that finds everything in place only reads, so the cached path of a ring takes no
    write lock.
    """
    wanted = {(d.platform.value, d.token): (user, d) for user, ds in listed.items() for d in ds}
    if not wanted:
        return []
    rows = _rows_by_key(session, wanted)
    missing = [key for key in wanted if key not in rows]
    if missing:
        now = utcnow()
        session.execute(
            insert_ignoring_conflicts(session, Device, ["platform", "token"]),
            [
                {
                    "user_id": wanted[key][0],
                    "platform": key[0],
                    "token": key[1],
                    "voip": wanted[key][1].voip,
                    "hardware_id": wanted[key][1].hardware_id,
                    "push_provider_name": _provider_name(wanted[key][1]),
                    "source": SOURCE,
                    "created_at": now,
                }
                for key in missing
            ],
        )
        # Read them back, with whatever a concurrent writer may have inserted first.
        rows.update(_rows_by_key(session, dict.fromkeys(missing)))
    for key, (user_id, device) in wanted.items():
        row = rows.get(key)
        if row is not None:
            _update(row, user_id, device)
    session.flush()
    targets = []
    for key, (user_id, _) in wanted.items():
        row = rows.get(key)
        if row is not None and row.disabled_at is None and row.user_id == user_id:
            targets.append(target_of(row))
    return targets


def _update(row: Device, user_id: str, device: MirroredDevice) -> None:
    # Assign only what changed, so an unchanged row costs no UPDATE.
    changes = {
        "user_id": user_id,
        "voip": device.voip,
        "hardware_id": device.hardware_id,
        "push_provider_name": _provider_name(device),
        "source": SOURCE,
    }
    for name, value in changes.items():
        if getattr(row, name) != value:
            setattr(row, name, value)


def _provider_name(device: MirroredDevice) -> str | None:
    # Cut to the column: a longer name than Stream allows can match no configured provider, cut
    # or not, so the push is recorded as failed for it either way.
    name = device.push_provider_name
    return name[:MAX_PROVIDER_NAME] if name else None


def _rows_by_key(
    session: Session, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Device]:
    wanted = set(keys)
    tokens = sorted({token for _, token in wanted})
    rows: dict[tuple[str, str], Device] = {}
    for start in range(0, len(tokens), _CHUNK):
        chunk = tokens[start : start + _CHUNK]
        for row in session.scalars(select(Device).where(Device.token.in_(chunk))):
            key = (row.platform, row.token)
            if key in wanted:
                rows[key] = row
    return rows
