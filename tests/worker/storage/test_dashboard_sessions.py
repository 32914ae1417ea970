"""Server-side dashboard sessions: valid until expired, revoked or issued under another token."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from worker.storage import dashboard_sessions
from worker.storage.database import Database
from worker.storage.models import DashboardSession

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LIFETIME = timedelta(hours=12)
FINGERPRINT = "f" * 64


def start(db: Database, now: datetime = NOW, fingerprint: str = FINGERPRINT) -> str:
    with db.transaction() as session:
        return dashboard_sessions.start(session, fingerprint, LIFETIME, now)


def valid(db: Database, cookie, now: datetime = NOW, fingerprint: str = FINGERPRINT) -> bool:
    with db.transaction() as session:
        return dashboard_sessions.is_valid(session, cookie, fingerprint, now)


def rows(db: Database) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(DashboardSession)) or 0)


def test_a_session_is_valid_until_it_expires(db):
    cookie = start(db)
    assert len(cookie) == 43 and valid(db, cookie)
    assert valid(db, cookie, NOW + LIFETIME - timedelta(seconds=1))
    assert not valid(db, cookie, NOW + LIFETIME)


def test_only_the_cookies_digest_is_stored(db):
    cookie = start(db)
    with db.transaction() as session:
        (stored,) = session.scalars(select(DashboardSession.cookie_sha256))
    assert stored == hashlib.sha256(cookie.encode()).hexdigest() and cookie not in stored


def test_revoked_is_refused_even_when_replayed(db):
    cookie, other = start(db), start(db)
    with db.transaction() as session:
        assert dashboard_sessions.revoke(session, cookie, NOW)
    assert not valid(db, cookie)
    assert valid(db, other)  # one logout ends one session
    with db.transaction() as session:
        assert not dashboard_sessions.revoke(session, cookie, NOW)  # already revoked


def test_another_admin_token_ends_every_session(db):
    cookie = start(db)
    assert not valid(db, cookie, fingerprint="0" * 64)


@pytest.mark.parametrize(
    "cookie",
    [None, "", "short", "é" * 43, "a" * 65, "1732870000." + "a" * 64, "²" * 43, "a\x00" * 20],
)
def test_malformed_cookies_are_refused_without_a_lookup(db, cookie):
    start(db)
    assert not valid(db, cookie)
    with db.transaction() as session:
        assert not dashboard_sessions.revoke(session, cookie, NOW)


def test_expired_and_revoked_rows_are_deleted_at_the_next_login(db):
    old, revoked = start(db, NOW - LIFETIME + timedelta(minutes=1)), start(db)
    with db.transaction() as session:
        dashboard_sessions.revoke(session, revoked, NOW)
    assert rows(db) == 2
    later = NOW + timedelta(minutes=2)  # `old` has expired by now
    fresh = start(db, later)
    assert rows(db) == 1 and valid(db, fresh, later) and not valid(db, old, later)
