"""Stream parity end to end: FCM priority per event type, rings for iPhones without CallKit,
devices routed through their named push provider, topics APNs accepts.

Signed webhooks over real HTTP into the real receiver, a real Celery worker on Redis, PostgreSQL,
and the real clients (aioapns over TLS/HTTP/2, pyfcm, StreamApi) against the fakes."""

from __future__ import annotations

import time

import pytest

from tests.fakes.fake_stream_api import device
from tests.fakes.pytest_plugin import APNS_BUNDLE_ID, apns_settings_for
from worker.stream import samples as sample_events

pytestmark = [pytest.mark.services, pytest.mark.timeout(300)]

DEBUG_BUNDLE = "com.example.callpush.debug"


def apns_token(name: str) -> str:
    return name.encode().hex().ljust(64, "0")


def test_fcm_priority_follows_what_the_sdk_shows_and_iphones_without_voip_ring_by_alert(
    start_stack, fake_stream_api, fake_apns, fake_fcm
):
    """A ring goes out at FCM high priority, call.session_started at normal (no Android SDK
    shows it), call.missed at high.  An iPhone with only a regular token gets the ring as a
    time-sensitive alert; a user with a VoIP and a regular token gets the VoIP push only."""
    dan_plain, erin_voip, erin_plain = apns_token("dan"), apns_token("erinv"), apns_token("erinp")
    with start_stack() as stack:
        stack.add_devices(
            [
                {"user_id": "bob", "platform": "fcm", "token": "bob-android"},
                {"user_id": "dan", "platform": "apns", "token": dan_plain},
                {"user_id": "erin", "platform": "apns", "token": erin_voip, "voip": True},
                {"user_id": "erin", "platform": "apns", "token": erin_plain},
            ],
        )
        ring = sample_events.ring_event("alice", ["bob", "dan", "erin"], ring_timeout_ms=30_000)
        sent_at = time.time()
        ring_id = stack.post(ring)
        assert stack.wait_finished(ring_id).status == "processed"

        fake_stream_api.set_members(ring["call_cid"], ["alice", "bob"])
        started = sample_events.member_event(
            "call.session_started",
            None,
            [],
            call_id=ring["call_cid"].split(":", 1)[1],
            created_by="alice",
        )
        assert stack.wait_finished(stack.post(started)).status == "processed"
        missed = sample_events.member_event("call.missed", "alice", ["bob"])
        assert stack.wait_finished(stack.post(missed)).status == "processed"
        rows = {d.user_id: d for d in stack.deliveries(ring_id) if d.platform == "apns"}

    priorities = {
        r["message"]["data"]["type"]: r["message"]["android"]["priority"] for r in fake_fcm.received
    }
    assert priorities == {
        "call.ring": "high",
        "call.session_started": "normal",
        "call.missed": "high",
    }

    by_token = {r["token"]: r for r in fake_apns.received}
    assert set(by_token) == {dan_plain, erin_voip}  # never both kinds to erin's phone
    assert by_token[erin_voip]["headers"]["apns-push-type"] == "voip"

    alert = by_token[dan_plain]
    headers, body = alert["headers"], alert["payload"]
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-topic"] == APNS_BUNDLE_ID  # the bundle id itself, not .voip
    assert headers["apns-priority"] == "10"
    assert headers["apns-collapse-id"] == f"video-call.ring:{ring['call_cid']}"
    # Expires with the ring (30 s), not after the alerts' usual 10 minutes.
    assert sent_at < int(headers["apns-expiration"]) <= sent_at + 31
    assert body["aps"]["interruption-level"] == "time-sensitive"
    assert body["aps"]["sound"] == "default"
    assert body["aps"]["alert"] == {"title": "Alice is calling you", "body": ""}
    assert body["stream"] == by_token[erin_voip]["payload"]["stream"] | {"receiver_id": "dan"}
    assert body["stream"]["type"] == "call.ring" and body["stream"]["video"] == "true"
    assert body["stream"]["sender"] == "stream.video"
    assert body["stream"]["call_cid"] == ring["call_cid"]
    assert (rows["dan"].kind, rows["dan"].status) == ("alert", "sent")
    assert rows["erin"].kind == "voip"


