"""Every row of the event -> action table (stream-protocol.md §6) end to end: signed webhooks over
real HTTP, a real Celery worker on real Redis, PostgreSQL, Stream's API and the push providers
faked on 127.0.0.1 and driven by the real clients (StreamApi, aioapns, pyfcm)."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from tests.fakes.fake_stream_api import DEVICES, device
from worker.storage.models import Delivery, Device
from worker.stream import samples as sample_events

pytestmark = [pytest.mark.services, pytest.mark.timeout(300)]


@pytest.fixture
def stack(start_stack):
    with start_stack(fanout={"chunk_size": 500}, concurrency=4) as running:
        yield running


def phone(user: str) -> list[dict]:
    """An iPhone (VoIP + alert tokens) and an Android phone for ``user``."""
    return [
        {"user_id": user, "platform": "apns", "token": f"{user}voip".ljust(64, "0"), "voip": True},
        {"user_id": user, "platform": "apns", "token": f"{user}alrt".ljust(64, "0")},
        {"user_id": user, "platform": "fcm", "token": f"{user}-android-token"},
    ]


def test_every_event_type_does_what_the_table_says(stack, fake_apns, fake_fcm, fake_stream_api):
    stack.add_devices([row for user in ("alice", "bob", "carol", "dave") for row in phone(user)])

    def pushes_since(apns_mark: int, fcm_mark: int) -> tuple[list[dict], list[dict]]:
        return fake_apns.received[apns_mark:], fake_fcm.received[fcm_mark:]

    cases = [
        # (event, expected (user, apns push type) set, expected FCM users)
        (
            sample_events.ring_event("alice", ["bob", "carol"]),
            {("bob", "voip"), ("carol", "voip")},
            {"bob", "carol"},
        ),
        (
            sample_events.member_event("call.notification", "alice", ["alice", "bob"]),
            {("bob", "alert")},
            {"bob"},
        ),
        (
            sample_events.member_event("call.missed", "alice", ["carol"]),
            {("carol", "alert")},
            {"carol"},
        ),
        (
            sample_events.member_event(
                "call.session_started", None, [], created_by="alice", participants=["bob"]
            ),
            {("carol", "alert"), ("dave", "alert")},
            {"carol", "dave"},
        ),
        (
            sample_events.member_event("call.live_started", None, [], created_by="dave"),
            {("alice", "alert"), ("bob", "alert"), ("carol", "alert")},
            {"alice", "bob", "carol"},
        ),
    ]
    for event, apns_expected, fcm_expected in cases:
        fake_stream_api.set_members(event["call_cid"], ["alice", "bob", "carol", "dave"])
        apns_mark, fcm_mark = fake_apns.count, len(fake_fcm.received)
        assert stack.wait_finished(stack.post(event)).status == "processed", event["type"]
        apns, fcm = pushes_since(apns_mark, fcm_mark)
        got_apns = {
            (r["payload"]["stream"]["receiver_id"], r["headers"]["apns-push-type"]) for r in apns
        }
        assert got_apns == apns_expected, event["type"]
        assert len(apns) == len(apns_expected), event["type"]
        assert {r["message"]["data"]["receiver_id"] for r in fcm} == fcm_expected, event["type"]
        assert {r["message"]["data"]["type"] for r in fcm} == {event["type"]}
        assert all(
            r["headers"]["apns-push-type"] == "alert" for r in apns if event["type"] != "call.ring"
        )

    # No push ever for the ring stoppers: they are recorded and acknowledged.
    apns_mark, fcm_mark = fake_apns.count, len(fake_fcm.received)
    for stop in ("call.accepted", "call.rejected", "call.ended", "call.session_ended"):
        response = stack.post_webhook(sample_events.call_event(stop, "default:over", "bob"))
        assert response.status_code == 200 and response.json()["status"] == "processed"
    unknown = stack.post_webhook({"type": "call.something_new", "created_at": 1})
    assert unknown.status_code == 200 and unknown.json()["status"] == "ignored"
    assert pushes_since(apns_mark, fcm_mark) == ([], [])


def test_accepted_before_the_ring_is_processed_rings_only_the_others(stack, fake_apns):
    stack.add_devices([row for user in ("bob", "carol") for row in phone(user)])
    ring = sample_events.ring_event("alice", ["bob", "carol"])
    # call.accepted stored first (Stream gives no ordering guarantee, §1.5); ring then.
    accepted = sample_events.call_event("call.accepted", ring["call_cid"], "bob")
    accepted["created_at"] = ring["created_at"] + 1
    assert stack.post_webhook(accepted).status_code == 200
    stack.wait_finished(stack.post(ring))
    assert {r["payload"]["stream"]["receiver_id"] for r in fake_apns.received} == {"carol"}


def test_ten_thousand_member_notification_one_push_per_device(
    stack, fake_apns, fake_fcm, fake_stream_api
):
    """Members come from QueryCallMembers in pages of 100 (the event's list may be truncated);
    the fan-out runs in chunks on the bulk queue; each device gets exactly one push."""
    members = [f"user{i:05d}" for i in range(10_000)]
    # Half the members have an iPhone, half an Android phone: 10,000 devices.
    stack.add_devices(
        [
            {"user_id": u, "platform": "apns", "token": f"{i:064x}"}
            if i % 2
            else {"user_id": u, "platform": "fcm", "token": f"fcm-{u}"}
            for i, u in enumerate(members)
        ]
    )
    event = sample_events.member_event("call.notification", "host", members[:100])
    fake_stream_api.set_members(event["call_cid"], ["host", *members])
    assert stack.wait_finished(stack.post(event), timeout=240).status == "processed"
    # One notification per iPhone.  A bulk push whose request was written but not answered in
    # time (a loaded machine) is re-sent at least once, with the same apns-id and
    # apns-collapse-id, so the phone replaces it rather than showing it twice: count those.
    apns_notifications = {
        (r["token"], r["headers"]["apns-id"], r["headers"]["apns-collapse-id"])
        for r in fake_apns.received
    }
    apns_tokens = Counter(token for token, _, _ in apns_notifications)
    fcm_tokens = Counter(r["message"]["token"] for r in fake_fcm.received)
    assert len(apns_tokens) == 5_000 and max(apns_tokens.values()) == 1
    assert len(fcm_tokens) == 5_000 and max(fcm_tokens.values()) == 1
    assert len(fake_stream_api.requests_to("query_call_members")) == 101  # 10,001 members / 100
    with stack.db.transaction() as session:
        statuses = Counter(session.scalars(select(Delivery.status)))
    assert statuses == {"sent": 10_000}


def test_devices_from_streams_devices_api(start_stack, fake_stream_api, fake_apns, fake_fcm):
    """`devices.source = "stream"`: the tokens the app's Stream SDK registered with Stream are
    used (and mirrored); one phone with a VoIP and an FCM token is rung once, through VoIP."""
    voip, android, other = "cd" * 32, "bob-pixel-token", "ef" * 32
    fake_stream_api.set_devices(
        "bob",
        [
            device(voip, "apn", user_id="bob", voip=True, hardware_id="bobs-iphone"),
            device("bob-iphone-fcm", "firebase", user_id="bob", hardware_id="bobs-iphone"),
            device(android, "firebase", user_id="bob", hardware_id="bobs-pixel"),
            device(other, "apn", user_id="bob", disabled=True),
        ],
    )
    with start_stack(devices={"source": "stream", "cache_seconds": 60}) as stack:
        for _ in range(2):
            event_id = stack.post(sample_events.ring_event("alice", ["bob"]))
            assert stack.wait_finished(event_id).status == "processed"
        with stack.db.transaction() as session:
            mirrored = {d.token: d.source for d in session.scalars(select(Device))}
    assert [r["token"] for r in fake_apns.received] == [voip, voip]
    assert [r["message"]["token"] for r in fake_fcm.received] == [android, android]
    assert len(fake_stream_api.requests_to(DEVICES)) == 1  # the second ring used the cache
    assert mirrored[voip] == "stream" and other not in mirrored
