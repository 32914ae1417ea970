"""ApnsProvider: real aioapns over TLS + HTTP/2 against the fake APNs (tests/fakes/fake_apns.py).

The repairs of aioapns's connection handling (P1-P5, what is resent) have their own tests in
test_aioapns_repairs.py; these are about the provider: requests, answers, outcomes, lifecycle."""

from __future__ import annotations

import logging
import multiprocessing
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest

from tests.fakes.credentials import PushCredentials, make_apns_key
from tests.fakes.fake_apns import FakeApns
from tests.fakes.pytest_plugin import APNS_BUNDLE_ID, apns_settings_for
from worker.foundation.settings import ApnsSettings
from worker.push.apns import ApnsProvider, apns_id_for, classify_result
from worker.push.base import Platform, PushKind, PushMessage, PushOutcome, PushResult

VOIP_TOPIC = f"{APNS_BUNDLE_ID}.voip"


def token(prefix: str, n: int = 0) -> str:
    """A 64-character token whose prefix picks the fake's behaviour."""
    return (f"{prefix}{n:08d}" + "f" * 64)[:64]


def voip(device_token: str, **fields: object) -> PushMessage:
    values: dict[str, object] = {"payload": {"aps": {}, "stream": {"call_cid": "default:c1"}}}
    values.update(fields)
    return PushMessage(Platform.APNS, PushKind.VOIP, device_token, **values)


@pytest.fixture
def provider_for() -> Iterator[Callable[[ApnsSettings], ApnsProvider]]:
    providers: list[ApnsProvider] = []

    def make(settings: ApnsSettings) -> ApnsProvider:
        providers.append(ApnsProvider(settings))
        return providers[-1]

    yield make
    for provider in providers:
        provider.close()


@pytest.fixture
def apns_provider(
    apns_settings: ApnsSettings, provider_for: Callable[[ApnsSettings], ApnsProvider]
) -> ApnsProvider:
    return provider_for(apns_settings)


def test_voip_push_headers_and_body(
    apns_provider: ApnsProvider, fake_apns: FakeApns, push_credentials: PushCredentials
) -> None:
    message_id = str(uuid.uuid4())
    device = token("ok")
    payload = {"aps": {}, "stream": {"call_cid": "default:c1", "type": "call.ring"}}
    [outcome] = apns_provider.send_batch(
        [
            voip(
                device,
                payload=payload,
                topic=VOIP_TOPIC,
                priority=10,
                time_to_live=30,
                collapse_id="call-c1",
                message_id=message_id,
            )
        ]
    )
    assert outcome.result is PushResult.SENT
    assert outcome.provider_message_id == message_id
    [request] = fake_apns.received
    headers = request["headers"]
    assert headers[":path"] == f"/3/device/{device}"
    assert headers["apns-push-type"] == "voip"
    assert headers["apns-topic"] == VOIP_TOPIC
    assert headers["apns-priority"] == "10"
    assert headers["apns-collapse-id"] == "call-c1"
    assert headers["apns-id"] == message_id
    assert abs(int(headers["apns-expiration"]) - (time.time() + 30)) < 10
    assert request["payload"] == payload
    scheme, bearer = headers["authorization"].split(" ", 1)
    assert scheme == "bearer"
    claims = jwt.decode(bearer, push_credentials.apns_public_key, algorithms=["ES256"])
    assert claims["iss"] == "TEAM123456"
    assert abs(claims["iat"] - time.time()) < 60
    assert jwt.get_unverified_header(bearer) == {"alg": "ES256", "kid": "ABC123DEFG", "typ": "JWT"}


def test_alert_push_headers(apns_provider: ApnsProvider, fake_apns: FakeApns) -> None:
    message = PushMessage(
        Platform.APNS,
        PushKind.ALERT,
        token("ok"),
        {"aps": {"alert": {"title": "Missed call"}}},
        topic=APNS_BUNDLE_ID,
        priority=5,
    )
    [outcome] = apns_provider.send_batch([message])
    assert outcome.result is PushResult.SENT
    headers = fake_apns.received[0]["headers"]
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-topic"] == APNS_BUNDLE_ID
    assert headers["apns-priority"] == "5"
    assert "apns-expiration" not in headers
    assert "apns-collapse-id" not in headers


