"""Rotating a Stream app's API secret (README: "Rotating the API secret"), with the fake Stream
API over real HTTP holding one secret at a time, as Stream does:

- before Stream's switch: callpush lists the new secret as current, Stream still holds the old
  one: QueryCallMembers still works (401 with the new, retried with the old, which is kept);
- after the switch: the old one gets 401, the new one is tried and kept;
- webhooks and device-API tokens signed with either secret are accepted while both are listed,
  and the old one stops working once it is removed;
- the settings: ``api_secret`` + ``previous_api_secrets``, the older ``api_secrets`` list and the
  comma form of ``CALLPUSH_STREAM_API_SECRET``.
"""

from __future__ import annotations

import json
import logging
import time

import jwt
import pytest
from pydantic import SecretStr, ValidationError

from tests.fakes.fake_stream_api import MEMBERS, FakeStreamApi
from tests.worker.recording_handoff import RecordingHandoff
from tests.worker.scripted_provider import ScriptedProvider
from webhook_app import create_app
from worker.delivery.event_processing import process_event
from worker.delivery.notifications import deliver_chunk
from worker.delivery.services import Services
from worker.delivery.templates import TemplateBook
from worker.foundation.settings import StreamAppSettings, load_settings
from worker.push.base import Platform
from worker.push.sender import PushSender
from worker.runtime.celery_app import create_celery
from worker.storage import devices
from worker.storage.database import Database
from worker.storage.inbox import NewWebhook, store_webhook
from worker.storage.migrations import upgrade_to_head
from worker.stream import samples as sample_events
from worker.stream.api import StreamApi, StreamApiError
from worker.stream.events import parse_call_event
from worker.stream.user_tokens import TokenRejected, verify_token

OLD = "old-stream-secret-0123456789abcdef0123456789"
NEW = "new-stream-secret-0123456789abcdef0123456789"


def secret_of(token: str) -> str:
    for secret in (OLD, NEW):
        try:
            jwt.decode(token, secret, algorithms=["HS256"])
        except jwt.InvalidSignatureError:
            continue
        return secret
    raise AssertionError("signed by neither secret")


def signed_with(fake: FakeStreamApi) -> list[str]:
    """Which secret signed each request the fake received, in order."""
    return [secret_of(r.headers["Authorization"]) for r in fake.requests_to(MEMBERS)]


def app_for(fake: FakeStreamApi, **secrets) -> StreamAppSettings:  # type: ignore[no-untyped-def]
    return StreamAppSettings(api_key=fake.api_key, base_url=fake.url, **secrets)


def members(api: StreamApi, cid: str = "default:c1") -> list[str]:
    call_type, call_id = cid.split(":")
    return [m.user_id for page in api.iter_call_member_pages(call_type, call_id) for m in page]


def test_before_and_after_streams_switch_query_call_members_keeps_working(
    fake_stream_api: FakeStreamApi, caplog: pytest.LogCaptureFixture
):
    fake_stream_api.secret = OLD  # Stream still holds the old secret
    fake_stream_api.set_members("default:c1", ["alice", "bob"])
    api = StreamApi(app_for(fake_stream_api, api_secret=NEW, previous_api_secrets=[OLD]), 2.0)
    caplog.set_level(logging.DEBUG, logger="callpush.stream_api")
    try:
        assert members(api) == ["alice", "bob"]
        assert signed_with(fake_stream_api) == [NEW, OLD]  # refused, retried, accepted
        assert members(api) == ["alice", "bob"]
        assert signed_with(fake_stream_api)[2:] == [OLD]  # remembered: one request
        # The dashboard rotation: Stream holds the new secret from now on.
        fake_stream_api.secret = NEW
        assert members(api) == ["alice", "bob"]
        assert signed_with(fake_stream_api)[3:] == [OLD, NEW]
        assert members(api) == ["alice", "bob"]
        assert signed_with(fake_stream_api)[5:] == [NEW]
    finally:
        api.close()
    logged = caplog.text
    assert "refused the token of secret #0 and accepted secret #1" in logged
    assert "refused the token of secret #1 and accepted secret #0" in logged
    assert OLD not in logged and NEW not in logged


