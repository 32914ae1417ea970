"""The local copy of devices that Stream's devices API lists (Settings.devices.source="stream").

Stream is the source of truth for which tokens a user has; the ``devices`` table still holds a
row per (app, user, token) so that deliveries get a ``device_id`` and so that a token a provider
rejected (APNs 410, FCM UNREGISTERED) stays disabled: Stream keeps listing such tokens, and a
row a provider disabled is never re-enabled by the mirror.  Each app's devices come from that
app's Stream API and are stored under its API key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.push.base import Platform
from worker.storage.devices import DeviceTarget, moved_reason, target_of
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
    session: Session, api_key: str, listed: Mapping[str, Sequence[MirroredDevice]]
) -> list[DeviceTarget]:
    """Make the app's rows match what Stream lists per user and return the users' usable
    devices.

    Only differences are written: a row is inserted for a (user, token) Stream lists that has
    none, and a row whose voip flag, hardware id, push provider name or source differs is
    updated.  A token Stream
    lists under another user than the one it is active for here moved (a phone that changed
    accounts): the old owner's row is disabled as moved, as a registration would, and the new
    owner's row enabled.  A row disabled for any other reason (a provider rejected the token)
    is never re-enabled.  A call that finds everything in place only reads, so the cached path
    of a ring takes no write lock.
    """
    wanted = {(d.platform.value, d.token): (user, d) for user, ds in listed.items() for d in ds}
    if not wanted:
        return []
    rows = _rows_by_key(session, api_key, wanted)
    missing = [key for key, (user, _) in wanted.items() if _own(rows.get(key, []), user) is None]
    if missing:
        now = utcnow()
        _disable_moved(session, rows, {key: wanted[key][0] for key in missing}, now)
        session.execute(
            # No conflict target: whichever unique key a concurrent writer took first wins.
            insert_ignoring_conflicts(session, Device, None),
            [
                {
                    "api_key": api_key,
                    "user_id": wanted[key][0],
                    "platform": key[0],
                    "token": key[1],
                    "voip": wanted[key][1].voip,
                    "hardware_id": wanted[key][1].hardware_id,
                    "push_provider_name": _provider_name(wanted[key][1]),
                    "source": SOURCE,
                    "created_at": now,
                    "registered_at": now,
                }
                for key in missing
            ],
        )
        # Read them back, with whatever a concurrent writer may have inserted first.
        rows.update(_rows_by_key(session, api_key, dict.fromkeys(missing)))
    moved_back = {
        key: user
        for key, (user, _) in wanted.items()
        if (own := _own(rows.get(key, []), user)) is not None
        and own.disabled_at is not None
        and own.moved_to_user_id is not None
    }
    if moved_back:
        _disable_moved(session, rows, moved_back, utcnow())
        for key, user in moved_back.items():
            own = _own(rows[key], user)
            assert own is not None
            own.disabled_at = own.disabled_reason = own.moved_to_user_id = None
    for key, (user_id, device) in wanted.items():
        own = _own(rows.get(key, []), user_id)
        if own is not None:
            _update(own, device)
    session.flush()
    targets = []
    for key, (user_id, _) in wanted.items():
        row = _own(rows.get(key, []), user_id)
        if row is not None and row.disabled_at is None:
            targets.append(target_of(row))
    return targets


def _own(rows: Sequence[Device], user_id: str) -> Device | None:
    return next((row for row in rows if row.user_id == user_id), None)


def _disable_moved(
    session: Session,
    rows: Mapping[tuple[str, str], Sequence[Device]],
    new_owner: Mapping[tuple[str, str], str],
    now: datetime,
) -> None:
    """Disable the rows active for another user than the token's new owner, as moved."""
    for key, user_id in new_owner.items():
        for row in rows.get(key, []):
            if row.user_id != user_id and row.disabled_at is None:
                row.disabled_at = now
                row.disabled_reason = moved_reason(now)
                row.moved_to_user_id = user_id
    # Inactive before the new owner's row becomes active (the partial unique index).
    session.flush()


def _update(row: Device, device: MirroredDevice) -> None:
    # Assign only what changed, so an unchanged row costs no UPDATE.
    changes = {
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
    session: Session, api_key: str, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], list[Device]]:
    wanted = set(keys)
    tokens = sorted({token for _, token in wanted})
    rows: dict[tuple[str, str], list[Device]] = {}
    for start in range(0, len(tokens), _CHUNK):
        chunk = tokens[start : start + _CHUNK]
        query = select(Device).where(Device.api_key == api_key, Device.token.in_(chunk))
        for row in session.scalars(query.order_by(Device.id)):
            key = (row.platform, row.token)
            if key in wanted:
                rows.setdefault(key, []).append(row)
    return rows
