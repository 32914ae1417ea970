"""`callpush devices`, `users`, `db upgrade` and `trace` with several Stream apps (a dev and a
prod app served by one deployment), on a temporary SQLite database: each command acts inside
one app, --app is required when several are configured, and a token that changed accounts shows
where it went."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text

from tests.ops_data import Seeder, ring_body
from worker.cli import main
from worker.foundation.logging_setup import redact_token
from worker.push.base import Platform
from worker.storage import devices, preferences
from worker.storage.database import Database
from worker.storage.migrations import alembic_config, current_revision, head_revision
from worker.storage.models import Device

PROD, DEV = "prod-key", "dev-key"
APPS = json.dumps(
    [
        {"api_key": PROD, "api_secrets": ["prod-secret-0123456789abcdef0123456789abcdef"]},
        {"api_key": DEV, "api_secrets": ["dev-secret-0123456789abcdef0123456789abcdef0"]},
    ]
)
PHONE = "ab" * 32
ANDROID = "dXyz12345:APA91b" + "Q" * 140


@pytest.fixture
def cli(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str, apps: str | None = APPS):
        env = {"CALLPUSH_DATABASE_URL": sqlite_url}
        if apps is not None:
            env["CALLPUSH_APPS"] = apps
        return runner.invoke(main, list(args), env=env)

    return invoke


def rows(url: str) -> list[Device]:
    db = Database(url)
    try:
        with db.transaction() as session:
            return list(session.scalars(select(Device).order_by(Device.id)))
    finally:
        db.dispose()


def test_with_several_apps_the_app_must_be_named(cli, sqlite_url):
    result = cli("devices", "add", "--user", "bob", "--platform", "apns", "--token", PHONE)
    assert result.exit_code == 2
    assert "several Stream apps are configured (prod-key, dev-key): pass --app" in result.output
    for args in (("devices", "list"), ("users", "mute", "--user", "bob")):
        refused = cli(*args)
        assert refused.exit_code == 2 and "pass --app" in refused.output
    unknown = cli("devices", "list", "--app", "nope")
    assert unknown.exit_code == 2 and "not the API key of a configured Stream app" in (
        unknown.output
    )
    # With one app configured, it is the app.
    one = json.dumps([json.loads(APPS)[0]])
    added = cli("devices", "add", "--user", "bob", "--platform", "apns", "--token", PHONE, apps=one)
    assert added.exit_code == 0, added.output
    assert [(d.api_key, d.user_id) for d in rows(sqlite_url)] == [(PROD, "bob")]


def test_devices_are_kept_per_app(cli, sqlite_url):
    for app in (PROD, DEV):
        result = cli(
            "devices", "add", "--app", app, "--user", "bob", "--platform", "fcm", "--token", ANDROID
        )
        assert result.exit_code == 0, result.output
    assert [(d.api_key, d.user_id, d.disabled_at) for d in rows(sqlite_url)] == [
        (PROD, "bob", None),
        (DEV, "bob", None),
    ]
    listed = cli("devices", "list", "--app", DEV)
    assert listed.exit_code == 0 and "app dev-key" in listed.output
    assert listed.output.count(redact_token(ANDROID)) == 1 and ANDROID not in listed.output

    removed = cli("devices", "remove", "--app", DEV, "--token", ANDROID)
    assert removed.exit_code == 0 and "removed 1 device(s)" in removed.output
    assert [d.api_key for d in rows(sqlite_url)] == [PROD]


@pytest.mark.parametrize(
    ("platform", "token", "message"),
    [
        ("apns", "not-hex" * 10, "hexadecimal"),
        ("apns", "abc" * 21, "even number"),
        ("apns", "ab" * 8, "32 to 200 hex digits"),
        ("fcm", "short", "32 to 512 characters"),
        ("fcm", "has/slash" * 10, "may only contain"),
    ],
)
def test_malformed_tokens_are_refused(cli, platform, token, message):
    result = cli(
        "devices", "add", "--app", PROD, "--user", "bob", "--platform", platform, "--token", token
    )
    assert result.exit_code == 2 and "--token" in result.output and message in result.output


def test_a_moved_token_shows_where_it_went_in_devices_list_and_trace(cli, sqlite_url):
    add = ("devices", "add", "--app", PROD, "--platform", "apns", "--voip", "--token", PHONE)
    assert cli(*add, "--user", "alice").exit_code == 0
    assert cli(*add, "--user", "bob").exit_code == 0

    listed = cli("devices", "list", "--app", PROD).output
    (alice_line,) = [line for line in listed.splitlines() if " alice " in line]
    assert "disabled" in alice_line and "moved to another user at " in alice_line
    assert "now bob's" in alice_line
    (bob_line,) = [line for line in listed.splitlines() if " bob " in line]
    assert bob_line.endswith("active")

    # A ring to Alice after the move: she is not rung, and the trace says why.
    db = Database(sqlite_url)
    try:
        Seeder(db).event(ring_body("default:after-move", "carol", ["alice"]), api_key=PROD)
    finally:
        db.dispose()
    trace = cli("trace", "default:after-move")
    assert trace.exit_code == 0, trace.output
    (line,) = [line for line in trace.output.splitlines() if "no push to alice" in line]
    assert f"apns voip {redact_token(PHONE)} disabled (moved to another user at " in line
    assert "now bob's" in line
    document = json.loads(cli("trace", "default:after-move", "--app", PROD, "--json").stdout)
    assert [e["kind"] for e in document["entries"]] == ["webhook", "device"]
    assert cli("trace", "default:after-move", "--app", DEV).exit_code == 1  # not that app's call


def test_mutes_are_per_app(cli, sqlite_url):
    result = cli("users", "mute", "--app", DEV, "--user", "bob")
    assert result.exit_code == 0 and "bob: call pushes off" in result.output
    assert "bob: call pushes on" in cli("users", "show", "--app", PROD, "--user", "bob").output
    db = Database(sqlite_url)
    try:
        with db.transaction() as session:
            now = datetime.now(UTC)
            assert preferences.muted_users(session, DEV, ["bob"], now) == {"bob"}
            assert preferences.muted_users(session, PROD, ["bob"], now) == set()
    finally:
        db.dispose()


# --- db upgrade: rows stored before apps were tenants -------------------------------------------


def old_database(url: str) -> None:
    command.upgrade(alembic_config(url), "0001")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO devices (user_id, platform, token, voip, source, created_at)"
                " VALUES ('bob', 'apns', :token, true, 'local', :now)"
            ),
            {"token": PHONE, "now": datetime.now(UTC)},
        )
    engine.dispose()


def test_db_upgrade_with_several_apps_needs_the_owner(cli, sqlite_url):
    old_database(sqlite_url)
    refused = cli("db", "upgrade")
    assert refused.exit_code == 1
    assert "upgrade failed" in refused.output and "--owner-app <api key>" in refused.output
    assert current_revision(sqlite_url) == "0001"

    wrong = cli("db", "upgrade", "--owner-app", "nope")
    assert wrong.exit_code == 2 and "--owner-app" in wrong.output

    done = cli("db", "upgrade", "--owner-app", DEV)
    assert done.exit_code == 0, done.output
    assert current_revision(sqlite_url) == head_revision()
    assert [(d.api_key, d.user_id) for d in rows(sqlite_url)] == [(DEV, "bob")]


def test_db_upgrade_with_one_app_gives_it_the_rows(cli, sqlite_url):
    old_database(sqlite_url)
    one = json.dumps([json.loads(APPS)[0]])
    result = cli("db", "upgrade", apps=one)
    assert result.exit_code == 0, result.output
    assert [d.api_key for d in rows(sqlite_url)] == [PROD]


def test_embedded_commands_migrate_an_old_file_to_the_development_app(cli, sqlite_url):
    """No app configured, embedded (as `callpush run` on a laptop): the old rows belong to the
    development app the embedded mode serves."""
    from worker.foundation.settings import DEV_API_KEY

    old_database(sqlite_url)
    listed = cli("devices", "list", apps=None)
    assert listed.exit_code == 0, listed.output
    assert f"app {DEV_API_KEY}" in listed.output and redact_token(PHONE) in listed.output
    db = Database(sqlite_url)
    try:
        with db.transaction() as session:
            (target,) = devices.active_devices_for(session, DEV_API_KEY, ["bob"])
        assert (target.platform, target.token) == (Platform.APNS, PHONE)
    finally:
        db.dispose()


def test_embedded_commands_with_several_apps_refuse_an_old_file_cleanly(cli, sqlite_url):
    old_database(sqlite_url)
    result = cli("devices", "list", "--app", PROD)
    assert result.exit_code == 1
    assert "Error: 1 device(s) and 0 push preference(s)" in result.output
    assert "callpush db upgrade --owner-app <api key>" in result.output
    assert "Traceback" not in result.output
