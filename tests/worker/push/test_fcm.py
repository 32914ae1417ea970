"""FcmProvider: real pyfcm + google-auth service-account flow against the fake FCM."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import multiprocessing
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from google.auth import credentials as ga_credentials
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from tests.fakes.credentials import SERVICE_ACCOUNT_EMAIL, PushCredentials
from tests.fakes.fake_fcm import FakeFcm
from tests.fakes.pytest_plugin import fcm_settings_for
from worker.foundation.settings import FcmSettings
from worker.push.base import Platform, PushKind, PushMessage, PushResult
from worker.push.fcm import FcmProvider, request_not_sent, string_data


def data(device_token: str, **fields: Any) -> PushMessage:
    values: dict[str, Any] = {"payload": {"type": "call.ring", "call_cid": "default:c1"}}
    values.update(fields)
    return PushMessage(Platform.FCM, PushKind.DATA, device_token, **values)


class StaticCredentials(ga_credentials.Credentials):  # push-libraries.md §2, option B
    def __init__(self, token: str = "fake-at-static", project_id: str = "static-project"):
        super().__init__()
        self.token = token
        self.project_id = project_id
        self.refreshes = 0

    def refresh(self, request: Any) -> None:
        self.refreshes += 1


@pytest.fixture
def provider_for() -> Iterator[Callable[..., FcmProvider]]:
    providers: list[FcmProvider] = []

    def make(settings: FcmSettings, credentials: Any = None) -> FcmProvider:
        providers.append(FcmProvider(settings, credentials))
        return providers[-1]

    yield make
    for provider in providers:
        provider.close()


@pytest.fixture
def fcm_provider(
    fcm_settings: FcmSettings, provider_for: Callable[..., FcmProvider]
) -> FcmProvider:
    return provider_for(fcm_settings)


def test_data_message_shape_and_oauth_flow(fcm_provider: FcmProvider, fake_fcm: FakeFcm) -> None:
    payload = {
        "type": "call.ring",
        "call_cid": "default:c1",
        "attempt": 2,
        "video": True,
        "members": ["a", "b"],
        "skipped": None,
    }
    [outcome] = fcm_provider.send_batch(
        [data("tok-1", payload=payload, priority=10, time_to_live=30, collapse_id="call-c1")]
    )
    assert outcome.result is PushResult.SENT
    assert outcome.provider_message_id is not None
    assert outcome.provider_message_id.startswith("projects/test-project/messages/")
    [request] = fake_fcm.received
    assert request["project"] == "test-project"
    assert request["authorization"] == "Bearer fake-at-1"
    assert request["body"] == {
        "message": {
            "token": "tok-1",
            "data": {
                "type": "call.ring",
                "call_cid": "default:c1",
                "attempt": "2",
                "video": "true",
                "members": '["a","b"]',
            },
            "android": {"priority": "high", "ttl": "30s", "collapse_key": "call-c1"},
        },
        "validate_only": False,
    }
    [token_request] = fake_fcm.token_requests
    assert token_request["form"]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert token_request["claims"]["iss"] == SERVICE_ACCOUNT_EMAIL
    assert "firebase.messaging" in token_request["claims"]["scope"]


def test_normal_priority_without_ttl(fcm_provider: FcmProvider, fake_fcm: FakeFcm) -> None:
    [outcome] = fcm_provider.send_batch([data("tok-1", priority=5)])
    assert outcome.result is PushResult.SENT
    assert fake_fcm.received[0]["message"]["android"] == {"priority": "normal"}


@pytest.mark.parametrize(
    ("device_token", "result", "reason", "status"),
    [
        ("unreg-1", PushResult.TOKEN_INVALID, "UNREGISTERED", 404),
        ("invalid-1", PushResult.TOKEN_INVALID, "INVALID_ARGUMENT", 400),
        ("badtoken-1", PushResult.TOKEN_INVALID, "INVALID_ARGUMENT", 400),
        ("mismatch-1", PushResult.TOKEN_INVALID, "SENDER_ID_MISMATCH", 403),
        ("badpayload-1", PushResult.FAILED, "INVALID_ARGUMENT", 400),
        ("internal-1", PushResult.RETRY, "INTERNAL", 500),
        ("flaky-1", PushResult.RETRY, "UNAVAILABLE", 503),
        ("quota-1", PushResult.RETRY, "QUOTA_EXCEEDED", 429),
    ],
)
def test_classification(
    fcm_provider: FcmProvider,
    fake_fcm: FakeFcm,
    device_token: str,
    result: PushResult,
    reason: str,
    status: int,
) -> None:
    [outcome] = fcm_provider.send_batch([data(device_token)])
    assert (outcome.result, outcome.reason, outcome.status_code) == (result, reason, status)
    assert fake_fcm.hits[device_token] == 1  # never retried inside pyfcm or urllib3


def test_batch_keeps_order(fcm_provider: FcmProvider, fake_fcm: FakeFcm) -> None:
    tokens = ["ok-1", "unreg-1", "ok-2", "internal-1", "mismatch-1", "ok-3"] * 3
    outcomes = fcm_provider.send_batch([data(t) for t in tokens])
    expected = {
        "ok": PushResult.SENT,
        "unreg": PushResult.TOKEN_INVALID,
        "internal": PushResult.RETRY,
        "mismatch": PushResult.TOKEN_INVALID,
    }
    assert [o.result for o in outcomes] == [expected[t.split("-")[0]] for t in tokens]


def test_quota_is_retry_with_retry_after_and_no_sleep(
    fake_fcm_factory: Callable[..., FakeFcm],
    push_credentials: PushCredentials,
    provider_for: Callable[..., FcmProvider],
    tmp_path: Path,
) -> None:
    # pyfcm's send_request would time.sleep(30) here and try again (push-libraries.md §2).
    fake = fake_fcm_factory(retry_after="30")
    provider = provider_for(fcm_settings_for(fake, push_credentials, tmp_path))
    started = time.monotonic()
    [outcome] = provider.send_batch([data("quota-1")])
    assert time.monotonic() - started < 10
    assert (outcome.result, outcome.retry_after) == (PushResult.RETRY, 30.0)
    assert fake.hits["quota-1"] == 1


def test_retry_after_as_http_date(
    fake_fcm_factory: Callable[..., FakeFcm],
    push_credentials: PushCredentials,
    provider_for: Callable[..., FcmProvider],
    tmp_path: Path,
) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    fake = fake_fcm_factory(retry_after=email.utils.format_datetime(when, usegmt=True))
    provider = provider_for(fcm_settings_for(fake, push_credentials, tmp_path))
    [outcome] = provider.send_batch([data("quota-1")])
    assert outcome.result is PushResult.RETRY
    assert outcome.retry_after is not None
    assert 60 < outcome.retry_after <= 120


def test_503_is_not_retried_by_urllib3(fcm_provider: FcmProvider, fake_fcm: FakeFcm) -> None:
    started = time.monotonic()
    outcomes = fcm_provider.send_batch([data("flaky-1")])
    assert outcomes[0].result is PushResult.RETRY
    assert fake_fcm.hits["flaky-1"] == 1
    assert time.monotonic() - started < 5  # urllib3's default backoff would take 6 s+


def test_slow_answer_is_retry_timeout(
    fake_fcm_factory: Callable[..., FakeFcm],
    push_credentials: PushCredentials,
    provider_for: Callable[..., FcmProvider],
    tmp_path: Path,
) -> None:
    fake = fake_fcm_factory(slow_delay=3.0)
    settings = fcm_settings_for(fake, push_credentials, tmp_path, timeout_seconds=0.5)
    provider = provider_for(settings)
    started = time.monotonic()
    outcomes = provider.send_batch([data("slow-1"), data("ok-1")])
    assert [(o.result, o.reason) for o in outcomes] == [
        (PushResult.RETRY, "timeout"),
        (PushResult.SENT, ""),
    ]
    assert time.monotonic() - started < 3


def test_each_answer_is_reported_as_it_arrives_not_when_the_batch_ends(
    fake_fcm_factory: Callable[..., FakeFcm],
    push_credentials: PushCredentials,
    provider_for: Callable[..., FcmProvider],
    tmp_path: Path,
) -> None:
    fake = fake_fcm_factory(slow_delay=1.5)
    provider = provider_for(fcm_settings_for(fake, push_credentials, tmp_path, timeout_seconds=5))
    started = time.monotonic()
    reported: list[tuple[int, PushResult, float]] = []
    outcomes = provider.send_batch(
        [data("slow-2"), data("ok-2")],
        lambda i, o: reported.append((i, o.result, time.monotonic() - started)),
    )
    finished = time.monotonic() - started
    assert [(i, r) for i, r, _ in reported] == [(1, PushResult.SENT), (0, PushResult.SENT)]
    assert reported[0][2] < 1.0 <= finished  # the quick answer did not wait for the slow one
    assert [o.result for o in outcomes] == [PushResult.SENT, PushResult.SENT]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_retry(
    fake_fcm: FakeFcm,
    push_credentials: PushCredentials,
    provider_for: Callable[..., FcmProvider],
    tmp_path: Path,
) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}/v1/projects"
    provider = provider_for(
        fcm_settings_for(fake_fcm, push_credentials, tmp_path, endpoint=endpoint)
    )
    [outcome] = provider.send_batch([data("ok-1")])
    assert (outcome.result, outcome.reason) == (PushResult.RETRY, "connection")


def test_token_endpoint_down_is_retry(
    push_credentials: PushCredentials,
    fake_fcm: FakeFcm,
    provider_for: Callable[..., FcmProvider],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    account = push_credentials.write_service_account(
        tmp_path / "down.json", token_uri=f"http://127.0.0.1:{_closed_port()}/token"
    )
    settings = FcmSettings(
        service_account_file=account, endpoint=fake_fcm.endpoint, timeout_seconds=1.0
    )
    [outcome] = provider_for(settings).send_batch([data("ok-1")])
    assert (outcome.result, outcome.reason) == (PushResult.RETRY, "auth-unavailable")
    assert fake_fcm.received == []
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_401_refreshes_the_token_once_and_resends(
    fcm_provider: FcmProvider, fake_fcm: FakeFcm
) -> None:
    assert fcm_provider.send_batch([data("ok-1")])[0].result is PushResult.SENT
    fake_fcm.revoke("fake-at-1")
    [outcome] = fcm_provider.send_batch([data("ok-2")])
    assert outcome.result is PushResult.SENT
    assert len(fake_fcm.token_requests) == 2
    assert [r["authorization"] for r in fake_fcm.received] == [
        "Bearer fake-at-1",
        "Bearer fake-at-2",
    ]


def test_401_twice_is_failed_and_logged(
    fake_fcm_factory: Callable[..., FakeFcm],
    push_credentials: PushCredentials,
    provider_for: Callable[..., FcmProvider],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_fcm_factory(reject_auth=True)
    provider = provider_for(fcm_settings_for(fake, push_credentials, tmp_path))
    [outcome] = provider.send_batch([data("ok-1")])
    assert (outcome.result, outcome.reason, outcome.status_code) == (
        PushResult.FAILED,
        "UNAUTHENTICATED",
        401,
    )
    assert len(fake.token_requests) == 2  # one forced refresh, not a loop
    assert any(
        r.levelno == logging.ERROR and "credentials" in r.getMessage() for r in caplog.records
    )


def test_threads_share_one_access_token(fcm_provider: FcmProvider, fake_fcm: FakeFcm) -> None:
    outcomes = fcm_provider.send_batch([data(f"ok-{i}") for i in range(40)])
    assert [o.result for o in outcomes] == [PushResult.SENT] * 40
    assert len(fake_fcm.token_requests) == 1  # stock pyfcm: one per pool thread


def test_injected_credentials(fake_fcm: FakeFcm, provider_for: Callable[..., FcmProvider]) -> None:
    credentials = StaticCredentials(token="fake-at-static")
    provider = provider_for(FcmSettings(endpoint=fake_fcm.endpoint), credentials)
    [outcome] = provider.send_batch([data("ok-1")])
    assert outcome.result is PushResult.SENT
    assert fake_fcm.received[0]["project"] == "static-project"
    assert fake_fcm.received[0]["authorization"] == "Bearer fake-at-static"
    assert fake_fcm.token_requests == []


def test_not_configured() -> None:
    with pytest.raises(ValueError, match="not configured"):
        FcmProvider(FcmSettings())


def test_rejected_before_sending(fcm_provider: FcmProvider, fake_fcm: FakeFcm) -> None:
    outcomes = fcm_provider.send_batch(
        [
            data("ok-1", payload={"from": "x"}),
            data("ok-2", payload={"google.x": "y"}),
            data("ok-3", payload={"obj": object()}),
            data("ok-4", payload={}),
            data(""),
            PushMessage(Platform.FCM, PushKind.VOIP, "ok-5", {"a": "b"}),
        ]
    )
    assert [(o.result, o.reason) for o in outcomes] == [
        (PushResult.FAILED, "InvalidDataPayload"),
        (PushResult.FAILED, "InvalidDataPayload"),
        (PushResult.FAILED, "InvalidDataPayload"),
        (PushResult.FAILED, "EmptyDataPayload"),
        (PushResult.TOKEN_INVALID, "EmptyToken"),
        (PushResult.FAILED, "UnsupportedKind:voip"),
    ]
    assert fake_fcm.received == []
    assert fcm_provider.send_batch([]) == []


def test_string_data() -> None:
    assert string_data({"a": "x", "b": 1, "c": 1.5, "d": False, "e": {"k": [1]}, "f": None}) == {
        "a": "x",
        "b": "1",
        "c": "1.5",
        "d": "false",
        "e": '{"k":[1]}',
    }
    with pytest.raises(ValueError, match="reserved"):
        string_data({"message_type": "x"})


def test_tokens_never_logged_whole(
    fcm_provider: FcmProvider, fake_fcm: FakeFcm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    prefixes = ["ok", "unreg", "invalid", "mismatch", "badpayload", "internal", "flaky", "quota"]
    tokens = [f"{prefix}-{'x' * 40}-{i:04d}" for i, prefix in enumerate(prefixes)]
    fcm_provider.send_batch([data(t) for t in tokens])
    assert caplog.records
    for t in tokens:
        assert t not in caplog.text
        assert t[8:] not in caplog.text
    assert "fake-at-1" not in caplog.text  # nor the access token


def _send_in_child(provider: FcmProvider, queue: multiprocessing.Queue) -> None:
    outcome = provider.send_batch([data("ok-child")])[0]
    queue.put(outcome.result.value)


def test_provider_works_in_a_forked_child(fcm_provider: FcmProvider, fake_fcm: FakeFcm) -> None:
    assert fcm_provider.send_batch([data("ok-parent")])[0].result is PushResult.SENT
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_send_in_child, args=(fcm_provider, queue))
    child.start()
    assert queue.get(timeout=30) == "sent"
    child.join(30)
    assert child.exitcode == 0
    assert fcm_provider.send_batch([data("ok-parent-2")])[0].result is PushResult.SENT


def test_close_is_idempotent_and_reopens(fcm_settings: FcmSettings, fake_fcm: FakeFcm) -> None:
    provider = FcmProvider(fcm_settings)
    provider.close()
    provider.close()
    assert provider.send_batch([data("ok-1")])[0].result is PushResult.SENT
    provider.close()


# --- rings: never sent twice (PushMessage.at_most_once) ----------------------------------------


def ring(device_token: str) -> PushMessage:
    return data(device_token, at_most_once=True)


def test_a_ring_whose_answer_times_out_is_unconfirmed(
    fake_fcm_factory: Callable[..., FakeFcm],
    push_credentials: PushCredentials,
    provider_for: Callable[..., FcmProvider],
    tmp_path: Path,
) -> None:
    fake = fake_fcm_factory(slow_delay=2.0)
    settings = fcm_settings_for(fake, push_credentials, tmp_path, timeout_seconds=0.5)
    outcomes = provider_for(settings).send_batch([ring("slow-1"), ring("ok-1")])
    assert [(o.result, o.reason) for o in outcomes] == [
        (PushResult.UNCONFIRMED, "timeout"),
        (PushResult.SENT, ""),
    ]
    assert fake.hits["slow-1"] == 1


@pytest.mark.parametrize(
    ("message", "expected"),
    [(ring, PushResult.UNCONFIRMED), (data, PushResult.RETRY)],
    ids=["ring", "other"],
)
def test_a_connection_closed_after_the_request_was_read(
    fcm_provider: FcmProvider,
    fake_fcm: FakeFcm,
    message: Callable[[str], PushMessage],
    expected: PushResult,
) -> None:
    [outcome] = fcm_provider.send_batch([message("drop-1")])
    assert (outcome.result, outcome.reason) == (expected, "connection-lost")
    assert fake_fcm.hits["drop-1"] == 1
    assert fcm_provider.send_batch([ring("ok-1")])[0].result is PushResult.SENT


def test_a_ring_that_could_not_connect_is_retry(
    fake_fcm: FakeFcm,
    push_credentials: PushCredentials,
    provider_for: Callable[..., FcmProvider],
    tmp_path: Path,
) -> None:
    """Connection refused: nothing was sent, so a ring may be sent again."""
    endpoint = f"http://127.0.0.1:{_closed_port()}/v1/projects"
    provider = provider_for(
        fcm_settings_for(fake_fcm, push_credentials, tmp_path, endpoint=endpoint)
    )
    [outcome] = provider.send_batch([ring("ok-1")])
    assert (outcome.result, outcome.reason) == (PushResult.RETRY, "connection")


def test_503_with_retry_after_then_200(
    fake_fcm_factory: Callable[..., FakeFcm],
    push_credentials: PushCredentials,
    provider_for: Callable[..., FcmProvider],
    tmp_path: Path,
) -> None:
    fake = fake_fcm_factory(retry_after="2", busy_failures=2)
    provider = provider_for(fcm_settings_for(fake, push_credentials, tmp_path))
    answers = [provider.send_batch([ring("busy-1")])[0] for _ in range(3)]
    assert [(o.result, o.status_code, o.retry_after) for o in answers] == [
        (PushResult.RETRY, 503, 2.0),
        (PushResult.RETRY, 503, 2.0),
        (PushResult.SENT, 200, None),
    ]


def test_which_failures_mean_the_request_was_never_sent() -> None:
    """The exceptions requests raises (with max_retries=0) for each way a POST can fail."""
    url = "https://fcm.googleapis.com/v1/projects/p/messages:send"
    refused = NewConnectionError(None, "Connection refused")
    dns = NameResolutionError("fcm.googleapis.com", None, OSError("no such host"))
    connect_timeout = ConnectTimeoutError(None, "timed out")
    assert request_not_sent(requests.ConnectionError(MaxRetryError(None, url, refused)))
    assert request_not_sent(requests.ConnectionError(MaxRetryError(None, url, dns)))
    assert request_not_sent(requests.ConnectTimeout(MaxRetryError(None, url, connect_timeout)))
    dropped = ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    assert not request_not_sent(requests.ConnectionError(dropped))
    assert not request_not_sent(requests.ReadTimeout(ReadTimeoutError(None, url, "read")))
    assert not request_not_sent(requests.exceptions.ChunkedEncodingError("truncated"))
