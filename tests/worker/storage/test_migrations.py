"""The migrations must build exactly the schema the models describe, on both backends."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from worker.storage import migrations
from worker.storage.migrations import (
    MIGRATIONS_DIR,
    current_revision,
    head_revision,
    schema_differences,
    upgrade_to_head,
)


def _upgraded_matches_models(url: str) -> None:
    assert current_revision(url) is None
    upgrade_to_head(url)
    assert current_revision(url) == head_revision()
    # compare_metadata with compare_type on: the migrated schema is the models' schema.
    assert schema_differences(url) == []
    # Running it again (every `callpush db upgrade` at deploy time) changes nothing.
    upgrade_to_head(url)
    assert current_revision(url) == head_revision()
    assert schema_differences(url) == []

    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"webhook_events", "devices", "deliveries", "alembic_version"} <= tables


@pytest.mark.services
def test_postgres_upgrade_matches_models(postgres_url: str) -> None:
    _upgraded_matches_models(postgres_url)


def test_sqlite_upgrade_matches_models(sqlite_url: str) -> None:
    _upgraded_matches_models(sqlite_url)


def test_works_from_any_directory(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No alembic.ini and nothing relative to the CWD: as from an installed package.
    monkeypatch.chdir(tmp_path)
    upgrade_to_head(sqlite_url)
    assert current_revision(sqlite_url) == head_revision()


def test_downgrade_to_base_and_back(sqlite_url: str) -> None:
    upgrade_to_head(sqlite_url)
    migrations.downgrade(sqlite_url, "base")
    assert current_revision(sqlite_url) is None
    engine = create_engine(sqlite_url)
    try:
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
    upgrade_to_head(sqlite_url)
    assert schema_differences(sqlite_url) == []


def test_check_command_reports_no_drift(capsys: pytest.CaptureFixture[str]) -> None:
    assert migrations.main(["check"]) == 0
    assert "produce the models" in capsys.readouterr().out


def test_revision_files_do_not_import_model_code() -> None:
    versions = sorted((MIGRATIONS_DIR / "versions").glob("*.py"))
    assert versions, "no migration in worker/storage/alembic_scripts/versions"
    for path in versions:
        source = path.read_text()
        assert "worker" not in re.findall(r"^\s*(?:from|import)\s+(\w+)", source, re.M), path
        # The UTCDateTime TypeDecorator is rendered as the type it stores.
        assert "UTCDateTime" not in source, path


def test_revision_ids_are_sequential() -> None:
    revisions = {
        rev.revision: rev.down_revision for rev in migrations.script_directory().walk_revisions()
    }
    ordered = sorted(revisions)
    assert ordered == [f"{n:04d}" for n in range(1, len(ordered) + 1)]
    for previous, rev in zip([None, *ordered], ordered, strict=False):
        assert revisions[rev] == previous
    assert migrations.next_revision_id() == f"{len(ordered) + 1:04d}"


@pytest.mark.services
def test_concurrent_postgres_upgrades_serialize(postgres_url: str) -> None:
    # Several containers may run `callpush db upgrade` at once; the advisory lock in env.py makes
    # the later ones wait and then find the schema at head.  Separate processes: alembic's
    # `context` is process-global.
    import subprocess
    import sys

    code = "import sys; from worker.storage.migrations import upgrade_to_head as u; u(sys.argv[1])"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, postgres_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(6)
    ]
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * len(procs), outputs
    assert current_revision(postgres_url) == head_revision()
    assert schema_differences(postgres_url) == []


# --- 0002: devices and preferences stored before apps were tenants ----------------------------


def _at_0001_with_rows(url: str) -> None:
    """A database as the last release left it: schema 0001 with a device, a preference and an
    event of the app that registered them."""
    from alembic import command
    from sqlalchemy import text

    command.upgrade(migrations.alembic_config(url), "0001")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO devices (user_id, platform, token, voip, source, created_at)"
                    " VALUES ('bob', 'apns', :token, true, 'local', :now),"
                    " ('carol', 'fcm', :fcm, false, 'local', :now)"
                ),
                {"token": "ab" * 32, "fcm": "carol-fcm-" + "x" * 40, "now": datetime.now(UTC)},
            )
            connection.execute(
                text(
                    "INSERT INTO user_preferences (user_id, muted, updated_at)"
                    " VALUES ('bob', true, :now)"
                ),
                {"now": datetime.now(UTC)},
            )
    finally:
        engine.dispose()


def _owned_by(url: str) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    from sqlalchemy import text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            devices = set(connection.scalars(text("SELECT DISTINCT api_key FROM devices")))
            prefs = set(connection.scalars(text("SELECT DISTINCT api_key FROM user_preferences")))
            registered = {
                (user, str(registered == created))
                for user, registered, created in connection.execute(
                    text("SELECT user_id, registered_at, created_at FROM devices")
                )
            }
        return devices, prefs, registered
    finally:
        engine.dispose()


def test_existing_rows_go_to_the_owner_app(database_url: str) -> None:
    _at_0001_with_rows(database_url)
    upgrade_to_head(database_url, owner_app="prod-key")
    assert current_revision(database_url) == head_revision()
    assert schema_differences(database_url) == []
    devices, prefs, registered = _owned_by(database_url)
    assert devices == prefs == {"prod-key"}
    assert registered == {("bob", "True"), ("carol", "True")}  # registered_at = created_at


def test_existing_rows_without_an_owner_are_refused_and_nothing_changes(database_url: str) -> None:
    _at_0001_with_rows(database_url)
    with pytest.raises(migrations.UpgradeRefused) as refused:
        upgrade_to_head(database_url)
    message = str(refused.value)
    assert "2 device(s) and 1 push preference(s)" in message
    assert "callpush db upgrade --owner-app <api key>" in message
    assert current_revision(database_url) == "0001"
    engine = create_engine(database_url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("devices")}
    finally:
        engine.dispose()
    assert "api_key" not in columns
    # Told which app owns them, the same database upgrades.
    upgrade_to_head(database_url, owner_app="dev-key")
    assert _owned_by(database_url)[:2] == ({"dev-key"}, {"dev-key"})


def test_preferences_are_keyed_by_app_and_user(database_url: str) -> None:
    upgrade_to_head(database_url)
    engine = create_engine(database_url)
    try:
        primary_key = inspect(engine).get_pk_constraint("user_preferences")
        indexes = {i["name"]: i for i in inspect(engine).get_indexes("devices")}
    finally:
        engine.dispose()
    assert primary_key["constrained_columns"] == ["api_key", "user_id"]
    active = indexes["uq_devices_active_token"]
    assert active["unique"] and active["column_names"] == ["api_key", "platform", "token"]


def test_downgrade_from_0002_keeps_one_row_per_token(sqlite_url: str) -> None:
    from sqlalchemy import text

    _at_0001_with_rows(sqlite_url)
    upgrade_to_head(sqlite_url, owner_app="prod-key")
    engine = create_engine(sqlite_url)
    try:
        with engine.begin() as connection:
            # The same token in another app, and the same user's preference there.
            connection.execute(
                text(
                    "INSERT INTO devices (api_key, user_id, platform, token, voip, source,"
                    " created_at, registered_at) VALUES ('dev-key', 'bob', 'apns', :token, true,"
                    " 'local', :now, :now)"
                ),
                {"token": "ab" * 32, "now": datetime.now(UTC)},
            )
            connection.execute(
                text(
                    "INSERT INTO user_preferences (api_key, user_id, muted, updated_at)"
                    " VALUES ('dev-key', 'bob', false, :now)"
                ),
                {"now": datetime.now(UTC)},
            )
        migrations.downgrade(sqlite_url, "0001")
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT count(*) FROM devices")) == 2
            assert connection.scalar(text("SELECT count(*) FROM user_preferences")) == 1
    finally:
        engine.dispose()


# --- 0007: the receipt id's column and index built ahead, without blocking pushes -------------


@pytest.mark.services
def test_0007_skips_a_receipt_id_column_and_index_built_ahead(postgres_url: str) -> None:
    # As its docstring tells operators of a big deliveries table to do before migrating.
    from alembic import command
    from sqlalchemy import text

    command.upgrade(migrations.alembic_config(postgres_url), "0006")
    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(
                text("ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS receipt_id VARCHAR(32)")
            )
            connection.execute(
                text(
                    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix_deliveries_receipt_id"
                    " ON deliveries (receipt_id)"
                )
            )
    finally:
        engine.dispose()
    upgrade_to_head(postgres_url)
    assert current_revision(postgres_url) == head_revision()
    assert schema_differences(postgres_url) == []
