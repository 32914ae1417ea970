"""worker.stream.api against the fake Stream REST API over real HTTP."""

from __future__ import annotations

import inspect
import logging
import socket
import time

import jwt
import pytest
from pydantic import SecretStr

from tests.fakes.fake_stream_api import (
    CALL_TYPE,
    CALL_TYPES,
    DEVICES,
    MEMBERS,
    FakeStreamApi,
    device,
    member,
    notification_settings,
)
from tests.fakes.stream_api_plugin import STREAM_API_KEY, STREAM_API_SECRET, stream_app_for
from worker.foundation.settings import StreamAppSettings
from worker.stream.api import (
    CallMember,
    EventPushSettings,
    StreamApi,
    StreamApiError,
    StreamDevice,
    _call_type_push_settings,
)


def test_pages_through_ten_thousand_members_a_page_at_a_time(
    fake_stream_api: FakeStreamApi, stream_api: StreamApi
) -> None:
    fake_stream_api.set_members("default:big", [f"user-{i:05d}" for i in range(10_000)])

    pages = stream_api.iter_call_member_pages("default", "big")
    # A generator: nothing is asked before the first page is taken, one request per page.
    is_generator = inspect.isgenerator(pages)  # (kept out of assert: mypy would narrow it)
    assert is_generator
    assert fake_stream_api.calls.get(MEMBERS, 0) == 0
    first = next(pages)
    assert len(first) == 100
    assert fake_stream_api.calls[MEMBERS] == 1

    seen = {m.user_id for m in first}
    page_count = 1
    for page in pages:
        assert 0 < len(page) <= 100
        seen.update(m.user_id for m in page)
        page_count += 1
        assert fake_stream_api.calls[MEMBERS] == page_count

    assert page_count == 100
    assert len(seen) == 10_000
    assert fake_stream_api.calls[MEMBERS] == 100
    bodies = [r.json for r in fake_stream_api.requests_to(MEMBERS)]
    assert bodies[0] == {"type": "default", "id": "big", "limit": 100}
    assert all(b["limit"] == 100 and b["next"] for b in bodies[1:])
    assert len({b["next"] for b in bodies[1:]}) == 99


def test_member_fields_and_small_pages(
    fake_stream_api: FakeStreamApi, stream_api: StreamApi
) -> None:
    fake_stream_api.set_members(
        "livestream:x",
        [
            member("alice", "Alice A.", role="host"),
            {"user_id": "bob", "user": {"id": "bob"}, "role": "call_member"},
            {"user": {"id": "carol", "name": "  "}},
            {"role": "no user id"},
        ],
    )
    pages = list(stream_api.iter_call_member_pages("livestream", "x", page_size=2))
    assert pages == [
        [CallMember("alice", "Alice A.", "host"), CallMember("bob", "bob", "call_member")],
        [CallMember("carol", "carol", "")],
    ]
    assert fake_stream_api.calls[MEMBERS] == 2


def test_a_call_without_members_yields_no_page(
    fake_stream_api: FakeStreamApi, stream_api: StreamApi
) -> None:
    assert list(stream_api.iter_call_member_pages("default", "empty")) == []
    assert fake_stream_api.calls[MEMBERS] == 1


def test_page_size_is_bounded_by_streams_limit(stream_api: StreamApi) -> None:
    for size in (0, 101):
        with pytest.raises(ValueError, match="page_size"):
            next(stream_api.iter_call_member_pages("default", "x", page_size=size))


def test_a_repeated_cursor_stops_the_paging(
    fake_stream_api: FakeStreamApi, stream_api: StreamApi
) -> None:
    fake_stream_api.set_members("default:loop", ["a", "b", "c"])
    fake_stream_api.repeat_cursor = True
    pages = stream_api.iter_call_member_pages("default", "loop", page_size=1)
    with pytest.raises(StreamApiError, match="repeated a next cursor") as caught:
        for _ in pages:
            pass
    assert caught.value.retryable is False
    assert fake_stream_api.calls[MEMBERS] == 2


