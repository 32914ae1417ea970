"""worker.config_check: the checks behind `callpush config check`, without click."""

from __future__ import annotations

import json
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from worker import config_check
from worker.config_check import Check
from worker.settings import DEV_API_SECRET, ApnsSettings, Settings, StreamAppSettings
from worker.storage.migrations import head_revision, upgrade_to_head

STREAM_SECRET = "stream-secret-value-1234"
OLD_STREAM_SECRET = "stream-old-secret-5678"
DB_PASSWORD = "db-pa55word-xyz"
BROKER_PASSWORD = "broker-pa55word-xyz"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CALLPUSH_* variable or ./callpush.toml of the developer's leaks into a test."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("CALLPUSH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


# --------------------------------------------------------------------------------------------
# Credentials made on the fly (shared with tests/worker/commands/test_config_cli.py)


def _pem(key: Any, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


@cache
def apns_key_pem() -> bytes:
    """Like Apple's .p8: a PKCS#8 PEM P-256 key."""
    return _pem(ec.generate_private_key(ec.SECP256R1()))


@cache
def rsa_key_pem() -> bytes:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def service_account(**changes: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "type": "service_account",
        "project_id": "callpush-test",
        "private_key_id": "0123456789abcdef",
        "private_key": rsa_key_pem().decode(),
        "client_email": "pusher@callpush-test.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    info.update(changes)
    return {k: v for k, v in info.items() if v is not None}


def write_credentials(directory: Path) -> tuple[Path, Path]:
    key_file = directory / "AuthKey_ABC123DEFG.p8"
    key_file.write_bytes(apns_key_pem())
    account_file = directory / "service-account.json"
    account_file.write_text(json.dumps(service_account()))
    return key_file, account_file


def good_settings(directory: Path, **overrides: Any) -> Settings:
    """Everything configured and working: SQLite migrated to head, APNs, FCM, two apps."""
    key_file, account_file = write_credentials(directory)
    database_url = f"sqlite:///{directory / 'callpush.db'}"
    upgrade_to_head(database_url)
    values: dict[str, Any] = {
        "database_url": database_url,
        "apps": [
            {"api_key": "dev-key", "api_secrets": [STREAM_SECRET]},
            {"api_key": "prod-key", "api_secrets": f"{STREAM_SECRET}x,{OLD_STREAM_SECRET}"},
        ],
        "apns": {
            "key_file": key_file,
            "key_id": "ABC123DEFG",
            "team_id": "TEAM123456",
            "bundle_id": "com.example.app",
        },
        "fcm": {"service_account_file": account_file},
    }
    values.update(overrides)
    return Settings(**values)


def by_name(checks: list[Check], name: str) -> list[Check]:
    found = [check for check in checks if check.name == name]
    assert found, f"no {name!r} check in {checks}"
    return found


def assert_fails_with(checks: list[Check], name: str, *fragments: str) -> None:
    failures = [check for check in by_name(checks, name) if not check.ok]
    assert failures, f"{name} did not fail: {checks}"
    text = " | ".join(check.detail for check in failures)
    for fragment in fragments:
        assert fragment in text, text


def with_apns(settings: Settings, **changes: Any) -> Settings:
    # model_construct: also states the settings validator would refuse (to test the checks).
    apns = ApnsSettings.model_construct(**{**settings.apns.model_dump(), **changes})
    return settings.model_copy(update={"apns": apns})


# --------------------------------------------------------------------------------------------
# The whole set


def test_good_configuration_passes(tmp_path: Path) -> None:
    checks = config_check.run_checks(good_settings(tmp_path))
    assert [c for c in checks if c.status != "OK"] == []
    names = {check.name for check in checks}
    assert names == {
        "urls",
        "database",
        "migrations",
        "broker",
        "stream apps",
        "apns",
        "fcm",
        "templates",
        "admin access",
    }
    assert str(head_revision()) in by_name(checks, "migrations")[0].detail


def test_a_crashing_check_is_reported_and_the_others_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(settings: Settings) -> list[Check]:
        raise RuntimeError("boom")

    monkeypatch.setattr(config_check, "check_apns", broken)
    checks = config_check.run_checks(good_settings(tmp_path))
    assert_fails_with(checks, "apns", "boom")
    assert by_name(checks, "fcm")[0].ok


# --------------------------------------------------------------------------------------------
# Showing the configuration


def test_redacted_settings_hide_every_secret(tmp_path: Path) -> None:
    settings = good_settings(
        tmp_path,
        database_url=f"postgresql+psycopg://callpush:{DB_PASSWORD}@db:5432/callpush",
        broker_url=f"redis://:{BROKER_PASSWORD}@redis:6379/0",
        stream_api_key="single",
        stream_api_secret=SecretStr("single-app-secret-999"),
    )
    data = config_check.redacted_settings(settings)
    shown = json.dumps(data) + config_check.render_toml(data)
    for secret in (STREAM_SECRET, OLD_STREAM_SECRET, DB_PASSWORD, BROKER_PASSWORD, "single-app"):
        assert secret not in shown
    assert "BEGIN PRIVATE KEY" not in shown
    assert data["database_url"] == "postgresql+psycopg://callpush:***@db:5432/callpush"
    assert data["broker_url"] == "redis://:***@redis:6379/0"
    # File paths are not secret: the operator needs them.
    assert data["apns"]["key_file"] == str(settings.apns.key_file)
    assert data["apps"][-1]["api_secrets"] == [config_check.REDACTED] * 2


def test_render_toml_parses_back(tmp_path: Path) -> None:
    call_types = {
        "default": {
            "disabled_events": ["call.missed"],
            "templates": {"call.notification": {"title": 'Call from "{{ user.name }}"'}},
        },
        "*": {},
    }
    settings = good_settings(tmp_path, broker_url="redis://r:6379/0", call_types=call_types)
    data = config_check.redacted_settings(settings)
    parsed = tomllib.loads(config_check.render_toml(data))

    def without_none(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: without_none(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [without_none(v) for v in value]
        return value

    assert parsed == without_none(data)


def test_scrub_masks_secrets_echoed_by_error_messages(tmp_path: Path) -> None:
    settings = good_settings(tmp_path)
    text = f"driver said: bad secret {STREAM_SECRET} and {OLD_STREAM_SECRET}"
    assert config_check.scrub(text, settings) == (
        f"driver said: bad secret {config_check.REDACTED} and {config_check.REDACTED}"
    )


def test_redact_url() -> None:
    assert config_check.redact_url("redis://u:p@h:1/0") == "redis://u:***@h:1/0"
    assert config_check.redact_url("redis://h:1/0") == "redis://h:1/0"
    assert config_check.redact_url("sqlite:///x.db") == "sqlite:///x.db"


def test_validation_errors_name_the_setting_but_never_quote_the_input() -> None:
    from worker.settings import load_settings

    settings, problem = config_check.load_settings_safely(
        lambda: load_settings(apps=[{"api_secrets": [STREAM_SECRET]}], push_provider="nope")
    )
    assert settings is None and problem is not None and not problem.ok
    assert "apps.0.api_key: Field required" in problem.detail
    assert "push_provider:" in problem.detail
    assert STREAM_SECRET not in problem.detail


# --------------------------------------------------------------------------------------------
# Database


def test_missing_sqlite_file_fails_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here.db"
    checks = config_check.check_database(Settings(database_url=f"sqlite:///{path}"))
    assert_fails_with(checks, "database", f"database_url: {path} does not exist")
    assert not path.exists()


def test_unmigrated_sqlite_fails_the_migration_check(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    checks = config_check.check_database(Settings(database_url=f"sqlite:///{path}"))
    assert by_name(checks, "database")[0].ok
    assert_fails_with(checks, "migrations", "no schema yet", "callpush db upgrade")


def test_unknown_revision_means_the_database_is_newer(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_to_head(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("update alembic_version set version_num = '9999'"))
    engine.dispose()
    checks = config_check.check_database(Settings(database_url=url))
    assert_fails_with(checks, "migrations", "9999", "newer than the code")


@pytest.mark.services
def test_postgres_reachable_then_migrated(postgres_url: str) -> None:
    settings = Settings(database_url=postgres_url)
    checks = config_check.check_database(settings)
    assert by_name(checks, "database")[0].ok
    assert_fails_with(checks, "migrations", "callpush db upgrade")
    upgrade_to_head(postgres_url)
    assert all(check.ok for check in config_check.check_database(settings))


def test_unreachable_postgres_fails_quickly() -> None:
    url = f"postgresql+psycopg://callpush:{DB_PASSWORD}@127.0.0.1:1/callpush"
    checks = config_check.check_database(Settings(database_url=url))
    assert_fails_with(checks, "database", "database_url postgresql+psycopg://callpush:***@")
    assert DB_PASSWORD not in checks[0].detail


# --------------------------------------------------------------------------------------------
# Broker


def test_embedded_broker_is_fine() -> None:
    checks = config_check.check_broker(Settings())
    assert checks[0].ok and "embedded" in checks[0].detail


def test_unreachable_redis_fails() -> None:
    url = f"redis://:{BROKER_PASSWORD}@127.0.0.1:1/0"
    checks = config_check.check_broker(Settings(broker_url=url))
    assert_fails_with(checks, "broker", "broker_url redis://:***@127.0.0.1:1/0: unreachable")
    assert BROKER_PASSWORD not in checks[0].detail


@pytest.mark.services
def test_reachable_redis(redis_url: str) -> None:
    checks = config_check.check_broker(Settings(broker_url=redis_url))
    assert checks[0].ok, checks


# --------------------------------------------------------------------------------------------
# Stream apps


def test_no_app_warns_in_embedded_mode() -> None:
    (check,) = config_check.check_apps(Settings())
    assert check.ok and check.warning and "dev app" in check.detail


def test_no_app_fails_in_production_mode() -> None:
    checks = config_check.check_apps(Settings(broker_url="redis://r:6379/0"))
    assert_fails_with(checks, "stream apps", "apps: none configured")


def test_dev_secret_fails_in_production_mode() -> None:
    app = StreamAppSettings(api_key="k", api_secrets=[SecretStr(DEV_API_SECRET)])
    checks = config_check.check_apps(Settings(broker_url="redis://r:6379/0", apps=[app]))
    assert_fails_with(checks, "stream apps", "apps[0].api_secrets holds the built-in dev secret")


def test_duplicate_api_key_fails() -> None:
    apps: list[Any] = [
        {"api_key": "k", "api_secrets": ["a-secret"]},
        {"api_key": "k", "api_secrets": ["b"]},
    ]
    checks = config_check.check_apps(Settings(apps=apps))
    assert_fails_with(checks, "stream apps", "apps[1].api_key 'k' is listed twice")


def test_half_set_single_app_shortcut_fails() -> None:
    checks = config_check.check_apps(Settings(stream_api_key="k"))
    assert_fails_with(checks, "stream apps", "stream_api_key is set but stream_api_secret is not")


# --------------------------------------------------------------------------------------------
# APNs


def test_apns_not_configured_warns() -> None:
    (check,) = config_check.check_apns(Settings())
    assert check.ok and check.warning and "apns.key_file unset" in check.detail


def test_apns_unreadable_key_file(tmp_path: Path) -> None:
    settings = with_apns(good_settings(tmp_path), key_file=Path("/x/key.p8"))
    assert_fails_with(
        config_check.check_apns(settings), "apns", "apns.key_file: /x/key.p8 is not readable"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not a key at all", "is not a PEM file"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a valid PEM"),
        (None, "not an EC (P-256) key"),  # an RSA key
        (
            _pem(ec.generate_private_key(ec.SECP384R1())),
            "APNs needs P-256",
        ),
        (
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"passphrase"),
            ),
            "encrypted",
        ),
    ],
)
def test_apns_bad_keys(tmp_path: Path, content: bytes | None, expected: str) -> None:
    settings = good_settings(tmp_path)
    assert settings.apns.key_file is not None
    settings.apns.key_file.write_bytes(content if content is not None else rsa_key_pem())
    checks = config_check.check_apns(settings)
    assert_fails_with(checks, "apns", f"apns.key_file: {settings.apns.key_file}", expected)


def test_apns_traditional_ec_pem_is_accepted(tmp_path: Path) -> None:
    settings = good_settings(tmp_path)
    assert settings.apns.key_file is not None
    key = ec.generate_private_key(ec.SECP256R1())
    settings.apns.key_file.write_bytes(_pem(key, serialization.PrivateFormat.TraditionalOpenSSL))
    assert config_check.check_apns(settings)[0].ok


def test_apns_missing_identifiers(tmp_path: Path) -> None:
    settings = with_apns(good_settings(tmp_path), team_id="", bundle_id=" ")
    checks = config_check.check_apns(settings)
    assert_fails_with(checks, "apns", "apns.team_id is empty", "apns.bundle_id is empty")


def test_apns_unreadable_ca_file(tmp_path: Path) -> None:
    settings = with_apns(good_settings(tmp_path), ca_file=tmp_path / "missing-ca.pem")
    assert_fails_with(config_check.check_apns(settings), "apns", "apns.ca_file:")


def test_console_provider_needs_no_credentials() -> None:
    settings = Settings(push_provider="console")
    assert all(c.ok and not c.warning for c in config_check.check_apns(settings))
    assert all(c.ok and not c.warning for c in config_check.check_fcm(settings))


# --------------------------------------------------------------------------------------------
# FCM


def test_fcm_not_configured_warns() -> None:
    (check,) = config_check.check_fcm(Settings())
    assert check.ok and check.warning and "fcm.service_account_file unset" in check.detail


def _fcm_checks(tmp_path: Path, content: str | None, **fcm: Any) -> list[Check]:
    settings = good_settings(tmp_path)
    path = settings.fcm.service_account_file
    assert path is not None
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    if fcm:
        settings = settings.model_copy(
            update={"fcm": settings.fcm.model_copy(update=fcm)}, deep=True
        )
    return config_check.check_fcm(settings)


def test_fcm_good_file(tmp_path: Path) -> None:
    (check,) = _fcm_checks(tmp_path, json.dumps(service_account()))
    assert check.ok and "callpush-test" in check.detail and "pusher@" in check.detail


def test_fcm_unreadable(tmp_path: Path) -> None:
    checks = _fcm_checks(tmp_path, None)
    assert_fails_with(checks, "fcm", "fcm.service_account_file:", "is not readable")


def test_fcm_not_json(tmp_path: Path) -> None:
    checks = _fcm_checks(tmp_path, "{not json")
    assert_fails_with(checks, "fcm", "is not valid JSON (line 1")


def test_fcm_missing_fields(tmp_path: Path) -> None:
    checks = _fcm_checks(tmp_path, json.dumps(service_account(client_email=None, project_id=None)))
    assert_fails_with(checks, "fcm", "lacks client_email, project_id")


def test_fcm_project_id_may_come_from_settings(tmp_path: Path) -> None:
    checks = _fcm_checks(
        tmp_path, json.dumps(service_account(project_id=None)), project_id="from-settings"
    )
    assert checks[0].ok and "from-settings (fcm.project_id)" in checks[0].detail


def test_fcm_wrong_credential_type(tmp_path: Path) -> None:
    checks = _fcm_checks(tmp_path, json.dumps(service_account(type="authorized_user")))
    assert_fails_with(checks, "fcm", "'authorized_user' credential")


def test_fcm_bad_private_key_is_not_quoted(tmp_path: Path) -> None:
    bogus = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n"
    checks = _fcm_checks(tmp_path, json.dumps(service_account(private_key=bogus)))
    assert_fails_with(checks, "fcm", "private_key is not a valid PEM private key")
    assert "c2VjcmV0" not in checks[0].detail


# --------------------------------------------------------------------------------------------
# URLs


def test_good_urls() -> None:
    assert config_check.check_urls(Settings(broker_url="rediss://:p@h:6380/0"))[0].ok


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"database_url": "nonsense"}, "database_url: 'nonsense' is not a database URL"),
        ({"database_url": "mysql+pymysql://h/db"}, "database_url: backend 'mysql'"),
        ({"broker_url": "http://h:1/"}, "broker_url: 'http://h:1/': unknown transport 'http'"),
        ({"broker_url": "redis://:pw@h:notaport/0"}, "broker_url: 'redis://:***@h:notaport/0'"),
        ({"broker_url": "redis:///0"}, "has no host"),
        ({"stream_base_url": "video.stream-io-api.com"}, "stream_base_url: "),
        (
            {"apps": [{"api_key": "k", "api_secrets": ["s"], "base_url": "ftp://x"}]},
            "apps[0].base_url: 'ftp://x' must start with http:// or https://",
        ),
        ({"fcm": {"endpoint": "fcm.example"}}, "fcm.endpoint: 'fcm.example' must start with"),
        ({"apns": {"host": "https://api.push.apple.com"}}, "apns.host: "),
        ({"apns": {"port": 70000}}, "apns.port: 70000 is not a TCP port"),
    ],
)
def test_bad_urls(overrides: dict[str, Any], expected: str) -> None:
    checks = config_check.check_urls(Settings(**overrides))
    assert_fails_with(checks, "urls", expected)


