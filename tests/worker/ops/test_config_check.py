"""worker.ops.config_check: the checks behind `callpush config check`, without click.  Showing the
configuration is tested in test_config_show.py."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from tests.fakes.fake_stream_api import NOTIFICATION_EVENTS
from worker.foundation.settings import DEV_API_SECRET, ApnsSettings, Settings, StreamAppSettings
from worker.ops import config_check
from worker.ops.config_check import Check
from worker.storage.migrations import head_revision, upgrade_to_head

STREAM_SECRET = "stream-secret-value-1234"
OLD_STREAM_SECRET = "stream-old-secret-5678"
DB_PASSWORD = "db-pa55word-xyz"
BROKER_PASSWORD = "broker-pa55word-xyz"


# No CALLPUSH_* variable or ./callpush.toml of the developer's leaks in (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("isolated_settings")


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
        "push settings",
        "timeouts",
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
# The stream apps and the timeouts


def test_the_stream_app_check_reports_current_and_previous_secrets(tmp_path: Path) -> None:
    checks = config_check.run_checks(good_settings(tmp_path))
    detail = by_name(checks, "stream apps")[0].detail
    assert "prod-key (api_secret + 1 previous)" in detail, detail
    assert "dev-key (api_secret + 0 previous)" in detail, detail


def test_timeouts_state_how_long_a_webhook_can_wait(tmp_path: Path) -> None:
    checks = config_check.run_checks(good_settings(tmp_path))
    # Defaults: max(pool 2, connect 2) + web statement 2 + 1 s grace; the 0.5 s publish wait.
    assert by_name(checks, "timeouts")[0].detail.startswith(
        "a webhook is answered within 5.0 s (503) when the database hangs and 0.5 s when the "
        "broker hangs"
    )
    slow = good_settings(tmp_path, database={"web_statement_timeout_seconds": 10})
    (check,) = by_name(config_check.run_checks(slow), "timeouts")
    assert check.status == "WARN" and "not within the 6 s Stream waits" in check.detail


def test_validation_errors_name_the_setting_but_never_quote_the_input() -> None:
    from worker.foundation.settings import load_settings

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


def test_unreachable_rabbitmq_fails() -> None:
    url = f"amqp://callpush:{BROKER_PASSWORD}@127.0.0.1:1/callpush"
    checks = config_check.check_broker(Settings(broker_url=url))
    assert_fails_with(checks, "broker", "broker_url amqp://callpush:***@127.0.0.1:1/callpush")
    assert BROKER_PASSWORD not in checks[0].detail


@pytest.mark.services
def test_rabbitmq_reachable_and_its_queues_checked(rabbitmq_url: str) -> None:
    from kombu import Connection, Queue

    from worker.runtime.celery_app import create_celery

    settings = Settings(broker_url=rabbitmq_url)
    checks = config_check.check_broker(settings)
    assert all(check.ok for check in checks), checks
    assert "ring: not declared yet" in " | ".join(c.detail for c in checks)

    create_celery(settings, publisher=True).handoff.queue_event(1, "call.ring")
    checks = config_check.check_broker(settings)
    assert all(check.ok for check in checks), checks
    details = " | ".join(c.detail for c in by_name(checks, "broker queues"))
    assert "ring: quorum queue, 1 messages waiting" in details

    # A classic "bulk" queue left by an older setup: every worker would fail to declare it.
    with Connection(rabbitmq_url) as connection:
        Queue("bulk", durable=True).bind(connection.default_channel).declare()
    checks = config_check.check_broker(settings)
    assert_fails_with(checks, "broker queues", "bulk:", "quorum", "x-queue-type")


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


def test_apns_bundle_id_that_apns_would_not_accept(tmp_path: Path) -> None:
    settings = with_apns(good_settings(tmp_path), bundle_id="com.example.app.voip")
    assert_fails_with(
        config_check.check_apns(settings),
        "apns",
        "apns.bundle_id 'com.example.app.voip' ends in '.voip'",
    )
    settings = with_apns(good_settings(tmp_path), bundle_id="com.example_app")
    assert_fails_with(config_check.check_apns(settings), "apns", "apns.bundle_id", "only letters")


def with_providers(directory: Path, **app_options: Any) -> Settings:
    apps = [{"api_key": "dev-key", "api_secrets": [STREAM_SECRET], **app_options}]
    return good_settings(directory, apps=apps)


def test_every_named_provider_is_checked_as_it_will_be_built(tmp_path: Path) -> None:
    """A named provider inherits [apns]'s key; one with a key of its own has it read."""
    other_key = tmp_path / "AuthKey_OTHER.p8"
    other_key.write_bytes(b"not a key")
    settings = with_providers(
        tmp_path,
        apns_providers={
            "ios-voip-debug": {"bundle_id": "com.example.app.debug", "use_sandbox": True},
            "second-team": {
                "key_file": str(other_key),
                "key_id": "XYZ987WVUT",
                "team_id": "TEAM999999",
            },
        },
    )
    checks = config_check.check_apns(settings)
    details = [c.detail for c in checks if c.ok]
    assert "key ABC123DEFG of team TEAM123456 for com.example.app (production)" in details
    assert (
        "apps[0].apns_providers.ios-voip-debug: key ABC123DEFG of team TEAM123456 for "
        "com.example.app.debug (sandbox)" in details
    )
    assert_fails_with(
        checks,
        "apns",
        f"apps[0].apns_providers.second-team.key_file: {other_key} is not a PEM file",
    )


