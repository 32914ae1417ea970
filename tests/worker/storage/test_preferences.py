"""Call-push preferences in the database: on, off for good, off until a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.storage.preferences import (
    get_preference,
    is_muted,
    muted_users,
    parse_rfc3339,
    set_preference,
)

APP = "app-key"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_no_row_means_on(db):
    with db.transaction() as session:
        assert get_preference(session, APP, "alice") is None
        assert not is_muted(None, NOW)
        assert muted_users(session, APP, ["alice"], NOW) == set()


def test_mute_for_good_then_unmute(db):
    with db.transaction() as session:
        stored = set_preference(session, APP, "alice", True, None)
        assert stored.muted and stored.muted_until is None
    with db.transaction() as session:
        assert muted_users(session, APP, ["alice", "bob"], NOW) == {"alice"}
        assert is_muted(get_preference(session, APP, "alice"), NOW)
    with db.transaction() as session:
        set_preference(session, APP, "alice", False, None)
    with db.transaction() as session:
        preference = get_preference(session, APP, "alice")
        assert preference is not None and not preference.muted
        assert muted_users(session, APP, ["alice"], NOW) == set()


def test_mute_until_a_time_ends_by_itself(db):
    until = NOW + timedelta(hours=8)
    with db.transaction() as session:
        set_preference(session, APP, "alice", True, until)
    with db.transaction() as session:
        preference = get_preference(session, APP, "alice")
        assert preference is not None
        assert preference.muted_until == until and preference.muted_until.tzinfo is not None
        assert muted_users(session, APP, ["alice"], NOW) == {"alice"}
        assert muted_users(session, APP, ["alice"], until - timedelta(seconds=1)) == {"alice"}
        assert muted_users(session, APP, ["alice"], until) == set()
        assert muted_users(session, APP, ["alice"], until + timedelta(days=1)) == set()
        assert not is_muted(preference, until)


def test_until_in_another_offset_is_stored_as_the_same_instant(db):
    until = datetime(2026, 6, 1, 14, 0, tzinfo=UTC)
    with db.transaction() as session:
        set_preference(session, APP, "alice", True, parse_rfc3339("2026-06-01T16:00:00+02:00"))
    with db.transaction() as session:
        assert get_preference(session, APP, "alice").muted_until == until


def test_setting_again_overwrites(db):
    with db.transaction() as session:
        set_preference(session, APP, "alice", True, NOW + timedelta(hours=1))
    with db.transaction() as session:
        first = get_preference(session, APP, "alice").updated_at
        again = set_preference(session, APP, "alice", True, None)
        assert again.muted_until is None and again.updated_at >= first
    with db.transaction() as session:
        assert muted_users(session, APP, ["alice"], NOW + timedelta(days=365)) == {"alice"}


def test_muted_users_handles_many_ids_and_duplicates(db):
    with db.transaction() as session:
        for n in range(0, 1200, 100):
            set_preference(session, APP, f"user-{n}", True, None)
        set_preference(session, APP, "user-50", True, NOW - timedelta(minutes=1))  # already over
        set_preference(session, APP, "user-51", False, None)
    ids = [f"user-{n}" for n in range(1200)] + ["user-0", "user-100"]
    with db.transaction() as session:
        assert muted_users(session, APP, ids, NOW) == {f"user-{n}" for n in range(0, 1200, 100)}
        assert muted_users(session, APP, [], NOW) == set()


def test_set_preference_refuses_contradictions(db):
    with db.transaction() as session, pytest.raises(ValueError, match="only meaningful"):
        set_preference(session, APP, "alice", False, NOW)
    with db.transaction() as session, pytest.raises(ValueError, match="timezone-aware"):
        set_preference(session, APP, "alice", True, datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T00:00:00Z", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01t00:00:00z", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T01:30:00+01:30", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T00:00:00.5Z", datetime(2026, 12, 1, 0, 0, 0, 500000, tzinfo=UTC)),
        ("2026-12-01T00:00:00.123456789Z", datetime(2026, 12, 1, 0, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_parse_rfc3339(text, expected):
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-01",  # no time
        "2026-12-01T00:00:00",  # no offset
        "tomorrow",
        "2026-13-01T00:00:00Z",  # no such month
        "9999-12-31T23:59:59-01:00",  # past datetime.max once in UTC
        "",
    ],
)
def test_parse_rfc3339_rejects(text):
    with pytest.raises(ValueError):
        parse_rfc3339(text)
