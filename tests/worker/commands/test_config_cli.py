"""`callpush config check` and `callpush db` through click's CliRunner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.worker.ops.test_config_check import (
    OLD_STREAM_SECRET,
    STREAM_SECRET,
    apns_key_pem,
    rsa_key_pem,
    write_credentials,
)
from worker.cli import main
from worker.storage.migrations import head_revision, upgrade_to_head

# No CALLPUSH_* variable or ./callpush.toml of the developer's leaks in (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("isolated_settings")


def _config(monkeypatch: pytest.MonkeyPatch, path: Path, text: str) -> None:
    path.write_text(text)
    monkeypatch.setenv("CALLPUSH_CONFIG", str(path))


def _good_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, migrate: bool = True) -> str:
    key_file, account_file = write_credentials(tmp_path)
    database_url = f"sqlite:///{tmp_path / 'callpush.db'}"
    if migrate:
        upgrade_to_head(database_url)
    _config(
        monkeypatch,
        tmp_path / "callpush.toml",
        f"""
database_url = "{database_url}"

[[apps]]
api_key = "dev-key"
api_secrets = ["{STREAM_SECRET}"]

[[apps]]
api_key = "prod-key"
api_secrets = "{STREAM_SECRET}-new,{OLD_STREAM_SECRET}"

[apns]
key_file = "{key_file}"
key_id = "ABC123DEFG"
team_id = "TEAM123456"
bundle_id = "com.example.app"

