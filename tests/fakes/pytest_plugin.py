"""Fixtures for the fake APNs and FCM (loaded by tests/conftest.py).

``fake_apns`` / ``fake_fcm`` start a fresh fake per test on an ephemeral port; ``apns_settings`` /
``fcm_settings`` point the real providers at them.  For fakes with options use the factories:
``fake_apns_factory(goaway_after=100)`` and then ``apns_settings_for(fake, push_credentials)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.blackhole import Blackhole, running_blackhole
from tests.fakes.credentials import PushCredentials, make_push_credentials
from tests.fakes.fake_apns import FakeApns, running_fake_apns
from tests.fakes.fake_fcm import FakeFcm, running_fake_fcm
from worker.foundation.settings import ApnsSettings, FcmSettings

APNS_KEY_ID = "ABC123DEFG"
APNS_TEAM_ID = "TEAM123456"
APNS_BUNDLE_ID = "com.example.callpush"


def apns_settings_for(
    fake: FakeApns, credentials: PushCredentials, **overrides: Any
) -> ApnsSettings:
    values: dict[str, Any] = {
        "key_file": credentials.apns_key_file,
        "key_id": APNS_KEY_ID,
        "team_id": APNS_TEAM_ID,
        "bundle_id": APNS_BUNDLE_ID,
        "use_sandbox": True,
        "host": "localhost",  # the name in the fake's certificate
        "port": fake.port,
        "ca_file": credentials.ca_file,
        "timeout_seconds": 2.0,
    }
    values.update(overrides)
    return ApnsSettings(**values)


def fcm_settings_for(
    fake: FakeFcm, credentials: PushCredentials, directory: Path, **overrides: Any
) -> FcmSettings:
    account = credentials.write_service_account(
        directory / f"service-account-{fake.port}.json", token_uri=fake.token_uri
    )
    values: dict[str, Any] = {
        "service_account_file": account,
        "endpoint": fake.endpoint,
        "timeout_seconds": 2.0,
        "max_workers": 4,
    }
    values.update(overrides)
    return FcmSettings(**values)


@pytest.fixture(scope="session")
def push_credentials(tmp_path_factory: pytest.TempPathFactory) -> PushCredentials:
    """CA, APNs .p8 key and service-account RSA key, generated once per test session."""
    return make_push_credentials(tmp_path_factory.mktemp("push-credentials"))


@pytest.fixture
def fake_apns_factory(push_credentials: PushCredentials) -> Iterator[Callable[..., FakeApns]]:
    """``start(**options)`` -> a running fake APNs; all are stopped after the test."""
    with ExitStack() as stack:

        def start(**options: Any) -> FakeApns:
            return stack.enter_context(
                running_fake_apns(
                    push_credentials.server_ssl_context(),
                    push_credentials.apns_public_key,
                    **options,
                )
            )

        yield start


@pytest.fixture
def fake_apns(fake_apns_factory: Callable[..., FakeApns]) -> FakeApns:
    return fake_apns_factory()


@pytest.fixture
def apns_settings(fake_apns: FakeApns, push_credentials: PushCredentials) -> ApnsSettings:
    return apns_settings_for(fake_apns, push_credentials)


@pytest.fixture
def fake_fcm_factory() -> Iterator[Callable[..., FakeFcm]]:
    """``start(**options)`` -> a running fake FCM; all are stopped after the test."""
    with ExitStack() as stack:

        def start(**options: Any) -> FakeFcm:
            return stack.enter_context(running_fake_fcm(**options))

        yield start


@pytest.fixture
def fake_fcm(fake_fcm_factory: Callable[..., FakeFcm]) -> FakeFcm:
    return fake_fcm_factory()


@pytest.fixture
def fcm_settings(
    fake_fcm: FakeFcm, push_credentials: PushCredentials, tmp_path: Path
) -> FcmSettings:
    return fcm_settings_for(fake_fcm, push_credentials, tmp_path)


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    """A local TCP server that accepts connections and never answers (tests/fakes/blackhole.py);
    ``blackhole.forward_to(host, port)`` turns it into a relay to a real server."""
    with running_blackhole() as hole:
        yield hole