def test_default_topics(apns_provider: ApnsProvider, fake_apns: FakeApns) -> None:
    alert = PushMessage(Platform.APNS, PushKind.ALERT, token("ok", 1), {"aps": {}})
    outcomes = apns_provider.send_batch([voip(token("ok", 0)), alert])
    assert [o.result for o in outcomes] == [PushResult.SENT, PushResult.SENT]
    topics = {r["token"]: r["headers"]["apns-topic"] for r in fake_apns.received}
    assert topics == {token("ok", 0): VOIP_TOPIC, token("ok", 1): APNS_BUNDLE_ID}


def test_apns_id_is_a_stable_uuid(apns_provider: ApnsProvider, fake_apns: FakeApns) -> None:
    derived = apns_id_for("event-1:device-2")
    assert derived == apns_id_for("event-1:device-2") != apns_id_for("event-1:device-3")
    assert uuid.UUID(derived).version == 5
    upper = str(uuid.uuid4()).upper()
    assert apns_id_for(upper) == upper.lower()

    outcomes = apns_provider.send_batch([voip(token("ok"), message_id="event-1:device-2")])
    assert outcomes[0].provider_message_id == derived
    assert fake_apns.received[0]["headers"]["apns-id"] == derived


def test_duplicate_message_ids_in_one_batch(
    apns_provider: ApnsProvider, fake_apns: FakeApns
) -> None:
    messages = [voip(token("ok", i), message_id="same") for i in range(3)]
    outcomes = apns_provider.send_batch(messages)
    assert [o.result for o in outcomes] == [PushResult.SENT] * 3
    assert len({r["headers"]["apns-id"] for r in fake_apns.received}) == 3


CLASSIFICATION = [
    ("ok", PushResult.SENT, "", 200),
    ("gone", PushResult.TOKEN_INVALID, "Unregistered", 410),
    ("bad", PushResult.TOKEN_INVALID, "BadDeviceToken", 400),
    ("notopic", PushResult.TOKEN_INVALID, "DeviceTokenNotForTopic", 400),
    ("throttle", PushResult.RETRY, "TooManyRequests", 429),
    ("fail5xx", PushResult.RETRY, "InternalServerError", 500),
    ("big", PushResult.FAILED, "PayloadTooLarge", 413),
]


def test_classification_in_one_batch_keeps_order(
    apns_provider: ApnsProvider, fake_apns: FakeApns
) -> None:
    rows = CLASSIFICATION * 2
    messages = [voip(token(prefix, i)) for i, (prefix, *_) in enumerate(rows)]
    outcomes = apns_provider.send_batch(messages)
    got = [(o.result, o.reason, o.status_code) for o in outcomes]
    assert got == [(result, reason, status) for _, result, reason, status in rows]
    assert fake_apns.count == len(rows)
    gone = outcomes[1]
    assert isinstance(gone.extra["timestamp"], int)
    assert abs(gone.extra["timestamp"] / 1000 - time.time()) < 60


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        ("200", None, PushResult.SENT),
        ("410", "ExpiredToken", PushResult.TOKEN_INVALID),
        ("400", "BadTopic", PushResult.FAILED),
        ("400", "TopicDisallowed", PushResult.FAILED),
        ("403", "InvalidProviderToken", PushResult.FAILED),
        ("403", "ExpiredProviderToken", PushResult.FAILED),
        ("429", "TooManyProviderTokenUpdates", PushResult.RETRY),
        ("503", "ServiceUnavailable", PushResult.RETRY),
        ("500", None, PushResult.RETRY),
        ("garbage", None, PushResult.RETRY),
    ],
)
def test_classify_result_table(status: str, reason: str | None, expected: PushResult) -> None:
    assert classify_result(status, reason, None).result is expected