def test_a_broken_template_fails_the_check_naming_the_setting():
    from worker.config_check import check_templates
    from worker.settings import Settings

    broken = Settings(
        call_types={"default": {"templates": {"call.ring": {"title": "{{ user.name "}}}}
    )
    (check,) = check_templates(broken)
    assert not check.ok
    assert 'call_types.default.templates."call.ring".title' in check.detail
    (fine,) = check_templates(Settings())
    assert fine.ok


# --------------------------------------------------------------------------------------------
# Operator access


def test_a_short_admin_token_fails_naming_the_setting() -> None:
    short = "x" * (config_check.MIN_ADMIN_TOKEN_LENGTH - 1)
    checks = config_check.check_admin_access(Settings(admin_token=short))
    assert_fails_with(checks, "admin access", "admin_token (CALLPUSH_ADMIN_TOKEN)", "31 characters")
    assert short not in " ".join(check.detail for check in checks)
    # Whitespace around it does not count.
    padded = Settings(admin_token=f"  {short}  ")
    assert_fails_with(config_check.check_admin_access(padded), "admin access", "at least 32")


def test_a_long_admin_token_or_none_passes() -> None:
    token = "x" * config_check.MIN_ADMIN_TOKEN_LENGTH
    (check,) = config_check.check_admin_access(Settings(admin_token=token, trusted_proxies=1))
    assert check.ok and "32 characters" in check.detail and "trusted_proxies = 1" in check.detail
    assert token not in check.detail
    (off,) = config_check.check_admin_access(Settings())
    assert off.ok and "/admin and /dashboard are off" in off.detail
    assert config_check.admin_token_problem(Settings()) is None