def test_a_401_with_no_other_secret_is_one_request_and_an_error(fake_stream_api: FakeStreamApi):
    fake_stream_api.secret = OLD
    api = StreamApi(app_for(fake_stream_api, api_secret=NEW), 2.0)
    try:
        with pytest.raises(StreamApiError) as raised:
            members(api)
    finally:
        api.close()
    assert raised.value.status == 401 and not raised.value.retryable
    assert signed_with(fake_stream_api) == [NEW]


def test_a_401_from_every_secret_tries_each_once(fake_stream_api: FakeStreamApi):
    fake_stream_api.secret = "a-third-secret-stream-holds-0123456789abcdef"
    api = StreamApi(app_for(fake_stream_api, api_secret=NEW, previous_api_secrets=[OLD]), 2.0)
    try:
        with pytest.raises(StreamApiError) as raised:
            members(api)
    finally:
        api.close()
    assert raised.value.status == 401
    assert len(fake_stream_api.requests_to(MEMBERS)) == 2


def test_a_fanout_reads_its_members_from_stream_mid_rotation(
    sqlite_url, fake_stream_api: FakeStreamApi, monkeypatch
):
    """call.session_started takes its recipients from QueryCallMembers: with the new secret
    configured as current and Stream still on the old one, the pushes still go out."""
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    fake_stream_api.secret = OLD
    upgrade_to_head(sqlite_url)
    settings = load_settings(
        database_url=sqlite_url,
        apps=[
            {
                "api_key": fake_stream_api.api_key,
                "api_secret": NEW,
                "previous_api_secrets": [OLD],
                "base_url": fake_stream_api.url,
            }
        ],
    )
    fcm = ScriptedProvider("fcm")
    queued: list[tuple[int, int]] = []
    services = Services(
        settings,
        Database(sqlite_url),
        PushSender({Platform.APNS: ScriptedProvider("apns"), Platform.FCM: fcm}),
        TemplateBook.from_settings(settings),
        handoff=RecordingHandoff(chunks=queued),
    )
    try:
        with services.db.transaction() as session:
            for user in ("alice", "bob", "carol"):
                devices.add_device(
                    session,
                    api_key=fake_stream_api.api_key,
                    user_id=user,
                    platform=Platform.FCM,
                    token=f"{user}-fcm",
                )
        event = sample_events.member_event(
            "call.session_started", None, [], created_by="alice", participants=[]
        )
        fake_stream_api.set_members(event["call_cid"], ["alice", "bob", "carol"])
        with services.db.transaction() as session:
            event_id = store_webhook(
                session,
                NewWebhook(
                    webhook_id=f"wh-{time.time_ns()}",
                    api_key=fake_stream_api.api_key,
                    event_type=event["type"],
                    body=json.dumps(event),
                    call_cid=parse_call_event(event).call_cid,
                ),
            ).event_id
        process_event(services, event_id)
        while queued:
            deliver_chunk(services, *queued.pop(0), 0)
    finally:
        services.close()
    assert sorted(fcm.tokens()) == ["bob-fcm", "carol-fcm"]
    assert signed_with(fake_stream_api)[:2] == [NEW, OLD]