[fcm]
service_account_file = "{account_file}"
""",
    )
    return database_url


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _assert_no_secret(output: str) -> None:
    for secret in (STREAM_SECRET, OLD_STREAM_SECRET):
        assert secret not in output
    for pem in (apns_key_pem(), rsa_key_pem()):
        body = pem.decode().splitlines()[1]  # the first line of key material
        assert body not in output
    assert "PRIVATE KEY" not in output


def test_good_config_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _good_config(tmp_path, monkeypatch)
    result = _invoke("config", "check")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    statuses = [line.split()[0] for line in lines if line.split()[:1] in (["OK"], ["FAIL"])]
    assert statuses and set(statuses) == {"OK"}, result.output
    assert "FAIL" not in result.output and "WARN" not in result.output
    assert f"all {len(statuses)} checks passed" in result.output
    # The effective configuration is shown: paths yes, secrets no.
    assert 'api_key = "prod-key"' in result.output
    assert "AuthKey_ABC123DEFG.p8" in result.output
    _assert_no_secret(result.output)


def test_json_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _good_config(tmp_path, monkeypatch)
    result = _invoke("config", "check", "--format", "json")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    document = "\n".join(lines[: lines.index("}") + 1])
    data = json.loads(document)
    assert [app["api_key"] for app in data["apps"]] == ["dev-key", "prod-key"]
    assert data["apps"][1]["api_secrets"] == ["**********", "**********"]
    _assert_no_secret(result.output)


def test_broken_config_names_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _good_config(tmp_path, monkeypatch)
    toml = Path(os.environ["CALLPUSH_CONFIG"])
    toml.write_text(toml.read_text().replace(str(tmp_path / "AuthKey"), "/x/AuthKey"))
    result = _invoke("config", "check")
    assert result.exit_code == 1
    assert "FAIL  apns" in result.output
    assert "apns.key_file: /x/AuthKey_ABC123DEFG.p8 is not readable" in result.output
    assert "1 of " in result.output and "checks failed" in result.output
    _assert_no_secret(result.output)


def test_unmigrated_database_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _good_config(tmp_path, monkeypatch, migrate=False)
    result = _invoke("config", "check")
    assert result.exit_code == 1
    assert "does not exist (`callpush db upgrade` creates it)" in result.output


def test_invalid_settings_never_echo_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An [[apps]] entry without api_key: pydantic's own message would quote the whole entry,
    # secret included.
    _config(
        monkeypatch,
        tmp_path / "callpush.toml",
        f'[[apps]]\napi_secrets = ["{STREAM_SECRET}"]\n\n[apns]\nkey_file = "/k.p8"\n',
    )
    result = _invoke("config", "check")
    assert result.exit_code == 1
    assert "FAIL  configuration" in result.output
    assert "apps.0.api_key: Field required" in result.output
    assert "apns.key_file is set but apns.key_id, apns.team_id, apns.bundle_id" in result.output
    assert f"CALLPUSH_CONFIG={tmp_path / 'callpush.toml'}" in result.output
    _assert_no_secret(result.output)


def test_invalid_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(monkeypatch, tmp_path / "bad.toml", 'database_url = "unterminated\n')
    result = _invoke("config", "check")
    assert result.exit_code == 1
    assert "is not valid TOML" in result.output and "line 1" in result.output


def test_missing_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLPUSH_CONFIG", str(tmp_path / "absent.toml"))
    result = _invoke("config", "check")
    assert result.exit_code == 1
    assert "absent.toml: no such config file" in result.output


def test_env_secret_is_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _good_config(tmp_path, monkeypatch)
    monkeypatch.setenv("CALLPUSH_STREAM_API_KEY", "env-key")
    monkeypatch.setenv("CALLPUSH_STREAM_API_SECRET", f"{STREAM_SECRET}-env")
    result = _invoke("config", "check")
    assert result.exit_code == 0, result.output
    assert "env-key" in result.output
    _assert_no_secret(result.output)


def test_db_upgrade_and_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLPUSH_DATABASE_URL", f"sqlite:///{tmp_path / 'fresh.db'}")
    before = _invoke("db", "current")  # no file yet: said so, and not created empty
    assert before.exit_code == 1
    assert "there is no database file" in before.output and "callpush db upgrade" in before.output
    assert not (tmp_path / "fresh.db").exists()
    (tmp_path / "fresh.db").touch()  # an empty database: no revision yet
    empty = _invoke("db", "current")
    assert empty.exit_code == 1
    assert "none (empty database)" in empty.output and "callpush db upgrade" in empty.output

    upgraded = _invoke("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert f"at revision {head_revision()} (head)" in upgraded.output

    again = _invoke("db", "upgrade")  # idempotent
    assert again.exit_code == 0, again.output

    after = _invoke("db", "current")
    assert after.exit_code == 0
    assert after.output.strip() == f"{head_revision()} (head)"


def test_db_upgrade_hides_the_password() -> None:
    url = "postgresql+psycopg://callpush:hunter2-secret@127.0.0.1:1/callpush?connect_timeout=2"
    result = CliRunner().invoke(main, ["db", "upgrade"], env={"CALLPUSH_DATABASE_URL": url})
    assert result.exit_code == 1
    assert "database_url postgresql+psycopg://callpush:***@127.0.0.1:1/callpush" in result.output
    assert "hunter2-secret" not in result.output


def test_config_show_prints_the_configuration_with_secret_files_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _good_config(tmp_path, monkeypatch)
    token_file = tmp_path / "admin_token"
    token_file.write_text(f"{STREAM_SECRET}-admin-token-0123456789\n")
    monkeypatch.setenv("CALLPUSH_ADMIN_TOKEN_FILE", str(token_file))
    result = _invoke("config", "show")
    assert result.exit_code == 0, result.output
    assert f'admin_token = "<from file {token_file}>"' in result.output
    assert 'api_key = "prod-key"' in result.output
    # Only the configuration: no checks run.
    assert "checks passed" not in result.output and "OK  " not in result.output
    _assert_no_secret(result.output)


def test_config_show_refuses_a_secret_given_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _good_config(tmp_path, monkeypatch)
    token_file = tmp_path / "admin_token"
    token_file.write_text(f"{STREAM_SECRET}-admin-token-0123456789\n")
    monkeypatch.setenv("CALLPUSH_ADMIN_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("CALLPUSH_ADMIN_TOKEN", f"{OLD_STREAM_SECRET}-admin-token-0123456789")
    result = _invoke("config", "show")
    assert result.exit_code == 1
    assert "FAIL  configuration" in result.output
    assert "admin_token (CALLPUSH_ADMIN_TOKEN) and admin_token_file" in result.output
    _assert_no_secret(result.output)