def test_server_auth_headers_are_exactly_streams(
    fake_stream_api: FakeStreamApi, stream_api: StreamApi
) -> None:
    fake_stream_api.set_devices("alice", [])
    stream_api.list_devices("alice")
    list(stream_api.iter_call_member_pages("default", "x"))

    for recorded in fake_stream_api.requests:
        headers = {k.lower(): v for k, v in recorded.headers.items()}
        token = headers["authorization"]
        assert not token.lower().startswith("bearer")
        assert token == stream_api.server_token()
        assert headers["stream-auth-type"] == "jwt"
        assert recorded.query["api_key"] == STREAM_API_KEY
        assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
        # {"server": true}, no iat/exp (push-libraries.md §4).
        claims = jwt.decode(token, STREAM_API_SECRET, algorithms=["HS256"])
        assert claims == {"server": True}
    assert fake_stream_api.requests_to(DEVICES)[0].query == {
        "api_key": STREAM_API_KEY,
        "user_id": "alice",
    }


def test_the_server_token_is_made_once(stream_api: StreamApi) -> None:
    assert stream_api.server_token() is stream_api.server_token()


def test_the_first_secret_signs(fake_stream_api: FakeStreamApi) -> None:
    app = StreamAppSettings(
        api_key=STREAM_API_KEY,
        api_secrets=[
            SecretStr(STREAM_API_SECRET),
            SecretStr("an-older-secret-still-accepted-0123"),
        ],
        base_url=fake_stream_api.url,
    )
    api = StreamApi(app, timeout=2)
    try:
        assert api.list_devices("nobody") == []
    finally:
        api.close()


