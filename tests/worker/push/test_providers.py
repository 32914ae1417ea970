"""build_providers / close_providers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.fakes.fake_apns import FakeApns
from tests.fakes.fake_fcm import FakeFcm
from worker.push.apns import ApnsProvider
from worker.push.base import Platform, PushKind, PushMessage, PushOutcome, PushResult
from worker.push.console import ConsoleProvider
from worker.push.fcm import FcmProvider
from worker.push.providers import build_providers, close_providers
from worker.settings import ApnsSettings, FcmSettings, Settings


@pytest.fixture(autouse=True)
def _no_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def test_unconfigured_platforms_use_the_console(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    providers = build_providers(Settings())
    assert isinstance(providers[Platform.APNS], ConsoleProvider)
    assert isinstance(providers[Platform.FCM], ConsoleProvider)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "apns" in warnings[0] and "apns.key_file is not set" in warnings[0]
    assert "fcm" in warnings[1] and "fcm.service_account_file is not set" in warnings[1]
    close_providers(providers)


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
        assert isinstance(providers[Platform.APNS], ApnsProvider)
        assert isinstance(providers[Platform.FCM], FcmProvider)
        assert not [r for r in caplog.records if "console" in r.getMessage()]
        apns = PushMessage(Platform.APNS, PushKind.VOIP, "ab" * 32, {"aps": {}})
        fcm = PushMessage(Platform.FCM, PushKind.DATA, "tok-1", {"a": "b"})
        assert providers[Platform.APNS].send_batch([apns])[0].result is PushResult.SENT
        assert providers[Platform.FCM].send_batch([fcm])[0].result is PushResult.SENT
    finally:
        close_providers(providers)
    assert fake_apns.count == 1
    assert len(fake_fcm.received) == 1


def test_console_forced(
    apns_settings: ApnsSettings, fcm_settings: FcmSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    settings = Settings(apns=apns_settings, fcm=fcm_settings, push_provider="console")
    providers = build_providers(settings)
    assert all(isinstance(p, ConsoleProvider) for p in providers.values())
    assert all('push_provider = "console"' in r.getMessage() for r in caplog.records)
    assert len(caplog.records) == 2


class _Closing:
    name = "closing"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.closed = 0

    def send_batch(self, messages: object, on_answer: object = None) -> list[PushOutcome]:
        return []

    def close(self) -> None:
        self.closed += 1
        if self.fail:
            raise RuntimeError("boom")


def test_close_providers_closes_each_once_and_survives_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing, shared = _Closing(fail=True), _Closing()
    close_providers({Platform.APNS: failing, Platform.FCM: shared})
    close_providers({Platform.APNS: shared, Platform.FCM: shared})
    assert failing.closed == 1
    assert shared.closed == 2  # once per call, not once per platform
    assert any("closing the apns provider" in r.getMessage() for r in caplog.records)
