"""build_providers / provider_ref: the default and the named providers."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from tests.fakes.credentials import PushCredentials
from tests.fakes.fake_apns import FakeApns
from tests.fakes.fake_fcm import FakeFcm
from tests.fakes.pytest_plugin import fcm_settings_for
from worker.foundation.settings import (
    ApnsSettings,
    FcmProviderSettings,
    FcmSettings,
    Settings,
    StreamAppSettings,
)
from worker.push.apns import ApnsProvider
from worker.push.base import (
    Platform,
    ProviderRef,
    PushKind,
    PushMessage,
    PushResult,
)
from worker.push.console import ConsoleProvider
from worker.push.fcm import FcmProvider
from worker.push.providers import build_providers, provider_ref

APP = "app-key-1"


@pytest.fixture(autouse=True)
def _no_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def app(**options: object) -> dict[str, object]:
    return {"api_key": APP, "api_secrets": ["secret"], **options}


def test_unconfigured_platforms_use_the_console(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    providers = build_providers(Settings())
    assert isinstance(providers.defaults[Platform.APNS], ConsoleProvider)
    assert isinstance(providers.defaults[Platform.FCM], ConsoleProvider)
    assert providers.named == {} and providers.loop_thread is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "apns" in warnings[0] and "apns.key_file is not set" in warnings[0]
    assert "fcm" in warnings[1] and "fcm.service_account_file is not set" in warnings[1]
    providers.close()


def test_real_providers_when_configured(
    apns_settings: ApnsSettings,
    fcm_settings: FcmSettings,
    fake_apns: FakeApns,
    fake_fcm: FakeFcm,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    providers = build_providers(Settings(apns=apns_settings, fcm=fcm_settings))
    try:
        apns, fcm = providers.defaults[Platform.APNS], providers.defaults[Platform.FCM]
        assert isinstance(apns, ApnsProvider)
        assert isinstance(fcm, FcmProvider)
        assert not [r for r in caplog.records if "console" in r.getMessage()]
        voip = PushMessage(Platform.APNS, PushKind.VOIP, "ab" * 32, {"aps": {}})
        data = PushMessage(Platform.FCM, PushKind.DATA, "tok-1", {"a": "b"})
        assert apns.send_batch([voip])[0].result is PushResult.SENT
        assert fcm.send_batch([data])[0].result is PushResult.SENT
    finally:
        providers.close()
    assert fake_apns.count == 1
    assert len(fake_fcm.received) == 1
    assert providers.loop_thread is not None and not providers.loop_thread.started


def test_console_forced(
    apns_settings: ApnsSettings, fcm_settings: FcmSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    settings = Settings(
        apns=apns_settings,
        fcm=fcm_settings,
        push_provider="console",
        apps=[app(apns_providers={"debug": {"use_sandbox": True}})],
    )
    providers = build_providers(settings)
    assert all(isinstance(p, ConsoleProvider) for p in providers.distinct())
    assert all('push_provider = "console"' in r.getMessage() for r in caplog.records)
    assert len(caplog.records) == 3  # the two defaults and the named one


def test_named_providers_get_their_own_client_and_share_one_when_identical(
    fake_apns_factory,
    fake_fcm_factory,
    push_credentials: PushCredentials,
    tmp_path: Path,
) -> None:
    """A debug build's sandbox provider is its own aioapns client; a name whose settings are
    [apns]'s own (an alias) shares the default's; a second Firebase project is its own pyfcm."""
    from tests.fakes.pytest_plugin import apns_settings_for

    production, sandbox = fake_apns_factory(), fake_apns_factory()
    fcm_one, fcm_two = fake_fcm_factory(), fake_fcm_factory()
    second = fcm_settings_for(fcm_two, push_credentials, tmp_path)
    settings = Settings(
        apns=apns_settings_for(production, push_credentials, use_sandbox=False),
        fcm=fcm_settings_for(fcm_one, push_credentials, tmp_path),
        apps=[
            app(
                apns_providers={
                    "ios-voip": {},
                    "ios-voip-debug": {
                        "bundle_id": "com.example.callpush.debug",
                        "use_sandbox": True,
                        "port": sandbox.port,
                    },
                },
                fcm_providers={
                    "android-2": {
                        "service_account_file": str(second.service_account_file),
                        "endpoint": second.endpoint,
                    }
                },
            )
        ],
    )
    providers = build_providers(settings)
    try:
        default = providers.defaults[Platform.APNS]
        alias = providers.get(ProviderRef(Platform.APNS, APP, "ios-voip"))
        debug = providers.get(ProviderRef(Platform.APNS, APP, "ios-voip-debug"))
        android2 = providers.get(ProviderRef(Platform.FCM, APP, "android-2"))
        assert alias is default
        assert isinstance(debug, ApnsProvider) and debug is not default
        assert isinstance(android2, FcmProvider)
        assert android2 is not providers.defaults[Platform.FCM]
        assert len(providers.distinct()) == 4
        assert providers.label(ProviderRef(Platform.APNS, APP, "ios-voip-debug")) == (
            "apns:ios-voip-debug"
        )
        assert providers.label(ProviderRef(Platform.APNS)) == "apns"
        assert providers.label(ProviderRef(Platform.FCM, APP, "nope")) == "fcm:nope"
        assert providers.get(ProviderRef(Platform.FCM, APP, "nope")) is None

        message = PushMessage(Platform.APNS, PushKind.VOIP, "ab" * 32, {"aps": {}})
        assert debug.send_batch([message])[0].result is PushResult.SENT
        assert android2.send_batch([PushMessage(Platform.FCM, PushKind.DATA, "t", {"a": "b"})])
    finally:
        providers.close()
    # Each went to its own server; the sandbox client used the debug bundle's topic.
    assert (production.count, sandbox.count) == (0, 1)
    assert sandbox.received[0]["headers"]["apns-topic"] == "com.example.callpush.debug.voip"
    assert (len(fcm_one.received), len(fcm_two.received)) == (0, 1)


def test_a_named_provider_inherits_and_must_be_complete(tmp_path: Path) -> None:
    key = str(tmp_path / "k.p8")
    with pytest.raises(ValueError, match=r"apps\[0\]\.apns_providers\.debug: .*team_id"):
        Settings(apps=[app(apns_providers={"debug": {"key_file": key, "key_id": "K2"}})])
    with pytest.raises(ValueError, match="key_file and key_id go together"):
        Settings(apps=[app(apns_providers={"debug": {"key_file": key}})])
    with pytest.raises(ValueError, match=r"apps\[0\]\.apns_providers\.debug\.bundle_id .*\.voip"):
        Settings(apps=[app(apns_providers={"debug": {"bundle_id": "com.example.app.voip"}})])
    with pytest.raises(ValueError, match="default_apns_provider 'x' is not one of"):
        StreamAppSettings.model_validate(app(default_apns_provider="x"))
    with pytest.raises(ValueError, match="1 to 36 characters"):
        StreamAppSettings.model_validate(app(fcm_providers={"n" * 37: {}}))
    with pytest.raises(ValueError, match="Extra inputs"):
        StreamAppSettings.model_validate(app(apns_providers={"x": {"bundle": "typo"}}))


def test_a_named_fcm_provider_with_its_own_account_does_not_inherit_the_project(
    tmp_path: Path,
) -> None:
    default = FcmSettings(service_account_file=tmp_path / "a.json", project_id="first")
    own = FcmProviderSettings(service_account_file=tmp_path / "b.json").over(default)
    assert (own.service_account_file, own.project_id) == (tmp_path / "b.json", None)
    same = FcmProviderSettings(endpoint="http://127.0.0.1:1/v1/projects").over(default)
    assert (same.service_account_file, same.project_id) == (tmp_path / "a.json", "first")


def test_provider_ref_follows_the_device_name_the_app_default_and_the_compat_rule() -> None:
    named = StreamAppSettings.model_validate(
        app(apns_providers={"ios-voip": {}, "debug": {}}, default_apns_provider="ios-voip")
    )
    plain = StreamAppSettings.model_validate(app())
    assert provider_ref(named, Platform.APNS, "debug") == ProviderRef(Platform.APNS, APP, "debug")
    assert provider_ref(named, Platform.APNS, None) == ProviderRef(Platform.APNS, APP, "ios-voip")
    # An unknown name stays what it is: the sender records it as not configured.
    assert provider_ref(named, Platform.APNS, "gone") == ProviderRef(Platform.APNS, APP, "gone")
    # No named FCM provider in this app: FCM devices go through [fcm], whatever their name.
    assert provider_ref(named, Platform.FCM, "android") == ProviderRef(Platform.FCM)
    # An app that names no provider at all keeps the old behaviour.
    assert provider_ref(plain, Platform.APNS, "ios-voip") == ProviderRef(Platform.APNS)
    assert provider_ref(None, Platform.APNS, "ios-voip") == ProviderRef(Platform.APNS)


def test_a_failed_build_closes_what_it_had_built(
    apns_settings: ApnsSettings, fake_apns: FakeApns, tmp_path: Path
) -> None:
    """The APNs provider (and its event loop thread) is built before the FCM one fails."""
    junk = tmp_path / "service-account.json"
    junk.write_text("not json")
    before = {t for t in threading.enumerate() if t.name == "callpush-apns"}
    with pytest.raises(ValueError):
        build_providers(Settings(apns=apns_settings, fcm=FcmSettings(service_account_file=junk)))
    assert {t for t in threading.enumerate() if t.name == "callpush-apns"} - before == set()