def test_a_named_fcm_provider_with_its_own_service_account(tmp_path: Path) -> None:
    account = tmp_path / "second.json"
    account.write_text(json.dumps(service_account(project_id="second-project")))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    settings = with_providers(
        tmp_path,
        fcm_providers={
            "android-2": {"service_account_file": str(account)},
            "android-3": {"service_account_file": str(broken), "endpoint": "ftp://x"},
        },
    )
    checks = config_check.check_fcm(settings)
    assert any(
        c.ok
        and c.detail.startswith("apps[0].fcm_providers.android-2: ")
        and "second-project" in c.detail
        for c in checks
    )
    assert_fails_with(
        checks,
        "fcm",
        "apps[0].fcm_providers.android-3.endpoint:",
        f"apps[0].fcm_providers.android-3.service_account_file: {broken} is not valid JSON",
    )


def test_named_providers_without_credentials_warn_they_use_the_console(tmp_path: Path) -> None:
    settings = Settings(apps=[{"api_key": "k", "api_secrets": ["s"], "apns_providers": {"x": {}}}])
    checks = config_check.check_apns(settings)
    assert all(c.ok and c.warning for c in checks) and len(checks) == 2
    assert "apps[0].apns_providers.x: no key_file" in checks[1].detail


def test_a_named_provider_that_cannot_be_complete_fails_to_load(tmp_path: Path) -> None:
    settings, problem = config_check.load_settings_safely(
        lambda: Settings(
            apps=[
                {
                    "api_key": "k",
                    "api_secrets": ["s"],
                    "apns_providers": {"debug": {"bundle_id": "com.example.app.voip"}},
                }
            ]
        )
    )
    assert settings is None and problem is not None and not problem.ok
    assert "apps[0].apns_providers.debug.bundle_id" in problem.detail
    assert "ends in '.voip'" in problem.detail


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
    from worker.foundation.settings import Settings
    from worker.ops.config_check import check_templates

    broken = Settings(
        call_types={"default": {"templates": {"call.ring": {"title": "{{ user.name "}}}}
    )
    (check,) = check_templates(broken)
    assert not check.ok
    assert 'call_types.default.templates."call.ring".title' in check.detail
    (fine,) = check_templates(Settings())
    assert fine.ok


def test_push_settings_local_and_from_stream(fake_stream_api):
    from tests.fakes.fake_stream_api import notification_settings

    fake_stream_api.set_call_type(
        "default",
        notification_settings(
            enabled=False,
            off=["call_missed"],
            templates={
                "call_ring": ("{{ user.display_name }} rings", ""),
                "call_notification": ("{{ user.display_name", ""),
            },
        ),
    )
    fake_stream_api.set_call_type("legacy", notification_settings(off=list(NOTIFICATION_EVENTS)))
    streamed = {
        "api_key": fake_stream_api.api_key,
        "api_secrets": [fake_stream_api.secret],
        "base_url": fake_stream_api.url,
        "push_settings_source": "stream",
    }
    local = {"api_key": "other", "api_secrets": ["s"]}
    checks = config_check.check_push_settings(Settings(apps=[streamed, local]))
    details = [(c.status, c.detail) for c in checks]
    key = fake_stream_api.api_key
    assert details[0] == (
        "OK",
        f"apps[0] ({key}): following Stream's call types: default (off: call.missed; Stream's "
        "wording: call.notification, call.ring); legacy (off: call.live_started, call.missed, "
        "call.notification, call.ring, call.session_started; Stream's wording: none)",
    )
    warnings = [detail for status, detail in details if status == "WARN"]
    assert any(
        "'default', call.notification: Stream's template is not usable (title: unclosed tag)" in w
        for w in warnings
    )
    # legacy: Stream's own pushes still on, and every event off (the old way of silencing it).
    assert any("'legacy' has Stream's own pushes on" in w for w in warnings)
    assert any("'legacy' has every event switched off in Stream" in w for w in warnings)
    assert not any("'default' has" in w for w in warnings)
    assert details[-1] == ("OK", "apps[1] (other): local ([call_types], built-in wording)")


def test_push_settings_when_stream_does_not_answer(fake_stream_api):
    app = {
        "api_key": fake_stream_api.api_key,
        "api_secrets": [fake_stream_api.secret],
        "base_url": fake_stream_api.url,
        "push_settings_source": "stream",
    }
    fake_stream_api.outage = True
    (check,) = config_check.check_push_settings(Settings(apps=[app]))
    assert check.status == "WARN"
    assert "Stream's call types could not be read (503" in check.detail
    assert "the workers use the local settings until they can" in check.detail
    fake_stream_api.outage = False
    (check,) = config_check.check_push_settings(
        Settings(apps=[{**app, "api_secrets": ["a-wrong-secret-0123456789abcdef-x"]}])
    )
    assert check.status == "FAIL" and "(401" in check.detail


def test_the_single_app_shortcut_takes_the_push_settings_source(monkeypatch):
    monkeypatch.setenv("CALLPUSH_STREAM_API_KEY", "k")
    monkeypatch.setenv("CALLPUSH_STREAM_API_SECRET", "s")
    monkeypatch.setenv("CALLPUSH_STREAM_PUSH_SETTINGS_SOURCE", "stream")
    (app,) = Settings().apps
    assert app.push_settings_source == "stream"
    monkeypatch.delenv("CALLPUSH_STREAM_PUSH_SETTINGS_SOURCE")
    assert Settings().apps[0].push_settings_source == "local"


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
