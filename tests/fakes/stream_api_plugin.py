"""Fixtures for the fake Stream REST API (register in tests/conftest.py:
``pytest_plugins = [..., "tests.fakes.stream_api_plugin"]``).

``fake_stream_api`` is a fresh fake per test; ``stream_app`` is the StreamAppSettings pointing at
it and ``stream_api`` a real :class:`worker.stream.api.StreamApi` client of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from tests.fakes.fake_stream_api import FakeStreamApi, running_fake_stream_api
from worker.foundation.settings import StreamAppSettings
from worker.stream.api import StreamApi

STREAM_API_KEY = "fake-stream-key"
# 32 bytes or more: PyJWT warns about shorter HMAC keys (push-libraries.md §4).
STREAM_API_SECRET = "fake-stream-secret-0123456789abcdef-not-real"
STREAM_API_TIMEOUT = 2.0


def stream_app_for(fake: FakeStreamApi) -> StreamAppSettings:
    return StreamAppSettings(
        api_key=fake.api_key, api_secrets=[SecretStr(fake.secret)], base_url=fake.url
    )


@pytest.fixture
def fake_stream_api() -> Iterator[FakeStreamApi]:
    with running_fake_stream_api(STREAM_API_KEY, STREAM_API_SECRET) as fake:
        yield fake


@pytest.fixture
def stream_app(fake_stream_api: FakeStreamApi) -> StreamAppSettings:
    return stream_app_for(fake_stream_api)


@pytest.fixture
def stream_api(stream_app: StreamAppSettings) -> Iterator[StreamApi]:
    api = StreamApi(stream_app, timeout=STREAM_API_TIMEOUT)
    try:
        yield api
    finally:
        api.close()
