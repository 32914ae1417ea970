"""Every row of the event -> action table (stream-protocol.md §6) end to end: signed webhooks over
real HTTP, a real Celery worker on real Redis, PostgreSQL, Stream's API and the push providers
faked on 127.0.0.1 and driven by the real clients (StreamApi, aioapns, pyfcm)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from sqlalchemy import insert, select
from waitress.server import create_server

from tests.e2e.processes import free_port, wait_until
from tests.fakes.stream_api_plugin import stream_app_for
from webhook_app import create_app
from worker.foundation.settings import Settings, load_settings
from worker.runtime.celery_app import create_celery
from worker.runtime.inprocess_worker import inprocess_worker
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Delivery, Device, WebhookEvent
from worker.stream import samples as sample_events

pytestmark = [pytest.mark.services, pytest.mark.timeout(300)]


@dataclass
class Stack:
    settings: Settings
    db: Database
    port: int
    api_key: str
    secret: str

    def post(self, event: dict) -> requests.Response:
        body, headers = sample_events.signed_request(
            event, api_key=self.api_key, secret=self.secret
        )
        return requests.post(
            f"http://127.0.0.1:{self.port}/webhooks/stream", data=body, headers=headers, timeout=10
        )

    def event_status(self, event_id: int) -> str:
        with self.db.transaction() as session:
            return session.get(WebhookEvent, event_id).status

    def wait_finished(self, event_id: int, timeout: float = 60) -> str:
        wait_until(
            lambda: self.event_status(event_id) not in ("received", "processing"),
            timeout,
            message=f"event {event_id} finished",
        )
        return self.event_status(event_id)


@pytest.fixture
def stack(
    postgres_url, redis_url, apns_settings, fcm_settings, fake_stream_api, monkeypatch
) -> Iterator[Stack]:
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    app = stream_app_for(fake_stream_api)
    secret = app.signing_secret
    settings = load_settings(
        database_url=postgres_url,
        broker_url=redis_url,
        apps=[{"api_key": app.api_key, "api_secrets": [secret], "base_url": app.base_url}],
        apns=apns_settings.model_dump(),
        fcm=fcm_settings.model_dump(),
        fanout={"chunk_size": 500},
    )
    upgrade_to_head(postgres_url)
    db = Database(postgres_url)
    celery = create_celery(settings)
    port = free_port()
    server = create_server(create_app(settings, db=db, celery=celery), host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    with inprocess_worker(celery, concurrency=4):
        yield Stack(settings, db, port, app.api_key, secret)
    server.close()
    db.dispose()


def add_devices(db: Database, rows: list[dict], api_key: str) -> None:
    with db.transaction() as session:
        session.execute(
            insert(Device),
            [{"api_key": api_key, "source": "local", "voip": False} | r for r in rows],
        )


def phone(user: str) -> list[dict]:
    """An iPhone (VoIP + alert tokens) and an Android phone for ``user``."""
    return [
        {"user_id": user, "platform": "apns", "token": f"{user}voip".ljust(64, "0"), "voip": True},
        {"user_id": user, "platform": "apns", "token": f"{user}alrt".ljust(64, "0")},
        {"user_id": user, "platform": "fcm", "token": f"{user}-android-token"},
    ]


def test_every_event_type_does_what_the_table_says(stack, fake_apns, fake_fcm, fake_stream_api):
    add_devices(
        stack.db,
        [row for user in ("alice", "bob", "carol", "dave") for row in phone(user)],
        stack.api_key,
    )

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
        response = stack.post(event)
        assert response.status_code == 202, response.text
        assert stack.wait_finished(response.json()["event_id"]) == "processed", event["type"]
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
        response = stack.post(sample_events.call_event(stop, "default:over", "bob"))
        assert response.status_code == 200 and response.json()["status"] == "processed"
    unknown = stack.post({"type": "call.something_new", "created_at": 1})
    assert unknown.status_code == 200 and unknown.json()["status"] == "ignored"
    assert pushes_since(apns_mark, fcm_mark) == ([], [])


def test_accepted_before_the_ring_is_processed_rings_only_the_others(stack, fake_apns):
    add_devices(stack.db, [row for user in ("bob", "carol") for row in phone(user)], stack.api_key)
    ring = sample_events.ring_event("alice", ["bob", "carol"])
    # call.accepted stored first (Stream gives no ordering guarantee, §1.5); ring then.
    accepted = sample_events.call_event("call.accepted", ring["call_cid"], "bob")
    accepted["created_at"] = ring["created_at"] + 1
    assert stack.post(accepted).status_code == 200
    response = stack.post(ring)
    stack.wait_finished(response.json()["event_id"])
    assert {r["payload"]["stream"]["receiver_id"] for r in fake_apns.received} == {"carol"}


def test_ten_thousand_member_notification_one_push_per_device(
    stack, fake_apns, fake_fcm, fake_stream_api
):
    """Members come from QueryCallMembers in pages of 100 (the event's list may be truncated);
    the fan-out runs in chunks on the bulk queue; each device gets exactly one push."""
    members = [f"user{i:05d}" for i in range(10_000)]
    # Half the members have an iPhone, half an Android phone: 10,000 devices.
    add_devices(
        stack.db,
        [
            {"user_id": u, "platform": "apns", "token": f"{i:064x}"}
            if i % 2
            else {"user_id": u, "platform": "fcm", "token": f"fcm-{u}"}
            for i, u in enumerate(members)
        ],
        stack.api_key,
    )
    event = sample_events.member_event("call.notification", "host", members[:100])
    fake_stream_api.set_members(event["call_cid"], ["host", *members])
    response = stack.post(event)
    assert response.status_code == 202
    assert stack.wait_finished(response.json()["event_id"], timeout=240) == "processed"
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


def test_devices_from_streams_devices_api(
    postgres_url,
    redis_url,
    apns_settings,
    fcm_settings,
    fake_stream_api,
    fake_apns,
    fake_fcm,
    monkeypatch,
):
    """`devices.source = "stream"`: the tokens the app's Stream SDK registered with Stream are
    used (and mirrored); one phone with a VoIP and an FCM token is rung once, through VoIP."""
    from tests.fakes.fake_stream_api import DEVICES, device

    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    app = stream_app_for(fake_stream_api)
    settings = load_settings(
        database_url=postgres_url,
        broker_url=redis_url,
        apps=[
            {"api_key": app.api_key, "api_secrets": [app.signing_secret], "base_url": app.base_url}
        ],
        apns=apns_settings.model_dump(),
        fcm=fcm_settings.model_dump(),
        devices={"source": "stream", "cache_seconds": 60},
    )
    upgrade_to_head(postgres_url)
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
    db = Database(postgres_url)
    celery = create_celery(settings)
    port = free_port()
    server = create_server(create_app(settings, db=db, celery=celery), host="127.0.0.1", port=port)
    threading.Thread(target=server.run, daemon=True).start()
    stack = Stack(settings, db, port, app.api_key, app.signing_secret)
    try:
        with inprocess_worker(celery, concurrency=2):
            for _ in range(2):
                response = stack.post(sample_events.ring_event("alice", ["bob"]))
                assert stack.wait_finished(response.json()["event_id"]) == "processed"
    finally:
        server.close()
    assert [r["token"] for r in fake_apns.received] == [voip, voip]
    assert [r["message"]["token"] for r in fake_fcm.received] == [android, android]
    assert len(fake_stream_api.requests_to(DEVICES)) == 1  # the second ring used the cache
    with db.transaction() as session:
        mirrored = {d.token: d.source for d in session.scalars(select(Device))}
    assert mirrored[voip] == "stream" and other not in mirrored
    db.dispose()
