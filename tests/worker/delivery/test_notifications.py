"""Non-ring events (worker.delivery.notifications) on a real database, with the provider seam
scripted and Stream's API served by the fake over real HTTP.  Chunks run inline here; the
end-to-end tests run them through Celery."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.fakes.fake_stream_api import MEMBERS
from tests.fakes.stream_api_plugin import stream_app_for
from tests.worker.recording_handoff import RecordingHandoff
from tests.worker.scripted_provider import ScriptedProvider
from worker.delivery.event_processing import process_event
from worker.delivery.notifications import deliver_chunk
from worker.delivery.services import Services
from worker.delivery.templates import TemplateBook
from worker.foundation.handoff import RetryLater
from worker.foundation.settings import ApnsProviderSettings, load_settings
from worker.intake.webhooks import stored_status
from worker.ops.replay import reopen_for_replay
from worker.push.base import Platform, ProviderRef, PushKind, PushOutcome, PushResult
from worker.push.providers import ProviderSet
from worker.push.sender import PushSender
from worker.storage import devices, preferences
from worker.storage.database import Database
from worker.storage.inbox import NewWebhook, store_webhook
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Delivery, Device, FanoutChunk, WebhookEvent, utcnow
from worker.stream import samples as sample_events
from worker.stream.events import parse_call_event

USERS = ["alice", "bob", "carol", "dave"]


def apns_token(user: str, voip: bool = False) -> str:
    return f"{user}-{'voip' if voip else 'apns'}".ljust(64, "0")


@pytest.fixture
def world(sqlite_url, fake_stream_api, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    upgrade_to_head(sqlite_url)
    app = stream_app_for(fake_stream_api)
    settings = load_settings(
        database_url=sqlite_url,
        apps=[app.model_dump() | {"api_secrets": [s.get_secret_value() for s in app.api_secrets]}],
        apns={"bundle_id": "com.example.app"},
        fanout={"chunk_size": 2, "max_retries": 2},
        call_types={"audio_room": {"disabled_events": ["call.session_started"]}},
    )
    apns, fcm = ScriptedProvider("apns"), ScriptedProvider("fcm")
    queued: list[tuple[int, int]] = []
    services = Services(
        settings,
        Database(sqlite_url),
        PushSender({Platform.APNS: apns, Platform.FCM: fcm}),
        TemplateBook.from_settings(settings),
        handoff=RecordingHandoff(chunks=queued),
    )
    app = services.settings.apps[0].api_key
    with services.db.transaction() as session:
        for user in USERS:
            devices.add_device(
                session, api_key=app, user_id=user, platform=Platform.APNS, token=apns_token(user)
            )
            devices.add_device(
                session,
                api_key=app,
                user_id=user,
                platform=Platform.APNS,
                token=apns_token(user, True),
                voip=True,
            )
            devices.add_device(
                session, api_key=app, user_id=user, platform=Platform.FCM, token=f"{user}-fcm"
            )
    yield services, apns, fcm, queued, fake_stream_api
    services.close()


def store(services, event: dict) -> int:
    parsed = parse_call_event(event)
    status, reason = stored_status(event["type"])
    with services.db.transaction() as session:
        return store_webhook(
            session,
            NewWebhook(
                webhook_id=f"wh-{time.time_ns()}",
                api_key=services.settings.apps[0].api_key,
                event_type=event["type"],
                body=json.dumps(event),
                call_cid=parsed.call_cid,
                status=status,
                status_reason=reason,
            ),
        ).event_id


def run_all_chunks(services, queued, attempt=0):
    while queued:
        event_id, index = queued.pop(0)
        deliver_chunk(services, event_id, index, attempt)


def event_row(services, event_id) -> WebhookEvent:
    with services.db.transaction() as session:
        return session.get(WebhookEvent, event_id)


def test_call_notification_goes_to_members_minus_the_sender(world):
    services, apns, fcm, queued, _fake = world
    event = sample_events.member_event("call.notification", "alice", ["alice", "bob", "carol"])
    event_id = store(services, event)
    assert process_event(services, event_id) == "processing"
    assert len(queued) == 1  # two recipients, chunk size 2
    run_all_chunks(services, queued)
    # Plain APNs tokens get alerts, VoIP tokens nothing (Apple: VoIP only for calls).
    assert sorted(apns.tokens()) == [apns_token("bob"), apns_token("carol")]
    assert sorted(fcm.tokens()) == ["bob-fcm", "carol-fcm"]
    alert = apns.sent[0]
    assert alert.kind is PushKind.ALERT and alert.topic == "com.example.app"
    assert alert.payload["aps"]["alert"]["title"] == "Alice invites you to a call"
    assert alert.payload["stream"]["type"] == "call.notification"
    assert "video" not in alert.payload["stream"]
    data = fcm.sent[0].payload
    assert data["sender"] == "stream.video" and data["type"] == "call.notification"
    assert data["title"] == "Alice invites you to a call"
    row = event_row(services, event_id)
    assert row.status == "processed" and row.status_reason == "reached 2 of 2 recipients: 4 sent"


def test_call_missed_goes_to_the_members_listed(world):
    services, apns, fcm, queued, _fake = world
    event = sample_events.member_event("call.missed", "alice", ["bob"])
    process_event(services, store(services, event))
    run_all_chunks(services, queued)
    assert apns.tokens() == [apns_token("bob")] and fcm.tokens() == ["bob-fcm"]
    assert apns.sent[0].payload["aps"]["alert"] == {
        "title": "Missed call",
        "body": "You missed a call from Alice",
    }
    assert apns.sent[0].time_to_live == 86_400


def test_session_started_pages_stream_members_minus_participants(world):
    services, _apns, fcm, queued, fake = world
    event = sample_events.member_event(
        "call.session_started", None, [], created_by="alice", participants=["bob"]
    )
    fake.set_members(event["call_cid"], USERS)
    event_id = store(services, event)
    process_event(services, event_id)
    run_all_chunks(services, queued)
    assert sorted(fcm.tokens()) == ["carol-fcm", "dave-fcm"]  # not the host, not bob (in it)
    assert fake.requests_to(MEMBERS)
    assert event_row(services, event_id).status == "processed"


def test_live_started_goes_to_members_minus_the_host(world):
    services, _apns, fcm, queued, fake = world
    event = sample_events.member_event("call.live_started", None, [], created_by="alice")
    fake.set_members(event["call_cid"], USERS)
    process_event(services, store(services, event))
    run_all_chunks(services, queued)
    assert sorted(fcm.tokens()) == ["bob-fcm", "carol-fcm", "dave-fcm"]
    assert {m.payload["type"] for m in fcm.sent} == {"call.live_started"}


def test_an_event_switched_off_for_the_call_type_is_ignored(world):
    services, apns, fcm, queued, fake = world
    event = sample_events.member_event(
        "call.session_started", None, [], call_type="audio_room", created_by="alice"
    )
    fake.set_members(event["call_cid"], USERS)
    event_id = store(services, event)
    assert process_event(services, event_id) == "ignored"
    assert queued == [] and apns.sent == [] and fcm.sent == []


def test_muted_users_are_skipped_and_the_skip_is_recorded(world):
    services, _apns, fcm, queued, _fake = world
    with services.db.transaction() as session:
        preferences.set_preference(session, services.settings.apps[0].api_key, "bob", True, None)
    event_id = store(
        services, sample_events.member_event("call.notification", "alice", ["bob", "carol"])
    )
    process_event(services, event_id)
    run_all_chunks(services, queued)
    assert "bob-fcm" not in fcm.tokens() and "carol-fcm" in fcm.tokens()
    with services.db.transaction() as session:
        # One row for bob the recipient, not one per device: none of his devices was pushed.
        (skipped,) = session.query(Delivery).filter_by(user_id="bob").all()
        assert (skipped.status, skipped.reason) == ("skipped", "call pushes muted")
        assert skipped.device_id is None and skipped.attempts == 0
    row = event_row(services, event_id)
    assert row.status_reason == "reached 1 of 2 recipients: 2 sent, 1 skipped"


def test_each_recipient_without_a_push_is_recorded_with_the_reason(world):
    services, apns, fcm, queued, _fake = world
    app = services.settings.apps[0].api_key
    until = utcnow().replace(microsecond=0) + timedelta(hours=2)
    with services.db.transaction() as session:
        preferences.set_preference(session, app, "bob", True, until)
        # carol: only a VoIP token left, which carries rings only.
        session.query(Device).filter(Device.user_id == "carol", Device.voip.is_(False)).delete()
        # dave: every token disabled, the FCM one last.
        for device in session.query(Device).filter_by(user_id="dave").order_by(Device.id):
            devices.disable_devices(session, [device.id], f"{device.platform} said Unregistered")
    event = sample_events.member_event("call.missed", "alice", ["bob", "carol", "dave", "erin"])
    event_id = store(services, event)
    process_event(services, event_id)
    run_all_chunks(services, queued)
    assert apns.sent == [] and fcm.sent == []
    reasons = skipped_reasons(services, event_id)
    assert reasons["bob"] == f"call pushes muted until {until:%Y-%m-%dT%H:%M:%SZ}"
    assert reasons["carol"].startswith("no token of the kind call.missed needs")
    assert f"apns voip {apns_token('carol', True)[:6]}" in reasons["carol"]
    assert reasons["dave"].startswith("token disabled at ")
    assert reasons["dave"].endswith(": fcm da…: fcm said Unregistered (and 2 more disabled)")
    assert reasons["erin"] == "no active device"
    row = event_row(services, event_id)
    assert row.status == "processed"
    assert row.status_reason == "reached nobody (4 recipients): 4 skipped"


def test_a_replay_pushes_a_skipped_recipient_only_once_unmuted(world):
    services, _apns, fcm, queued, _fake = world
    app = services.settings.apps[0].api_key
    with services.db.transaction() as session:
        preferences.set_preference(session, app, "bob", True)
    event_id = store(services, sample_events.member_event("call.missed", "alice", ["bob"]))
    process_event(services, event_id)
    run_all_chunks(services, queued)

    # Still muted, even with force: nothing sent, bob recorded skipped again, once.
    with services.db.transaction() as session:
        assert reopen_for_replay(session, event_id, force=True)
    process_event(services, event_id)
    run_all_chunks(services, queued)
    assert fcm.sent == []
    assert skipped_reasons(services, event_id) == {"bob": "call pushes muted"}

    with services.db.transaction() as session:
        preferences.set_preference(session, app, "bob", False)
        assert reopen_for_replay(session, event_id, force=False)
    process_event(services, event_id)
    run_all_chunks(services, queued)
    assert fcm.tokens() == ["bob-fcm"]
    with services.db.transaction() as session:
        rows = session.query(Delivery).filter_by(event_id=event_id).all()
    assert {(d.user_id, d.status) for d in rows} == {("bob", "sent")}
    assert all(d.device_id is not None for d in rows)
    assert event_row(services, event_id).status_reason == "reached 1 of 1 recipient: 2 sent"


def skipped_reasons(services, event_id) -> dict[str, str]:
    with services.db.transaction() as session:
        rows = session.query(Delivery).filter_by(event_id=event_id).all()
        assert all(d.status == "skipped" and d.device_id is None for d in rows)
        return {d.user_id: d.reason for d in rows}


def test_transient_failures_retry_with_backoff_then_fail_after_the_cap(world):
    services, _apns, fcm, queued, _fake = world
    fcm._answer = lambda _m, _n: PushOutcome(PushResult.RETRY, "UNAVAILABLE", 503, retry_after=1)
    event_id = store(services, sample_events.member_event("call.notification", "alice", ["bob"]))
    process_event(services, event_id)
    ((_, index),) = queued
    with pytest.raises(RetryLater) as first:
        deliver_chunk(services, event_id, index, attempt=0)
    assert first.value.delay >= 1  # Retry-After honoured
    with pytest.raises(RetryLater):
        deliver_chunk(services, event_id, index, attempt=1)
    deliver_chunk(services, event_id, index, attempt=2)  # cap reached: no retry asked for
    assert fcm.tokens() == ["bob-fcm"] * 3
    row = event_row(services, event_id)
    assert row.status == "failed" and "1 failed" in row.status_reason
    with services.db.transaction() as session:
        chunk = session.query(FanoutChunk).filter_by(event_id=event_id).one()
        assert chunk.status == "failed"
        fcm_delivery = session.query(Delivery).filter_by(event_id=event_id, platform="fcm").one()
        assert fcm_delivery.reason == "retries exhausted" and fcm_delivery.attempts == 3


def test_a_redelivered_chunk_sends_nothing_twice(world):
    services, apns, fcm, queued, _fake = world
    event_id = store(services, sample_events.member_event("call.notification", "alice", ["bob"]))
    process_event(services, event_id)
    ((_, index),) = queued
    deliver_chunk(services, event_id, index, 0)
    with services.db.transaction() as session:  # as if the task were delivered again
        session.query(FanoutChunk).update({"status": "pending"})
    deliver_chunk(services, event_id, index, 0)
    assert len(apns.sent) == 1 and len(fcm.sent) == 1


def test_a_redelivered_planning_task_does_not_duplicate_chunks(world):
    services, _apns, fcm, queued, _fake = world
    event = sample_events.member_event("call.notification", "alice", USERS)
    event_id = store(services, event)
    process_event(services, event_id)
    assert len(queued) == 2  # three recipients in chunks of two
    with services.db.transaction() as session:
        session.get(WebhookEvent, event_id).status = "processing"
    queued.clear()
    process_event(services, event_id)  # the worker died after planning; planning runs again
    assert len(queued) == 2  # the pending chunks are queued again, not duplicated
    run_all_chunks(services, queued)
    assert sorted(fcm.tokens()) == ["bob-fcm", "carol-fcm", "dave-fcm"]
    with services.db.transaction() as session:
        assert session.query(FanoutChunk).filter_by(event_id=event_id).count() == 2
    assert event_row(services, event_id).status == "processed"


def test_a_muted_until_in_the_past_no_longer_mutes(world):
    services, _apns, fcm, queued, _fake = world
    with services.db.transaction() as session:
        preferences.set_preference(
            session, services.settings.apps[0].api_key, "bob", True, utcnow().replace(year=2000)
        )
    process_event(
        services, store(services, sample_events.member_event("call.missed", "alice", ["bob"]))
    )
    run_all_chunks(services, queued)
    assert fcm.tokens() == ["bob-fcm"]


def test_answers_are_recorded_while_the_chunk_is_still_sending(world):
    services, _apns, fcm, queued, _fake = world
    answered: list[str] = []
    recorded_before_the_next_answer: list[bool] = []

    def status_of(token: str) -> str | None:
        with services.db.transaction() as session:
            return session.scalar(select(Delivery.status).join(Device).where(Device.token == token))

    def answer(message, _n):
        if answered:
            # The first FCM answer reaches the database while this push is still in flight.
            deadline = time.monotonic() + 5
            while status_of(answered[0]) != "sent" and time.monotonic() < deadline:
                time.sleep(0.01)
            recorded_before_the_next_answer.append(status_of(answered[0]) == "sent")
            assert status_of(message.token) == "sending"
        answered.append(message.token)
        return PushOutcome.sent()

    fcm._answer = answer
    event = sample_events.member_event("call.notification", "alice", ["bob", "carol"])
    process_event(services, store(services, event))
    run_all_chunks(services, queued)
    assert sorted(answered) == ["bob-fcm", "carol-fcm"]
    assert recorded_before_the_next_answer == [True]
    assert status_of("carol-fcm") == "sent"


def _fcm_priorities(services, queued, fake, event_type: str) -> set[int]:
    event = sample_events.member_event(event_type, "alice", ["alice", "bob"], created_by="alice")
    fake.set_members(event["call_cid"], ["alice", "bob"])
    process_event(services, store(services, event))
    run_all_chunks(services, queued)
    return {m.priority for m in services.sender.providers.defaults[Platform.FCM].sent}


@pytest.mark.parametrize(
    ("event_type", "priority"),
    [
        ("call.notification", 10),
        ("call.missed", 10),
        ("call.live_started", 10),
        ("call.session_started", 5),  # shown by no Android SDK: never high by default
    ],
)
def test_fcm_priority_is_high_only_for_what_the_apps_sdk_shows(world, event_type, priority):
    services, _apns, _fcm, queued, fake = world
    assert _fcm_priorities(services, queued, fake, event_type) == {priority}


def test_fcm_priority_is_configured_per_app(world):
    services, _apns, fcm, queued, fake = world
    services.settings.apps[0].fcm_high_priority = ["call.session_started"]
    assert _fcm_priorities(services, queued, fake, "call.session_started") == {10}
    fcm.sent.clear()
    assert _fcm_priorities(services, queued, fake, "call.missed") == {5}


def test_an_alert_goes_through_the_devices_named_provider(world):
    """A named provider of the app sends the device's alert with its own bundle id as topic; a
    name the app does not configure is a failed delivery, and the token is kept."""
    services, apns, _fcm, queued, _fake = world
    app = services.settings.apps[0].model_copy(
        update={"apns_providers": {"ios-debug": ApnsProviderSettings(bundle_id="com.ex.debug")}}
    )
    services.settings.apps = [app]
    debug = ScriptedProvider("apns")
    sender = PushSender(
        ProviderSet(
            services.sender.providers.defaults,
            {ProviderRef(Platform.APNS, app.api_key, "ios-debug"): debug},
        )
    )
    services.sender = sender
    with services.db.transaction() as session:
        for user, name in (("bob", "ios-debug"), ("carol", "ios-gone")):
            device = session.scalars(select(Device).where(Device.token == apns_token(user))).one()
            device.push_provider_name = name
    event_id = store(services, sample_events.member_event("call.missed", "alice", ["bob", "carol"]))
    process_event(services, event_id)
    run_all_chunks(services, queued)
    assert debug.tokens() == [apns_token("bob")] and debug.sent[0].topic == "com.ex.debug"
    assert apns_token("carol") not in apns.tokens() and apns_token("bob") not in apns.tokens()
    with services.db.transaction() as session:
        rows = {
            (d.user_id, d.platform): d
            for d in session.scalars(select(Delivery).where(Delivery.event_id == event_id))
        }
        carol = session.scalars(select(Device).where(Device.token == apns_token("carol"))).one()
        assert carol.disabled_at is None
    assert rows[("bob", "apns")].provider == "apns:ios-debug"
    assert rows[("carol", "apns")].status == "failed"
    assert "push provider 'ios-gone' is not configured" in rows[("carol", "apns")].reason
    assert rows[("carol", "fcm")].status == "sent"  # no named FCM provider: [fcm] as before
    assert event_row(services, event_id).status == "failed"