def test_a_wrong_secret_is_refused_and_not_retryable(
    fake_stream_api: FakeStreamApi, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-secret-wrong-secret-wrong-secret"
    app = StreamAppSettings(
        api_key=STREAM_API_KEY, api_secrets=[SecretStr(wrong)], base_url=fake_stream_api.url
    )
    api = StreamApi(app, timeout=2)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(StreamApiError) as caught:
            api.list_devices("alice")
        token = api.server_token()
    finally:
        api.close()
    error = caught.value
    assert (error.status, error.retryable) == (401, False)
    assert "invalid token" in error.message
    # Neither the secret nor the token may leak into the error or the logs.
    for text in (str(error), caplog.text):
        assert wrong not in text
        assert token not in text


def test_server_errors_and_429_are_retryable_with_retry_after(
    fake_stream_api: FakeStreamApi, stream_api: StreamApi
) -> None:
    fake_stream_api.fail_next(1, 500)
    with pytest.raises(StreamApiError) as caught:
        stream_api.list_devices("alice")
    assert (caught.value.status, caught.value.retryable) == (500, True)
    assert caught.value.retry_after is None

    fake_stream_api.fail_next(1, 429, retry_after="7")
    with pytest.raises(StreamApiError) as caught:
        next(stream_api.iter_call_member_pages("default", "x"))
    assert (caught.value.status, caught.value.retryable) == (429, True)
    assert caught.value.retry_after == 7.0

    fake_stream_api.fail_next(1, 503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    with pytest.raises(StreamApiError) as caught:
        stream_api.list_devices("alice")
    assert caught.value.retryable is True
    assert caught.value.retry_after == 0.0  # a date in the past: retry now

    # The failures were used up: the next request succeeds.
    assert stream_api.list_devices("alice") == []


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_errors_are_not_retryable(
    fake_stream_api: FakeStreamApi, stream_api: StreamApi, status: int
) -> None:
    fake_stream_api.fail_next(1, status)
    with pytest.raises(StreamApiError) as caught:
        stream_api.list_devices("alice")
    assert (caught.value.status, caught.value.retryable) == (status, False)
    assert "injected failure" in caught.value.message


def test_a_timeout_is_retryable(fake_stream_api: FakeStreamApi) -> None:
    fake_stream_api.delay = 2.0
    api = StreamApi(stream_app_for(fake_stream_api), timeout=0.2)
    started = time.monotonic()
    try:
        with pytest.raises(StreamApiError) as caught:
            api.list_devices("alice")
    finally:
        api.close()
    assert time.monotonic() - started < 1.5
    assert (caught.value.status, caught.value.retryable) == (None, True)
    assert "timed out after 0.2 s" in caught.value.message


def test_a_refused_connection_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = StreamAppSettings(
        api_key=STREAM_API_KEY,
        api_secrets=[SecretStr(STREAM_API_SECRET)],
        base_url=f"http://127.0.0.1:{port}",
    )
    api = StreamApi(app, timeout=1)
    try:
        with pytest.raises(StreamApiError) as caught:
            api.list_devices("alice")
    finally:
        api.close()
    assert (caught.value.status, caught.value.retryable) == (None, True)


def test_list_devices_reads_every_field(
    fake_stream_api: FakeStreamApi, stream_api: StreamApi
) -> None:
    fake_stream_api.set_devices(
        "alice",
        [
            device("voip-1", "apn", voip=True, hardware_id="hw-1", push_provider_name="ios-voip"),
            device("fcm-1", "firebase", hardware_id="hw-1"),
            device("old-1", "apn", disabled=True),
            device("hms-1", "huawei"),
            {"push_provider": "apn"},  # no id: not a device
        ],
    )
    assert stream_api.list_devices("alice") == [
        StreamDevice("voip-1", "apn", True, False, "hw-1", "ios-voip"),
        StreamDevice("fcm-1", "firebase", False, False, "hw-1"),
        StreamDevice("old-1", "apn", False, True, None),
        StreamDevice("hms-1", "huawei", False, False, None),
    ]


# --------------------------------------------------------------------------------------------
# Call types' push settings


def test_lists_every_call_types_push_settings(
    fake_stream_api: FakeStreamApi, stream_api: StreamApi
) -> None:
    fake_stream_api.set_call_type(
        "default",
        notification_settings(
            enabled=False,
            off=["call_missed", "session_started"],
            templates={"call_ring": ("{{ user.display_name }} rings", "")},
        ),
    )
    fake_stream_api.set_call_type("livestream", notification_settings())

    found = stream_api.list_call_type_push_settings()

    assert sorted(found) == ["default", "livestream"]
    default = found["default"]
    assert default.name == "default" and default.enabled is False
    # Stream's keys, mapped to the event types they are for.
    assert set(default.events) == {
        "call.ring",
        "call.notification",
        "call.missed",
        "call.live_started",
        "call.session_started",
    }
    assert default.events["call.ring"] == EventPushSettings(
        True, "{{ user.display_name }} rings", ""
    )
    assert default.events["call.missed"].enabled is False
    assert default.events["call.session_started"].enabled is False
    assert default.events["call.live_started"].enabled is True
    assert found["livestream"].enabled is True
    (request,) = fake_stream_api.requests_to(CALL_TYPES)
    assert request.method == "GET" and request.path == "/api/v2/video/calltypes"
    assert request.query["api_key"] == STREAM_API_KEY
    assert request.headers["Stream-Auth-Type"] == "jwt"


def test_reads_one_call_type_and_says_404_for_one_stream_lacks(
    fake_stream_api: FakeStreamApi, stream_api: StreamApi
) -> None:
    fake_stream_api.set_call_type("audio room", notification_settings(off=["call_ring"]))

    found = stream_api.call_type_push_settings("audio room")
    assert found.name == "audio room"
    assert found.events["call.ring"].enabled is False
    # The name is one path segment, escaped.
    assert fake_stream_api.requests_to(CALL_TYPE)[0].path == "/api/v2/video/calltypes/audio room"

    with pytest.raises(StreamApiError) as raised:
        stream_api.call_type_push_settings("nope")
    assert raised.value.status == 404 and not raised.value.retryable
    with pytest.raises(StreamApiError) as raised:
        stream_api.call_type_push_settings("a/b")
    assert raised.value.status == 404


def test_only_an_explicit_false_switches_an_event_off(stream_api: StreamApi) -> None:
    # What Stream might send that does not say "off": missing entries, junk, non-booleans.
    odd = {
        "notification_settings": {
            "enabled": "no",
            "call_ring": {"enabled": None, "apns": {"title": 5, "body": ["x"]}},
            "call_missed": "junk",
            "call_notification": {"apns": "junk"},
            "session_started": {"enabled": False},
        }
    }
    parsed = _call_type_push_settings("odd", odd)
    assert parsed.enabled is True
    assert parsed.events["call.ring"] == EventPushSettings(True, "", "")
    assert "call.missed" not in parsed.events
    assert parsed.events["call.notification"] == EventPushSettings(True, "", "")
    assert parsed.events["call.session_started"].enabled is False
    assert _call_type_push_settings("bare", {}).events == {}


def test_a_list_answer_without_call_types_is_an_error(
    fake_stream_api: FakeStreamApi, stream_api: StreamApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_stream_api, "_list_call_types", lambda: {"duration": "1ms"})
    with pytest.raises(StreamApiError, match="no call_types"):
        stream_api.list_call_type_push_settings()
