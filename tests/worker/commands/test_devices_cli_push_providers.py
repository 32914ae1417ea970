"""`callpush devices add`: push provider names and bundle ids, against a temporary SQLite
database."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from worker.commands.devices import devices
from worker.storage import devices as registry
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head

VOIP = "ab" * 32
APPS = [
    {
        "api_key": "key-1",
        "api_secrets": ["secret-1"],
        "apns_providers": {"ios-voip-debug": {"bundle_id": "com.example.app.debug"}},
    }
]


@pytest.fixture
def run(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str):
        env = {"CALLPUSH_DATABASE_URL": sqlite_url, "CALLPUSH_APPS": json.dumps(APPS)}
        return runner.invoke(devices, list(args), env=env)

    return invoke


def stored(url: str):
    upgrade_to_head(url)  # a no-op once a command has migrated it
    db = Database(url)
    try:
        with db.transaction() as session:
            return [
                (d.token, d.app_id, d.push_provider_name)
                for d in registry.list_devices(session, "key-1")
            ]
    finally:
        db.dispose()


def add(run, *extra: str):
    return run("add", "--user", "bob", "--platform", "apns", "--token", VOIP, "--voip", *extra)


def test_add_with_a_configured_push_provider_name(run, sqlite_url):
    result = add(run, "--push-provider-name", "ios-voip-debug", "--app-id", "com.example.app")
    assert result.exit_code == 0, result.output
    assert stored(sqlite_url) == [(VOIP, "com.example.app", "ios-voip-debug")]
    listed = run("list", "--user", "bob").output
    assert "ios-voip-debug" in listed and VOIP not in listed


def test_add_without_a_name_uses_the_apps_default_provider(run, sqlite_url):
    assert add(run).exit_code == 0
    assert stored(sqlite_url) == [(VOIP, None, None)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--push-provider-name", "ios-voip"), "push provider 'ios-voip' is not configured"),
        (("--app-id", "com.example.app.voip"), "ends in '.voip'"),
        (("--app-id", "com.example_app"), "only letters"),
    ],
)
def test_add_refuses_what_apns_would_reject(run, sqlite_url, extra, message):
    result = add(run, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert stored(sqlite_url) == []
