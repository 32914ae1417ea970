"""`callpush users mute / unmute / show` against a temporary SQLite database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from worker.commands.users import parse_duration, users
from worker.foundation.settings import DEV_API_KEY
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.preferences import get_preference


@pytest.fixture
def run(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no callpush.toml picked up from the working directory
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(users, list(args), env={"CALLPUSH_DATABASE_URL": sqlite_url})

    return invoke


def stored(url: str, user_id: str):
    upgrade_to_head(url)  # a no-op once a command has migrated it
    db = Database(url)
    try:
        with db.transaction() as session:
            return get_preference(session, DEV_API_KEY, user_id)
    finally:
        db.dispose()


def test_show_unknown_user_is_on(run, sqlite_url):
    # Reading never creates the embedded database: it says how to create it.
    missing = run("show", "--user", "alice")
    assert missing.exit_code == 1 and "callpush db upgrade" in missing.stderr
    assert missing.stdout == ""
    run("mute", "--user", "bob")  # a change creates the embedded database (as `devices add`)
    result = run("show", "--user", "alice")
    assert result.exit_code == 0, result.output
    assert result.stdout == "alice: call pushes on\n"
    assert result.stderr == f"database: {sqlite_url} ({sqlite_url.removeprefix('sqlite:///')})\n"


def test_mute_for_good_then_unmute(run, sqlite_url):
    result = run("mute", "--user", "alice")
    assert result.exit_code == 0, result.output
    assert "alice: call pushes off (until unmuted)" in result.output
    assert run("show", "--user", "alice").stdout == "alice: call pushes off (until unmuted)\n"
    preference = stored(sqlite_url, "alice")
    assert preference.muted and preference.muted_until is None

    result = run("unmute", "--user", "alice")
    assert result.exit_code == 0 and result.output == "alice: call pushes on\n"
    assert not stored(sqlite_url, "alice").muted


def test_mute_until(run, sqlite_url):
    result = run("mute", "--user", "alice", "--until", "2099-12-01T00:00:00Z")
    assert result.exit_code == 0, result.output
    assert result.output == "alice: call pushes off until 2099-12-01T00:00:00Z\n"
    assert stored(sqlite_url, "alice").muted_until == datetime(2099, 12, 1, tzinfo=UTC)
    assert "off until 2099-12-01T00:00:00Z" in run("show", "--user", "alice").output


def test_mute_for_a_duration(run, sqlite_url):
    before = datetime.now(UTC)
    result = run("mute", "--user", "alice", "--for", "8h")
    assert result.exit_code == 0, result.output
    until = stored(sqlite_url, "alice").muted_until
    assert before + timedelta(hours=8) <= until <= datetime.now(UTC) + timedelta(hours=8)
    assert "off until" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--until", "2099-12-01"], "RFC 3339"),
        (["--until", "2000-01-01T00:00:00Z"], "in the future"),
        (["--for", "8 hours"], "not a duration"),
        (["--for", "0h"], "longer than zero"),
        (["--for", "99999999999999w"], "too long"),
        (["--until", "2099-12-01T00:00:00Z", "--for", "8h"], "not both"),
    ],
)
def test_mute_rejects_bad_times(run, sqlite_url, args, message):
    result = run("mute", "--user", "alice", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert stored(sqlite_url, "alice") is None


def test_user_is_required(run):
    result = run("mute")
    assert result.exit_code == 2 and "--user" in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8h", timedelta(hours=8)),
        ("30m", timedelta(minutes=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("45s", timedelta(seconds=45)),
        (" 8H ", timedelta(hours=8)),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected
