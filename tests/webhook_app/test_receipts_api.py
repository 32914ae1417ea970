"""POST /receipts through the real app: pushes made by the real ring and notification processing
(provider seam scripted) on SQLite and PostgreSQL, their receipt ids sent back with Stream
tokens; who may confirm which push, and what is recorded and shown."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY

from tests.worker.recording_handoff import RecordingHandoff
from tests.worker.scripted_provider import ScriptedProvider
from webhook_app import create_app
from worker.commands.events import events
from worker.commands.trace import trace
from worker.delivery.event_processing import process_event
from worker.delivery.notifications import deliver_chunk
from worker.delivery.payloads import RECEIPT_ID_KEY
from worker.delivery.services import Services
from worker.delivery.templates import TemplateBook
from worker.foundation.settings import load_settings
from worker.intake.webhooks import stored_status
from worker.ops import event_log
from worker.push.base import Platform, PushMessage
from worker.push.sender import PushSender
from worker.runtime.celery_app import create_celery
from worker.storage import devices
from worker.storage.database import Database
from worker.storage.inbox import NewWebhook, store_webhook
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Delivery
from worker.stream import samples as sample_events
from worker.stream.events import parse_call_event

API_KEY = "test-key"
SECRET = "test-secret-0123456789abcdef0123456789abcdef0123456789abcdef0123"
OTHER_KEY = "other-key"
OTHER_SECRET = "other-secret-0123456789abcdef0123456789abcdef0123456789abcdef01"
ADMIN_TOKEN = "receipts-admin-token-0123456789abcdef"

BOB_VOIP = "b0b" + "1" * 61
BOB_ANDROID = "bob-fcm-token"
CAROL_APNS = "ca7" + "2" * 61
CAROL_ANDROID = "carol-fcm-token"


def bearer(claims: dict, secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode(claims, secret, algorithm="HS256")}


BOB = bearer({"user_id": "bob"})
CAROL = bearer({"user_id": "carol"})


@pytest.fixture
def world(database_url, monkeypatch):
    """The web app and a worker's services on one database; bob and carol have phones in
    both apps (tokens of the other app get the other app's pushes)."""
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    upgrade_to_head(database_url)
    settings = load_settings(
        database_url=database_url,
        apps=[
            {"api_key": API_KEY, "api_secrets": [SECRET]},
            {"api_key": OTHER_KEY, "api_secrets": [OTHER_SECRET]},
        ],
        apns={"bundle_id": "com.example.app"},
        admin_token=ADMIN_TOKEN,
    )
    apns, fcm = ScriptedProvider("apns"), ScriptedProvider("fcm")
    queued: list[tuple[int, int]] = []
    services = Services(
        settings,
        Database(database_url),
        PushSender({Platform.APNS: apns, Platform.FCM: fcm}),
        TemplateBook.from_settings(settings),
        handoff=RecordingHandoff(chunks=queued),
    )
    with services.db.transaction() as session:
        for api_key in (API_KEY, OTHER_KEY):
            for user, platform, token, voip in [
                ("bob", Platform.APNS, BOB_VOIP, True),
                ("bob", Platform.FCM, BOB_ANDROID, False),
                ("carol", Platform.APNS, CAROL_APNS, False),
                ("carol", Platform.FCM, CAROL_ANDROID, False),
            ]:
                devices.add_device(
                    session,
                    api_key=api_key,
                    user_id=user,
                    platform=platform,
                    token=token,
                    voip=voip,
                )
    web_db = Database(database_url)
    app = create_app(settings, db=web_db, celery=create_celery(settings))
    world = World(services, apns, fcm, queued, app.test_client(), database_url)
    yield world
    web_db.dispose()
    services.close()


class World:
    def __init__(self, services, apns, fcm, queued, client, database_url):
        self.services, self.apns, self.fcm, self.queued = services, apns, fcm, queued
        self.client, self.database_url = client, database_url

    def push(self, event: dict, api_key: str = API_KEY) -> int:
        """Store and process ``event`` as the worker would; returns its id."""
        parsed = parse_call_event(event)
        status, reason = stored_status(event["type"])
        with self.services.db.transaction() as session:
            event_id = store_webhook(
                session,
                NewWebhook(
                    webhook_id=f"wh-{time.time_ns()}",
                    api_key=api_key,
                    event_type=event["type"],
                    body=json.dumps(event),
                    call_cid=parsed.call_cid,
                    status=status,
                    status_reason=reason,
                ),
            ).event_id
        process_event(self.services, event_id)
        while self.queued:
            deliver_chunk(self.services, *self.queued.pop(0), 0)
        return event_id

    def sent(self) -> list[PushMessage]:
        return self.apns.sent + self.fcm.sent

    def receipt_of(self, token: str, event_type: str = "call.ring") -> str:
        (message,) = [m for m in self.sent() if m.token == token and _push_type(m) == event_type]
        return _receipt(message)

    def ids(self) -> set[str]:
        with self.services.db.transaction() as session:
            rows = session.query(Delivery.receipt_id).all()
            return {r.receipt_id for r in rows if r.receipt_id}

    def delivery(self, receipt_id: str) -> Delivery:
        with self.services.db.transaction() as session:
            return session.query(Delivery).filter(Delivery.receipt_id == receipt_id).one()

    def confirm(self, receipt_id, headers, api_key: str | None = None):
        query = f"?api_key={api_key}" if api_key else ""
        return self.client.post(
            "/receipts" + query, json={"receipt_id": receipt_id}, headers=headers
        )


def _push_type(message: PushMessage) -> str:
    payload = message.payload
    return payload["stream"]["type"] if "stream" in payload else payload["type"]


def _receipt(message: PushMessage) -> str:
    return message.payload[RECEIPT_ID_KEY]


def receipts_counted(platform: str, kind: str) -> float:
    labels = {"platform": platform, "kind": kind}
    return REGISTRY.get_sample_value("callpush_push_receipts_total", labels) or 0.0


def phone_latencies_observed(platform: str) -> float:
    labels = {"platform": platform}
    return REGISTRY.get_sample_value("callpush_phone_latency_seconds_count", labels) or 0.0


def test_every_push_carries_its_deliverys_own_receipt_id(world):
    world.push(sample_events.ring_event("alice", ["bob", "carol"]))
    for event_type in ("call.notification", "call.missed"):
        world.push(sample_events.member_event(event_type, "alice", ["bob", "carol"]))
    kinds = {(m.platform.value, m.kind.value, _push_type(m)) for m in world.sent()}
    assert kinds == {
        ("apns", "voip", "call.ring"),
        ("apns", "alert", "call.ring"),  # carol's iPhone has no VoIP token
        ("fcm", "data", "call.ring"),
        ("apns", "alert", "call.notification"),
        ("fcm", "data", "call.notification"),
        ("apns", "alert", "call.missed"),
        ("fcm", "data", "call.missed"),
    }
    sent_ids = [_receipt(m) for m in world.sent()]
    # One per push, each the id its delivery row holds.
    assert len(set(sent_ids)) == len(sent_ids) == 10
    assert set(sent_ids) == world.ids()


def test_the_phone_confirms_its_push_and_trace_and_event_page_show_it(world):
    event_id = world.push(sample_events.ring_event("alice", ["bob", "carol"]))
    receipt_id = world.receipt_of(BOB_VOIP)
    counted = receipts_counted("apns", "voip")
    observed = phone_latencies_observed("apns")

    answer = world.confirm(receipt_id, BOB)

    assert answer.status_code == 200, answer.json
    body = answer.json
    assert body["receipt_id"] == receipt_id and body["event_id"] == event_id
    assert (body["platform"], body["kind"], body["duplicate"]) == ("apns", "voip", False)
    assert body["received_at"].endswith("Z") and body["latency_ms"] >= 0
    delivery = world.delivery(receipt_id)
    assert delivery.phone_received_at is not None
    assert delivery.phone_latency_ms == pytest.approx(body["latency_ms"])
    assert receipts_counted("apns", "voip") == counted + 1
    assert phone_latencies_observed("apns") == observed + 1

    with world.services.db.transaction() as session:
        detail = event_log.event_detail(session, event_id)
        assert detail is not None and detail.call_cid is not None
        trace = event_log.call_trace(session, detail.call_cid, API_KEY)
    phones = [d for d in detail.deliveries if d.phone_received_at is not None]
    assert [(d.user_id, d.kind) for d in phones] == [("bob", "voip")]
    assert phones[0].phone_latency_ms == pytest.approx(body["latency_ms"])
    (entry,) = [e for e in trace if e.kind == "phone"]
    latency = event_log.format_latency(body["latency_ms"])
    assert entry.summary.startswith(f"delivered to phone, +{latency}: bob apns voip ")
    assert entry.latency_ms == pytest.approx(body["latency_ms"])
    # After the push it confirms, in the call's timeline.
    assert [e.kind for e in trace].index("phone") > [e.kind for e in trace].index("push")


def test_the_dashboard_and_the_cli_show_the_phones_receipt(world, tmp_path, monkeypatch):
    event_id = world.push(sample_events.ring_event("alice", ["bob", "carol"]))
    answer = world.confirm(world.receipt_of(BOB_ANDROID), BOB)
    assert answer.status_code == 200
    shown = f"delivered to phone, +{event_log.format_latency(answer.json['latency_ms'])}"
    with world.services.db.transaction() as session:
        detail = event_log.event_detail(session, event_id)
        assert detail is not None and detail.call_cid is not None
        call_cid = detail.call_cid

    client = world.client
    assert client.post("/dashboard/login", data={"token": ADMIN_TOKEN}).status_code == 302
    event_page = client.get(f"/dashboard/events/{event_id}").get_data(as_text=True)
    assert event_page.count(shown) == 1  # bob's Android
    assert event_page.count("no receipt") == 3  # bob's iPhone, carol's two phones
    call_page = client.get(f"/dashboard/calls/{call_cid}").get_data(as_text=True)
    assert f"{shown}: bob fcm data" in call_page
    user_page = client.get("/dashboard/users/bob").get_data(as_text=True)
    assert user_page.count(shown) == 1  # on bob's Android, not on his iPhone

    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no callpush.toml from the working directory
    env = {
        "CALLPUSH_DATABASE_URL": world.database_url,
        "CALLPUSH_STREAM_API_KEY": API_KEY,
        "CALLPUSH_STREAM_API_SECRET": SECRET,
    }
    runner = CliRunner()
    timeline = runner.invoke(trace, [call_cid], env=env, catch_exceptions=False).output
    (line,) = [line for line in timeline.splitlines() if "=>" in line]
    assert f"=> #{event_id}" in line and f"{shown}: bob fcm data" in line
    show = runner.invoke(events, ["show", str(event_id)], env=env, catch_exceptions=False)
    assert show.output.count(shown) == 1
    by_user = runner.invoke(trace, ["--user", "bob"], env=env, catch_exceptions=False).output
    (line,) = [line for line in by_user.splitlines() if "=>" in line]
    assert line.strip() == f"=> {shown}"


def test_a_repeated_receipt_is_answered_200_and_keeps_the_first_time(world):
    world.push(sample_events.member_event("call.missed", "alice", ["bob"]))
    receipt_id = world.receipt_of(BOB_ANDROID, "call.missed")
    first = world.confirm(receipt_id, BOB)
    assert first.status_code == 200 and first.json["duplicate"] is False
    counted = receipts_counted("fcm", "data")
    time.sleep(0.01)

    again = world.confirm(receipt_id, BOB)

    assert again.status_code == 200 and again.json["duplicate"] is True
    assert again.json["received_at"] == first.json["received_at"]
    assert again.json["latency_ms"] == first.json["latency_ms"]
    assert receipts_counted("fcm", "data") == counted  # counted once
    stored = world.delivery(receipt_id)
    assert stored.phone_latency_ms == pytest.approx(first.json["latency_ms"])


def test_a_receipt_for_another_users_push_is_refused_and_records_nothing(world):
    world.push(sample_events.ring_event("alice", ["bob", "carol"]))
    carols = world.receipt_of(CAROL_ANDROID)

    answer = world.confirm(carols, BOB)

    assert answer.status_code == 403 and "another user" in answer.json["error"]
    assert world.delivery(carols).phone_received_at is None
    # Carol herself may.
    assert world.confirm(carols, CAROL).status_code == 200


def test_a_receipt_in_the_wrong_app_is_not_found_and_records_nothing(world):
    world.push(sample_events.ring_event("alice", ["bob"]), api_key=OTHER_KEY)
    world.push(sample_events.ring_event("alice", ["bob"]), api_key=API_KEY)
    others = next(_receipt(m) for m in world.sent() if m.token == BOB_VOIP)
    bob_of_this_app = bearer({"user_id": "bob"})

    answer = world.confirm(others, bob_of_this_app, api_key=API_KEY)

    assert answer.status_code == 404
    assert world.delivery(others).phone_received_at is None
    # The same user's token of the push's own app may.
    bob_of_other_app = bearer({"user_id": "bob"}, OTHER_SECRET)
    assert world.confirm(others, bob_of_other_app, api_key=OTHER_KEY).status_code == 200


def test_an_unknown_receipt_id_is_not_found(world):
    world.push(sample_events.ring_event("alice", ["bob"]))
    answer = world.confirm("f" * 32, BOB)
    assert answer.status_code == 404 and answer.json == {
        "error": "no push of this app carried that receipt_id"
    }


def test_receipts_need_the_users_own_stream_token(world):
    world.push(sample_events.ring_event("alice", ["bob"]))
    receipt_id = world.receipt_of(BOB_VOIP)
    assert world.confirm(receipt_id, {}).status_code == 401
    wrong = bearer({"user_id": "bob"}, "wrong-secret-0123456789abcdef0123456789abcdef0123456789")
    assert world.confirm(receipt_id, wrong).status_code == 401
    # A server token cannot speak for a phone.
    server = world.confirm(receipt_id, bearer({"server": True}))
    assert server.status_code == 403 and "user's token" in server.json["error"]
    assert world.delivery(receipt_id).phone_received_at is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "receipt_id"),
        ({"receipt_id": 12}, "receipt_id"),
        ({"receipt_id": ""}, "receipt_id"),
        ({"receipt_id": "F" * 32}, "receipt_id"),  # as sent: lowercase
        ({"receipt_id": "a" * 33}, "receipt_id"),
        ({"receipt_id": "a" * 32, "event_id": 1}, "event_id"),
    ],
)
def test_a_bad_body_is_400_naming_the_field(world, body, field):
    answer = world.client.post("/receipts", json=body, headers=BOB)
    assert answer.status_code == 400 and answer.json["field"] == field