def test_wrong_signing_key_is_failed_and_logged_without_key(
    fake_apns: FakeApns,
    push_credentials: PushCredentials,
    provider_for: Callable[[ApnsSettings], ApnsProvider],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    other_pem, _ = make_apns_key()
    key_file = tmp_path / "other.p8"
    key_file.write_text(other_pem)
    provider = provider_for(apns_settings_for(fake_apns, push_credentials, key_file=key_file))
    caplog.set_level(logging.DEBUG)
    [outcome] = provider.send_batch([voip(token("ok"))])
    assert (outcome.result, outcome.reason, outcome.status_code) == (
        PushResult.FAILED,
        "InvalidProviderToken",
        403,
    )
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("InvalidProviderToken" in r.getMessage() for r in errors)
    key_body = "".join(other_pem.splitlines()[1:-1])
    assert all(line not in caplog.text for line in other_pem.splitlines()[1:-1])
    assert key_body not in caplog.text


def test_bad_key_file_fails_at_construction(
    fake_apns: FakeApns, push_credentials: PushCredentials, tmp_path: Path
) -> None:
    not_a_key = tmp_path / "junk.p8"
    not_a_key.write_text("not a key")
    with pytest.raises(ValueError, match="not a PEM private key"):
        ApnsProvider(apns_settings_for(fake_apns, push_credentials, key_file=not_a_key))


def test_silent_token_times_out_while_others_complete(
    apns_provider: ApnsProvider, fake_apns: FakeApns, apns_settings: ApnsSettings
) -> None:
    messages = [voip(token("silent"))] + [voip(token("ok", i)) for i in range(5)]
    started = time.monotonic()
    outcomes = apns_provider.send_batch(messages)
    elapsed = time.monotonic() - started
    assert (outcomes[0].result, outcomes[0].reason) == (PushResult.RETRY, "timeout")
    assert [o.result for o in outcomes[1:]] == [PushResult.SENT] * 5
    assert fake_apns.connections == 1
    assert elapsed < apns_settings.timeout_seconds + 5
    # The same connection keeps working afterwards.
    assert apns_provider.send_batch([voip(token("ok", 9))])[0].result is PushResult.SENT
    assert fake_apns.connections == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_retry(
    fake_apns: FakeApns,
    push_credentials: PushCredentials,
    provider_for: Callable[[ApnsSettings], ApnsProvider],
) -> None:
    settings = apns_settings_for(
        fake_apns, push_credentials, host="127.0.0.1", port=_closed_port(), timeout_seconds=1.5
    )
    outcomes = provider_for(settings).send_batch([voip(token("ok")), voip(token("ok", 1))])
    assert [(o.result, o.reason) for o in outcomes] == [(PushResult.RETRY, "connection")] * 2


def test_untrusted_server_certificate_is_retry(
    fake_apns: FakeApns,
    push_credentials: PushCredentials,
    provider_for: Callable[[ApnsSettings], ApnsProvider],
) -> None:
    settings = apns_settings_for(fake_apns, push_credentials, ca_file=None, timeout_seconds=1.5)
    [outcome] = provider_for(settings).send_batch([voip(token("ok"))])
    assert (outcome.result, outcome.reason) == (PushResult.RETRY, "connection")
    assert fake_apns.count == 0


def test_rejected_before_sending(apns_provider: ApnsProvider, fake_apns: FakeApns) -> None:
    outcomes = apns_provider.send_batch(
        [
            voip("abc/def"),
            voip(""),
            PushMessage(Platform.APNS, PushKind.DATA, token("ok"), {"a": "b"}),
            voip(token("ok"), payload={"aps": {}, "bad": object()}),
        ]
    )
    assert [(o.result, o.reason) for o in outcomes] == [
        (PushResult.TOKEN_INVALID, "BadDeviceToken"),
        (PushResult.TOKEN_INVALID, "BadDeviceToken"),
        (PushResult.FAILED, "UnsupportedKind:data"),
        (PushResult.FAILED, "InvalidPayload"),
    ]
    assert fake_apns.count == 0
    assert apns_provider.send_batch([]) == []


def test_tokens_never_logged_whole(
    apns_provider: ApnsProvider, fake_apns: FakeApns, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    prefixes = ["ok", "gone", "bad", "notopic", "throttle", "fail5xx", "big", "silent"]
    tokens = [token(prefix, 4242) for prefix in prefixes]
    outcomes = apns_provider.send_batch([voip(t) for t in tokens])
    assert len(outcomes) == len(tokens)
    assert caplog.records  # something was logged
    for t in tokens:
        assert t not in caplog.text
        assert t[8:] not in caplog.text  # not even most of it
    # err_func replaces aioapns's own ERROR line for every non-200 answer.
    assert not [r for r in caplog.records if r.name == "aioapns" and r.levelno >= logging.ERROR]


def _send_in_child(provider: ApnsProvider, device: str, queue: multiprocessing.Queue) -> None:
    outcome = provider.send_batch([voip(device)])[0]
    queue.put((outcome.result.value, outcome.reason))


def test_provider_is_rebuilt_in_a_forked_child(
    apns_provider: ApnsProvider, fake_apns: FakeApns
) -> None:
    assert apns_provider.send_batch([voip(token("ok", 1))])[0].result is PushResult.SENT
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_send_in_child, args=(apns_provider, token("ok", 2), queue))
    child.start()
    result = queue.get(timeout=30)
    child.join(30)
    assert result == ("sent", "")
    assert child.exitcode == 0
    assert fake_apns.connections == 2  # the child opened its own connection
    # The parent's client is untouched by the child.
    assert apns_provider.send_batch([voip(token("ok", 3))])[0].result is PushResult.SENT
    assert fake_apns.connections == 2


def test_close_is_idempotent(apns_settings: ApnsSettings, fake_apns: FakeApns) -> None:
    provider = ApnsProvider(apns_settings)
    provider.close()  # never used
    assert provider.send_batch([voip(token("ok"))])[0].result is PushResult.SENT
    provider.close()
    provider.close()


def test_each_answer_is_reported_as_it_arrives_not_when_the_batch_ends(
    apns_provider: ApnsProvider, fake_apns: FakeApns
) -> None:
    quick, held = token("ok", 5), token("holdreport")
    reported: list[tuple[int, PushResult]] = []
    results: list[PushOutcome] = []
    sender = threading.Thread(
        target=lambda: results.extend(
            apns_provider.send_batch(
                [voip(quick), voip(held)], lambda i, o: reported.append((i, o.result))
            )
        )
    )
    sender.start()
    deadline = time.monotonic() + 5
    while not reported and time.monotonic() < deadline:
        time.sleep(0.01)
    # The quick push is reported while the held one is still waiting for its answer.
    assert reported == [(0, PushResult.SENT)]
    assert fake_apns.wait_for(2, timeout=10)
    assert fake_apns.release("holdreport") == 1
    sender.join(10)
    assert reported == [(0, PushResult.SENT), (1, PushResult.SENT)]
    assert [o.result for o in results] == [PushResult.SENT, PushResult.SENT]


# --- rings: never sent twice (PushMessage.at_most_once) ----------------------------------------


def ring(device_token: str) -> PushMessage:
    return voip(device_token, at_most_once=True)


def test_a_ring_whose_answer_times_out_is_unconfirmed_not_retry(
    apns_provider: ApnsProvider, fake_apns: FakeApns
) -> None:
    silent = token("silent")
    outcomes = apns_provider.send_batch([ring(silent), ring(token("ok"))])
    assert [(o.result, o.reason) for o in outcomes] == [
        (PushResult.UNCONFIRMED, "timeout"),
        (PushResult.SENT, ""),
    ]
    assert fake_apns.tokens().count(silent) == 1


@pytest.mark.parametrize("how", ["drop", "reset"])
def test_a_ring_whose_connection_or_stream_dies_after_writing_is_not_resent(
    fake_apns_factory: Callable[..., FakeApns],
    push_credentials: PushCredentials,
    provider_for: Callable[[ApnsSettings], ApnsProvider],
    how: str,
) -> None:
    fake = fake_apns_factory()
    provider = provider_for(apns_settings_for(fake, push_credentials))
    lost = token(how)
    [outcome] = provider.send_batch([ring(lost)])
    assert (outcome.result, outcome.reason) == (PushResult.UNCONFIRMED, "connection-lost")
    assert fake.hits[lost] == 1  # aioapns's pool did not send it again
    # The provider still works afterwards (on a new connection after a drop).
    assert provider.send_batch([ring(token("ok"))])[0].result is PushResult.SENT


def test_a_ring_that_could_not_connect_is_retry(
    fake_apns: FakeApns,
    push_credentials: PushCredentials,
    provider_for: Callable[[ApnsSettings], ApnsProvider],
) -> None:
    """Nothing was written: safe to send again."""
    settings = apns_settings_for(
        fake_apns, push_credentials, host="127.0.0.1", port=_closed_port(), timeout_seconds=1.5
    )
    [outcome] = provider_for(settings).send_batch([ring(token("ok"))])
    assert (outcome.result, outcome.reason) == (PushResult.RETRY, "connection")


def test_500s_then_200(apns_provider: ApnsProvider, fake_apns: FakeApns) -> None:
    flaky = token("flaky5xx")
    answers = [apns_provider.send_batch([ring(flaky)])[0] for _ in range(5)]
    assert [(o.result, o.status_code) for o in answers] == [(PushResult.RETRY, 500)] * 4 + [
        (PushResult.SENT, 200)
    ]
