"""The migrations must build exactly the schema the models describe, on both backends."""

from __future__ import annotations

import re
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
    assert versions, "no migration in worker/migrations/versions"
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