@pytest.fixture
def receiver_for(sqlite_url, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    upgrade_to_head(sqlite_url)
    made: list[Database] = []

    def make(**secrets):  # type: ignore[no-untyped-def]
        settings = load_settings(database_url=sqlite_url, apps=[{"api_key": "k", **secrets}])
        db = Database(sqlite_url)
        made.append(db)
        return create_app(settings, db=db, celery=create_celery(settings)).test_client()

    yield make
    for db in made:
        db.dispose()


def post_signed(client, secret: str) -> int:  # type: ignore[no-untyped-def]
    event = sample_events.member_event("call.missed", "alice", ["bob"])
    body, headers = sample_events.signed_request(event, api_key="k", secret=secret)
    return int(client.post("/webhooks/stream", data=body, headers=headers).status_code)


def test_webhooks_signed_with_either_secret_are_accepted_until_the_old_one_is_removed(
    receiver_for,
):
    # Mid-rotation: both verify, whichever Stream signs with.
    rotating = receiver_for(api_secret=NEW, previous_api_secrets=[OLD])
    assert post_signed(rotating, OLD) == 202
    assert post_signed(rotating, NEW) == 202
    # The older spelling says the same thing.
    legacy = receiver_for(api_secrets=[NEW, OLD])
    assert post_signed(legacy, OLD) == 202
    # The old secret removed: refused.
    done = receiver_for(api_secret=NEW)
    assert post_signed(done, NEW) == 202
    assert post_signed(done, OLD) == 401


def test_device_api_tokens_signed_with_a_previous_secret_are_accepted_while_listed():
    old_token = jwt.encode({"user_id": "bob"}, OLD, algorithm="HS256")
    rotating = [StreamAppSettings(api_key="k", api_secret=NEW, previous_api_secrets=[OLD])]
    assert verify_token(old_token, rotating).user_id == "bob"
    with pytest.raises(TokenRejected):
        verify_token(old_token, [StreamAppSettings(api_key="k", api_secret=NEW)])


@pytest.mark.parametrize(
    ("given", "current", "previous"),
    [
        ({"api_secret": NEW, "previous_api_secrets": [OLD]}, NEW, [OLD]),
        ({"api_secret": NEW}, NEW, []),
        # The older list: the first is the current secret, the rest previous ones.
        ({"api_secrets": [NEW, OLD]}, NEW, [OLD]),
        ({"api_secrets": f"{NEW}, {OLD}"}, NEW, [OLD]),
        # Both spellings: api_secret wins, every other secret is a previous one, once.
        ({"api_secret": NEW, "api_secrets": [OLD, NEW]}, NEW, [OLD]),
        ({"api_secret": NEW, "previous_api_secrets": f"{OLD},{OLD}"}, NEW, [OLD]),
    ],
)
def test_current_and_previous_secrets(given, current, previous):
    app = StreamAppSettings(api_key="k", **given)
    assert app.signing_secret == current
    assert app.api_secret is not None and app.api_secret.get_secret_value() == current
    assert [s.get_secret_value() for s in app.previous_api_secrets] == previous
    assert [s.get_secret_value() for s in app.api_secrets] == [current, *previous]
    # Dumped and read back (config show, CALLPUSH_APPS): the same meaning.
    again = StreamAppSettings(**app.model_dump())
    assert [s.get_secret_value() for s in again.api_secrets] == [current, *previous]


def test_an_app_needs_a_secret():
    with pytest.raises(ValidationError, match="api_secret"):
        StreamAppSettings(api_key="k")
    with pytest.raises(ValidationError, match="api_secret"):
        StreamAppSettings(api_key="k", api_secrets=[], api_secret=SecretStr(""))


def test_the_environment_shortcut(monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    monkeypatch.setenv("CALLPUSH_STREAM_API_KEY", "k")
    monkeypatch.setenv("CALLPUSH_STREAM_API_SECRET", NEW)
    monkeypatch.setenv("CALLPUSH_STREAM_PREVIOUS_API_SECRETS", OLD)
    (app,) = load_settings().apps
    assert app.signing_secret == NEW
    assert [s.get_secret_value() for s in app.previous_api_secrets] == [OLD]
    # The older comma form: "current,previous".
    monkeypatch.delenv("CALLPUSH_STREAM_PREVIOUS_API_SECRETS")
    monkeypatch.setenv("CALLPUSH_STREAM_API_SECRET", f"{NEW},{OLD}")
    (app,) = load_settings().apps
    assert app.signing_secret == NEW
    assert [s.get_secret_value() for s in app.previous_api_secrets] == [OLD]