def test_stream_devices_go_through_their_named_provider(
    start_stack, fake_apns_factory, push_credentials, fake_stream_api, fake_fcm
):
    """Two provider names reach two APNs environments (a production and a sandbox fake, each
    with its own topic); a name the app does not configure is recorded as failed and its token
    stays enabled, while the same user's Android phone still rings."""
    production, sandbox = fake_apns_factory(), fake_apns_factory()
    bob, carol, dave = apns_token("bob"), apns_token("carol"), apns_token("dave")
    fake_stream_api.set_devices(
        "bob", [device(bob, "apn", voip=True, push_provider_name="ios-voip")]
    )
    fake_stream_api.set_devices(
        "carol", [device(carol, "apn", voip=True, push_provider_name="ios-voip-debug")]
    )
    fake_stream_api.set_devices(
        "dave",
        [
            device(dave, "apn", voip=True, push_provider_name="ios-voip-enterprise"),
            device("dave-android", "firebase", push_provider_name="firebase"),
        ],
    )
    apns = apns_settings_for(production, push_credentials, use_sandbox=False)
    with start_stack(
        apns=apns.model_dump(),
        devices={"source": "stream"},
        app={
            "apns_providers": {
                "ios-voip": {},
                "ios-voip-debug": {
                    "bundle_id": DEBUG_BUNDLE,
                    "use_sandbox": True,
                    "port": sandbox.port,
                },
            }
        },
    ) as stack:
        for _ in range(2):  # the second ring: the unknown name still disables nothing
            ring_id = stack.post(sample_events.ring_event("alice", ["bob", "carol", "dave"]))
            # dave's iPhone could not be rung
            assert stack.wait_finished(ring_id).status == "failed"
        rows = {(d.user_id, d.platform): d for d in stack.deliveries(ring_id)}
        dave_row = stack.device(dave)

    assert [r["token"] for r in production.received] == [bob, bob]
    assert {r["headers"]["apns-topic"] for r in production.received} == {f"{APNS_BUNDLE_ID}.voip"}
    assert [r["token"] for r in sandbox.received] == [carol, carol]
    assert {r["headers"]["apns-topic"] for r in sandbox.received} == {f"{DEBUG_BUNDLE}.voip"}
    assert [r["token"] for r in fake_fcm.received] == ["dave-android", "dave-android"]

    assert (rows[("bob", "apns")].provider, rows[("bob", "apns")].status) == (
        "apns:ios-voip",
        "sent",
    )
    assert rows[("carol", "apns")].provider == "apns:ios-voip-debug"
    failed = rows[("dave", "apns")]
    assert failed.status == "failed"
    assert failed.reason == (
        f"push provider 'ios-voip-enterprise' is not configured for app {stack.api_key}"
    )
    assert dave_row.disabled_at is None
    assert dave_row.push_provider_name == "ios-voip-enterprise"


def test_local_registrations_name_their_provider_and_a_voip_app_id_is_refused(
    start_stack, fake_apns_factory, push_credentials
):
    production, sandbox = fake_apns_factory(), fake_apns_factory()
    apns = apns_settings_for(production, push_credentials, use_sandbox=False)
    with start_stack(
        apns=apns.model_dump(),
        app={
            "apns_providers": {
                "ios-voip-debug": {
                    "bundle_id": DEBUG_BUNDLE,
                    "use_sandbox": True,
                    "port": sandbox.port,
                }
            }
        },
    ) as stack:
        refused = stack.register(
            {
                "user_id": "bob",
                "platform": "apns",
                "token": apns_token("bob"),
                "voip": True,
                "app_id": f"{APNS_BUNDLE_ID}.voip",
            }
        )
        assert refused.status_code == 400 and refused.json()["field"] == "app_id"
        assert "ends in '.voip'" in refused.json()["error"]
        unknown = stack.register(
            {
                "user_id": "bob",
                "platform": "apns",
                "token": apns_token("bob"),
                "voip": True,
                "push_provider_name": "ios-voip-typo",
            }
        )
        assert unknown.status_code == 400 and unknown.json()["field"] == "push_provider_name"

        debug = stack.register(
            {
                "user_id": "bob",
                "platform": "apns",
                "token": apns_token("bob"),
                "voip": True,
                "push_provider_name": "ios-voip-debug",
            }
        )
        assert debug.status_code == 201, debug.text
        plain = stack.register(
            {"user_id": "carol", "platform": "apns", "token": apns_token("carol"), "voip": True}
        )
        assert plain.status_code == 201 and plain.json()["push_provider_name"] is None
        ring_id = stack.post(sample_events.ring_event("alice", ["bob", "carol"]))
        assert stack.wait_finished(ring_id).status == "processed"

    assert [(r["token"], r["headers"]["apns-topic"]) for r in sandbox.received] == [
        (apns_token("bob"), f"{DEBUG_BUNDLE}.voip")
    ]
    assert [(r["token"], r["headers"]["apns-topic"]) for r in production.received] == [
        (apns_token("carol"), f"{APNS_BUNDLE_ID}.voip")
    ]
