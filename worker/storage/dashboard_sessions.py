"""Server-side sessions of the ops dashboard (the ``dashboard_sessions`` table).

The cookie is 32 random bytes; the row is keyed by their SHA-256, so neither the table nor a
backup of it lets anyone log in.  A session is valid while it is not expired, not revoked (logged
out) and was issued under the admin token configured now.  Expired and revoked rows are deleted
when someone logs in, so the table holds about one row per login of the last session lifetime.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from worker.storage.models import DashboardSession, utcnow

# The cookie: 32 random bytes, URL-safe base64 (43 characters).
COOKIE_BYTES = 32
_COOKIE = re.compile(r"[A-Za-z0-9_-]{32,64}")


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("ascii")).hexdigest()


def _is_cookie_shaped(cookie: str | None) -> bool:
    # Anything else (a cookie from before server-side sessions, bytes a client made up) is
    # refused before it reaches the database.
    return cookie is not None and _COOKIE.fullmatch(cookie) is not None


def start(
    session: Session, token_fingerprint: str, lifetime: timedelta, now: datetime | None = None
) -> str:
    """A new session; returns the cookie value (never stored)."""
    moment = now or utcnow()
    session.execute(
        delete(DashboardSession).where(
            (DashboardSession.expires_at <= moment) | DashboardSession.revoked_at.is_not(None)
        )
    )
    cookie = secrets.token_urlsafe(COOKIE_BYTES)
    session.add(
        DashboardSession(
            cookie_sha256=_digest(cookie),
            token_fingerprint=token_fingerprint,
            created_at=moment,
            expires_at=moment + lifetime,
        )
    )
    return cookie


def is_valid(
    session: Session, cookie: str | None, token_fingerprint: str, now: datetime | None = None
) -> bool:
    if cookie is None or not _is_cookie_shaped(cookie):
        return False
    row = session.get(DashboardSession, _digest(cookie))
    return (
        row is not None
        and row.revoked_at is None
        and row.expires_at > (now or utcnow())
        and hmac.compare_digest(row.token_fingerprint, token_fingerprint)
    )


def revoke(session: Session, cookie: str | None, now: datetime | None = None) -> bool:
    """Log out: the cookie is refused from now on.  True when there was a session to revoke."""
    if cookie is None or not _is_cookie_shaped(cookie):
        return False
    result = session.execute(
        update(DashboardSession)
        .where(
            DashboardSession.cookie_sha256 == _digest(cookie),
            DashboardSession.revoked_at.is_(None),
        )
        .values(revoked_at=now or utcnow())
    )
    return bool(getattr(result, "rowcount", 0))
