"""Users' call-push preferences, per Stream app: on, off for good, or off until a time.

The row (``UserPreference``) means: ``muted`` with ``muted_until`` None = off until unmuted;
``muted`` with ``muted_until`` = off until then (after which it is simply on again, no clean-up
needed); not ``muted`` = on.  No row = on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from worker.storage.models import UserPreference, utcnow
from worker.storage.upsert import insert_ignoring_conflicts

# Keeps the IN (...) lists of a big fan-out well under every backend's parameter limit.
_CHUNK = 500

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 timestamp with an offset (``2026-12-01T00:00:00Z``) as an aware UTC datetime.

    Raises ValueError with a message fit for the caller.
    """
    if not _RFC3339.match(text):
        raise ValueError(
            "expected an RFC 3339 timestamp with a UTC offset, e.g. 2026-12-01T00:00:00Z"
        )
    # fromisoformat (3.11) takes "Z" but at most 6 fractional digits.
    main, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{main}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    try:
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError) as error:
        raise ValueError(f"not a valid timestamp: {error}") from None


def is_muted(preference: UserPreference | None, now: datetime) -> bool:
    """Whether call pushes are off for this user at ``now``."""
    if preference is None or not preference.muted:
        return False
    return preference.muted_until is None or preference.muted_until > now


def get_preference(session: Session, api_key: str, user_id: str) -> UserPreference | None:
    return session.get(UserPreference, (api_key, user_id))


def set_preference(
    session: Session, api_key: str, user_id: str, muted: bool, until: datetime | None = None
) -> UserPreference:
    """Switch call pushes off (for good when ``until`` is None, else until then) or on.

    Safe against two concurrent first writes for the same user (insert-or-ignore, then update).
    """
    if until is not None:
        if not muted:
            raise ValueError("until is only meaningful when muting")
        if until.tzinfo is None:
            raise ValueError("until must be timezone-aware")
    now = utcnow()
    session.execute(
        insert_ignoring_conflicts(session, UserPreference, ["api_key", "user_id"]).values(
            api_key=api_key, user_id=user_id, muted=False, muted_until=None, updated_at=now
        )
    )
    session.execute(
        update(UserPreference)
        .where(UserPreference.api_key == api_key, UserPreference.user_id == user_id)
        .values(muted=muted, muted_until=until, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    preference = session.get(UserPreference, (api_key, user_id), populate_existing=True)
    assert preference is not None  # inserted or updated just above, in this transaction
    return preference


def muted_users(session: Session, api_key: str, user_ids: Iterable[str], now: datetime) -> set[str]:
    """The users among ``user_ids`` whose call pushes are off at ``now`` in the app."""
    return set(muted_until(session, api_key, user_ids, now))


def muted_until(
    session: Session, api_key: str, user_ids: Iterable[str], now: datetime
) -> dict[str, datetime | None]:
    """The users among ``user_ids`` whose call pushes are off at ``now`` in the app, each with
    the end of the mute (None: until unmuted); a skipped push's reason says which."""
    ids = list(dict.fromkeys(user_ids))
    muted: dict[str, datetime | None] = {}
    for start in range(0, len(ids), _CHUNK):
        muted.update(
            (user_id, until)
            for user_id, until in session.execute(
                select(UserPreference.user_id, UserPreference.muted_until).where(
                    UserPreference.api_key == api_key,
                    UserPreference.user_id.in_(ids[start : start + _CHUNK]),
                    UserPreference.muted.is_(True),
                    or_(UserPreference.muted_until.is_(None), UserPreference.muted_until > now),
                )
            )
        )
    return muted
