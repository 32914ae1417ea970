"""The admin API through the real app: the bearer token (and 404 without one configured), the
event log, replay with dry run, device lookup and call traces, against PostgreSQL and Redis."""

from __future__ import annotations

import json
from datetime import timedelta

import jsonschema
import pytest
import redis
from sqlalchemy import select

from tests.ops_data import (
    ADMIN_TOKEN,
    API_KEY,
    SECRET,
    Seeder,
    notification_body,
    ops_app,
    ring_body,
)
from tests.worker.commands.test_events_cli import (
    BOB_FCM,
    BOB_VOIP,
    CAROL_FCM,
    queued_tasks,
    seed_world,
)
from webhook_app.admin_auth import bearer_token, token_matches
from webhook_app.openapi import shared_document
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Delivery, WebhookEvent

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def build(database_url: str, broker_url: str | None, admin_token: str | None = ADMIN_TOKEN):
    settings = load_settings(
        database_url=database_url,
        broker_url=broker_url,
        apps=[{"api_key": API_KEY, "api_secrets": [SECRET]}],
    )
    upgrade_to_head(database_url)
    db = Database(database_url)
    return ops_app(settings, db, create_celery(settings), admin_token), db


@pytest.fixture
def admin(postgres_url, redis_url, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    app, db = build(postgres_url, redis_url)
    ids = seed_world(db)
    broker = redis.Redis.from_url(redis_url)
    yield app.test_client(), db, ids, broker
    broker.close()
    db.dispose()


@pytest.fixture
def local(sqlite_url, monkeypatch):
    """SQLite, no broker: enough for the authentication rules."""
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)

    def make(admin_token: str | None = ADMIN_TOKEN):
        app, db = build(sqlite_url, None, admin_token)
        return app.test_client(), db

    return make


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "   "])
def test_without_a_configured_token_the_admin_api_is_off(local, token):
    client, db = local(token)
    for path in ("/admin/events", "/admin/events/1", "/admin/devices", "/admin/calls/a:b/trace"):
        response = client.get(path, headers=AUTH)
        assert response.status_code == 404, path
        assert "no admin token is configured" in response.get_json()["error"]
    assert client.post("/admin/replay", json={"event_ids": [1]}, headers=AUTH).status_code == 404
    db.dispose()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": ADMIN_TOKEN},
        {"Cookie": f"callpush_dashboard={ADMIN_TOKEN}"},
    ],
)
def test_a_missing_or_wrong_token_is_401(local, headers):
    client, db = local()
    response = client.get("/admin/events", headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"error": "missing or invalid admin token"}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="callpush-admin"'
    replay = client.post("/admin/replay", json={"event_ids": [1]}, headers=headers)
    assert replay.status_code == 401
    db.dispose()


def test_the_right_token_is_accepted_and_answers_are_not_cached(local):
    client, db = local()
    response = client.get("/admin/events", headers={"Authorization": f"bearer  {ADMIN_TOKEN} "})
    assert response.status_code == 200 and response.get_json() == {"events": []}
    assert response.headers["Cache-Control"] == "no-store"
    db.dispose()


def test_token_helpers():
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer abc ") == "abc"
    assert bearer_token("Basic abc") == "" and bearer_token(None) == ""
    assert token_matches("abc", "abc") and not token_matches("abc", "abd")
    assert not token_matches("", "abc") and token_matches("ü", "ü")


# --- the event log ----------------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["ignored", "old", "accepted", "ring"]),
        ("?status=failed", ["ring"]),
        ("?type=call.accepted", ["accepted"]),
        ("?call=default:c1", ["accepted", "ring"]),
        ("?since=1h", ["accepted", "ring"]),
        ("?until=1h", ["ignored", "old"]),
        ("?since=1d&until=1h", ["ignored"]),
        ("?limit=1", ["ignored"]),
    ],
)
def test_list_events_with_filters(admin, query, expected):
    client, _, ids, _ = admin
    response = client.get(f"/admin/events{query}", headers=AUTH)
    assert response.status_code == 200, response.get_json()
    assert [e["id"] for e in response.get_json()["events"]] == sorted(
        (ids[name] for name in expected), reverse=True
    )


@pytest.mark.services
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?status=done", "status must be one of"),
        ("?since=yesterday", "since: 'yesterday' is neither a duration"),
        ("?until=soon", "until:"),
        ("?limit=0", "limit must be an integer from 1 to 1000"),
        ("?limit=ten", "limit must be"),
    ],
)
def test_list_events_rejects_bad_filters(admin, query, message):
    client, _, _, _ = admin
    response = client.get(f"/admin/events{query}", headers=AUTH)
    assert response.status_code == 400 and message in response.get_json()["error"]


@pytest.mark.services
def test_show_event(admin):
    client, _, ids, _ = admin
    document = client.get(f"/admin/events/{ids['ring']}", headers=AUTH).get_json()
    assert document["id"] == ids["ring"] and document["status"] == "failed"
    assert document["recipients"] == ["bob", "carol"]
    assert document["pushes"] == {"sent": 2, "failed": 1}
    failed = next(d for d in document["deliveries"] if d["status"] == "failed")
    assert failed["reason"] == "INTERNAL" and failed["status_code"] == 500
    assert failed["latency_ms"] == 250.0 and failed["token_hint"] == "bob-fc…xxxx"
    assert document["body"]["type"] == "call.ring"
    missing = client.get("/admin/events/999999", headers=AUTH)
    assert missing.status_code == 404 and missing.get_json() == {"error": "no event 999999"}


@pytest.mark.services
def test_devices_are_redacted(admin):
    client, _, ids, _ = admin
    response = client.get("/admin/devices?user_id=bob", headers=AUTH)
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    for token in (BOB_VOIP, BOB_FCM, CAROL_FCM):
        assert token not in text
    found = {d["id"]: d for d in response.get_json()["devices"]}
    assert set(found) == {ids["bob_voip"], ids["bob_fcm"]}
    assert found[ids["bob_voip"]]["token_hint"] == "b0b0b0…b0b0"
    assert found[ids["bob_voip"]]["voip"] is True
    everyone = client.get("/admin/devices?limit=2", headers=AUTH).get_json()["devices"]
    assert len(everyone) == 2


@pytest.mark.services
def test_call_trace(admin):
    client, _, _ids, _ = admin
    document = client.get("/admin/calls/default:c1/trace", headers=AUTH).get_json()
    assert document["call_cid"] == "default:c1"
    kinds = [e["kind"] for e in document["entries"]]
    assert kinds[:2] == ["webhook", "recipients"] and kinds.count("push") == 3
    failed = next(e for e in document["entries"] if e["kind"] == "push" and e["status"] == "failed")
    assert failed["latency_ms"] == 250.0 and failed["user_id"] == "bob"
    empty = client.get("/admin/calls/default:none/trace", headers=AUTH).get_json()
    assert empty == {"call_cid": "default:none", "entries": []}


# --- replay -----------------------------------------------------------------------------------


def ring_state(db: Database, event_id: int) -> tuple:
    with db.transaction() as session:
        row = session.get(WebhookEvent, event_id)
        statuses = sorted(
            session.scalars(select(Delivery.status).where(Delivery.event_id == event_id))
        )
        return row.status, row.replays, statuses


@pytest.mark.services
def test_replay_dry_run_changes_nothing(admin):
    client, db, ids, broker = admin
    before = ring_state(db, ids["ring"])
    response = client.post(
        "/admin/replay", json={"event_ids": [ids["ring"], 424242], "dry_run": True}, headers=AUTH
    )
    assert response.status_code == 200
    plan = response.get_json()
    assert plan["dry_run"] is True and plan["force"] is False
    assert plan["unknown"] == [424242] and plan["devices"] == 1
    (event,) = plan["events"]
    assert event["event_id"] == ids["ring"] and event["skipped"] == 2
    assert event["ring_over"] is False
    assert event["resend"] == [
        {
            "user_id": "bob",
            "platform": "fcm",
            "token_hint": "bob-fc…xxxx",
            "previous_status": "failed",
        }
    ]
    forced = client.post(
        "/admin/replay",
        json={"failed": True, "since": "1h", "dry_run": True, "force": True},
        headers=AUTH,
    ).get_json()
    assert [e["event_id"] for e in forced["events"]] == [ids["ring"]] and forced["devices"] == 3
    assert ring_state(db, ids["ring"]) == before
    assert broker.llen("bulk") == 0


@pytest.mark.services
def test_replay_reopens_and_queues_on_the_bulk_queue(admin):
    client, db, ids, broker = admin
    response = client.post(
        "/admin/replay", json={"failed": True, "since": "1h", "type": "call.ring"}, headers=AUTH
    )
    assert response.status_code == 202, response.get_json()
    assert response.get_json() == {
        "dry_run": False,
        "force": False,
        "reopened": [ids["ring"]],
        "unknown": [],
        "not_queued": [],
        "devices": 1,
    }
    assert ring_state(db, ids["ring"]) == ("received", 1, ["retry", "sent", "sent"])
    assert queued_tasks(broker, "bulk") == [("callpush.process_event", ids["ring"])]
    assert broker.llen("ring") == 0


@pytest.mark.services
def test_replay_lists_a_poison_ring_and_says_why_a_stale_event_is_not_pushed(admin):
    client, db, _ids, broker = admin
    seed = Seeder(db)
    poison = seed.event(
        ring_body("default:poison", "alice", ["bob"], timeout_ms=10**20), status="failed"
    )
    stale = seed.event(notification_body("default:st", "alice", ["bob"]), status="ignored")
    with db.transaction() as session:
        row = session.get(WebhookEvent, stale)
        row.event_created_at = row.received_at - timedelta(days=7)

    dry = client.post(
        "/admin/replay", json={"event_ids": [poison, stale], "dry_run": True}, headers=AUTH
    )
    assert dry.status_code == 200, dry.get_json()  # the poison ring was a 500
    plan = {e["event_id"]: e for e in dry.get_json()["events"]}
    assert plan[poison]["ring_over"] is False and plan[poison]["stale"] is None
    assert plan[stale]["stale"].startswith("stale: created 7d before it arrived")

    allowed = client.post(
        "/admin/replay",
        json={"event_ids": [stale], "dry_run": True, "allow_stale": True},
        headers=AUTH,
    ).get_json()
    assert allowed["allow_stale"] is True and allowed["events"][0]["stale"] is None
    replayed = client.post(
        "/admin/replay", json={"event_ids": [stale], "allow_stale": True}, headers=AUTH
    )
    assert replayed.status_code == 202 and replayed.get_json()["reopened"] == [stale]
    with db.transaction() as session:
        assert session.get(WebhookEvent, stale).allow_stale is True
    assert queued_tasks(broker, "bulk") == [("callpush.process_event", stale)]
    bad = client.post("/admin/replay", json={"event_ids": [stale], "allow_stale": 1}, headers=AUTH)
    assert bad.status_code == 400 and "allow_stale must be true or false" in bad.get_json()["error"]


@pytest.mark.services
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1], "the body must be a JSON object"),
        ({}, 'give "event_ids", or "failed": true'),
        ({"event_ids": [1], "failed": True, "since": "1h"}, "not both"),
        ({"event_ids": []}, "event_ids must be a non-empty list of integers"),
        ({"event_ids": None}, "event_ids must be a non-empty list of integers"),
        ({"event_ids": ["1"]}, "event_ids must be a non-empty list of integers"),
        ({"event_ids": [True]}, "event_ids must be a non-empty list of integers"),
        ({"event_ids": [1], "since": "1h"}, 'for "failed": true only'),
        ({"failed": True}, '"failed": true needs "since"'),
        ({"failed": True, "since": "someday"}, "since:"),
        ({"failed": True, "since": 3600}, "since must be a string"),
        ({"event_ids": [1], "dry_run": "yes"}, "dry_run must be true or false"),
        ({"event_ids": [1], "force": 1}, "force must be true or false"),
        ({"event_ids": [1], "ids": [2]}, "unknown field 'ids'"),
    ],
)
def test_replay_rejects_bad_bodies(admin, body, message):
    client, _db, _ids, _ = admin
    response = client.post("/admin/replay", data=json.dumps(body), headers=AUTH)
    assert response.status_code == 400, response.get_json()
    assert message in response.get_json()["error"]


def test_create_app_reads_the_admin_token_from_the_settings(sqlite_url, monkeypatch):
    """Once create_app wires the operations blueprints and settings.admin_token."""
    from webhook_app import create_app
    from worker.foundation.settings import Settings

    if "admin_token" not in Settings.model_fields:
        pytest.skip("settings.admin_token is not wired in yet")
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    upgrade_to_head(sqlite_url)
    db = Database(sqlite_url)
    for token, expected in ((ADMIN_TOKEN, 200), (None, 404)):
        settings = load_settings(database_url=sqlite_url, admin_token=token)
        client = create_app(settings, db=db, celery=create_celery(settings)).test_client()
        assert client.get("/admin/events", headers=AUTH).status_code == expected
        assert client.get("/openapi.json").status_code == 200
        login = client.get("/dashboard/login")
        assert login.status_code == expected and login.mimetype == "text/html"
    db.dispose()


# --- filtering by Stream app --------------------------------------------------------------------

DEV_APP = "dev-app"


@pytest.fixture
def two_apps(postgres_url, monkeypatch):
    """Production's world (seed_world, app ops-key) plus a dev app with the same call id and
    the same user ids."""
    from tests.ops_data import Seeder, ring_body

    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    settings = load_settings(
        database_url=postgres_url,
        apps=[
            {"api_key": API_KEY, "api_secrets": [SECRET]},
            {"api_key": DEV_APP, "api_secrets": ["dev-" + SECRET]},
        ],
    )
    upgrade_to_head(postgres_url)
    db = Database(postgres_url)
    ids = seed_world(db)
    seed = Seeder(db)
    ids["dev_bob"] = seed.device("bob", "apns", "de" * 32, voip=True, api_key=DEV_APP)
    ids["dev_ring"] = seed.event(
        ring_body("default:c1", "alice", ["bob"]), status="failed", api_key=DEV_APP
    )
    seed.delivery(ids["dev_ring"], ids["dev_bob"], "failed", user_id="bob", reason="dev-only")
    yield ops_app(settings, db, create_celery(settings)).test_client(), ids
    db.dispose()


@pytest.mark.services
def test_the_admin_api_filters_by_app(two_apps):
    client, ids = two_apps

    def get(path: str) -> dict:
        response = client.get(path, headers=AUTH)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    dev_events = get(f"/admin/events?app={DEV_APP}")["events"]
    assert [(e["id"], e["api_key"]) for e in dev_events] == [(ids["dev_ring"], DEV_APP)]
    prod_events = get(f"/admin/events?app={API_KEY}&call=default:c1")["events"]
    assert sorted(e["id"] for e in prod_events) == sorted([ids["ring"], ids["accepted"]])
    assert len(get("/admin/events?call=default:c1")["events"]) == 3  # every app's

    dev_devices = get(f"/admin/devices?app={DEV_APP}&user_id=bob")["devices"]
    assert [(d["id"], d["api_key"]) for d in dev_devices] == [(ids["dev_bob"], DEV_APP)]
    prod_devices = get(f"/admin/devices?app={API_KEY}&user_id=bob")["devices"]
    assert {d["id"] for d in prod_devices} == {ids["bob_voip"], ids["bob_fcm"]}

    dev_trace = get(f"/admin/calls/default:c1/trace?app={DEV_APP}")["entries"]
    assert {e["event_id"] for e in dev_trace} == {ids["dev_ring"]}
    assert {e["api_key"] for e in dev_trace} == {DEV_APP}
    everyone = get("/admin/calls/default:c1/trace")["entries"]
    assert {e["event_id"] for e in everyone} == {ids["ring"], ids["accepted"], ids["dev_ring"]}

    dry = client.post(
        "/admin/replay",
        json={"failed": True, "since": "1h", "app": DEV_APP, "dry_run": True},
        headers=AUTH,
    ).get_json()
    assert [e["event_id"] for e in dry["events"]] == [ids["dev_ring"]]

    for path in (
        "/admin/events?app=nope",
        "/admin/devices?app=nope",
        "/admin/calls/x:y/trace?app=n",
    ):
        response = client.get(path, headers=AUTH)
        assert response.status_code == 404, path
        assert response.get_json() == {
            "error": "no configured Stream app has this API key",
            "field": "app",
        }
    bad_replay = client.post("/admin/replay", json={"event_ids": [1], "app": DEV_APP}, headers=AUTH)
    assert bad_replay.status_code == 400


@pytest.mark.services
def test_the_dashboard_filters_by_app(two_apps):
    from tests.ops_data import ADMIN_TOKEN as TOKEN

    client, ids = two_apps
    login = client.post("/dashboard/login", data={"token": TOKEN})
    assert login.status_code == 302
    page = client.get(f"/dashboard/?app={DEV_APP}").get_data(as_text=True)
    assert f'<option value="{DEV_APP}" selected>' in page
    assert f"/dashboard/events/{ids['dev_ring']}" in page
    assert f'/dashboard/events/{ids["ring"]}"' not in page
    everyone = client.get("/dashboard/").get_data(as_text=True)
    assert f'/dashboard/events/{ids["ring"]}"' in everyone
    unknown = client.get("/dashboard/?app=nope").get_data(as_text=True)
    assert "not the API key of a configured Stream app" in unknown
    assert "No events match." in unknown

    trace = client.get(f"/dashboard/calls/default:c1?app={DEV_APP}").get_data(as_text=True)
    assert f"/dashboard/events/{ids['dev_ring']}" in trace
    assert f'/dashboard/events/{ids["accepted"]}"' not in trace
    both = client.get("/dashboard/calls/default:c1").get_data(as_text=True)
    assert "Several Stream apps have a call with this id" in both


# --- odd input and odd stored bodies: a 4xx naming the field, never a 5xx ---------------------


@pytest.mark.services
@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        ("/admin/events?type=%00", 400, "type"),
        ("/admin/events?call=a%00", 400, "call"),
        ("/admin/events?limit=²", 400, "limit"),
        ("/admin/events?limit=" + "1" * 5000, 400, "limit"),
        ("/admin/events?limit=-1", 400, "limit"),
        ("/admin/events?since=0001-01-01T00:00:00%2B14:00", 400, "since"),
        ("/admin/events?until=9999-12-31T23:59:59-14:00", 400, "until"),
        ("/admin/events?since=" + "9" * 5000 + "w", 400, "since"),
        ("/admin/events?%00=x", 200, None),  # unknown fields are ignored
        ("/admin/events?limit=", 400, "limit"),
        ("/admin/events?type=call.ring&type=call.missed", 400, "type"),
        ("/admin/devices?user_id=%00", 400, "user_id"),
        ("/admin/devices?limit=١٢", 400, "limit"),  # Arabic-Indic digits: int() takes them
        ("/admin/calls/a%00b/trace", 400, "call_cid"),
        ("/admin/events/99999999999999999999999", 404, None),
        ("/admin/events/9223372036854775808", 404, None),
    ],
)
def test_odd_queries_and_paths(admin, path, status, field):
    client, _, _, _ = admin
    response = client.get(path, headers=AUTH)
    assert response.status_code == status, response.get_json()
    assert response.get_json().get("field") == field


@pytest.mark.services
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"event_ids": [99999999999999999999999]}', "event_ids"),
        ('{"event_ids": [0]}', "event_ids"),
        ('{"event_ids": [1.5]}', "event_ids"),
        ('{"failed": true, "since": "1h", "type": "\\u0000"}', "type"),
        ('{"failed": true, "since": "1h", "type": "\\ud800"}', "type"),
        ('{"failed": true, "since": "0001-01-01T00:00:00+14:00"}', "since"),
        ('{"\\ud800": 1}', "body"),
        ("[" * 100_000 + "]" * 100_000, "body"),
        ('{"event_ids": [1], "dry_run": true, "x": ' + "[" * 50 + "]" * 50 + "}", "x"),
    ],
)
def test_odd_replay_bodies_get_a_400_naming_the_field_and_change_nothing(admin, body, field):
    client, db, ids, broker = admin
    before = ring_state(db, ids["ring"])
    response = client.post("/admin/replay", data=body, headers=AUTH)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["field"] == field
    assert ring_state(db, ids["ring"]) == before and broker.llen("bulk") == 0


@pytest.mark.services
def test_odd_stored_bodies_are_answered(admin):
    client, db, _, _ = admin
    seed = Seeder(db)
    surrogate = seed.event(ring_body("default:odd", "alice", ["bob"]))
    deep = seed.event({"type": "call.updated", "call_cid": "default:odd"})
    with db.transaction() as session:
        session.get(WebhookEvent, surrogate).body = '{"type": "call.ring", "x": "\\udc80"}'
        session.get(WebhookEvent, deep).body = "[" * 100_000 + "]" * 100_000
    odd = client.get(f"/admin/events/{surrogate}", headers=AUTH)
    assert odd.status_code == 200 and odd.get_json()["body"]["x"] == "\udc80"
    assert b"\\udc80" in odd.get_data()  # escaped in the JSON text
    too_deep = client.get(f"/admin/events/{deep}", headers=AUTH)
    assert too_deep.status_code == 200 and too_deep.get_json()["body"].startswith("[[[")
    trace = client.get("/admin/calls/default:odd/trace", headers=AUTH)
    assert trace.status_code == 200 and len(trace.get_json()["entries"]) == 2


# --- throttling -------------------------------------------------------------------------------


def test_failed_tokens_are_throttled_per_client_with_retry_after(sqlite_url, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    settings = load_settings(
        database_url=sqlite_url, admin_throttle={"max_failures": 5, "window_seconds": 60}
    )
    upgrade_to_head(sqlite_url)
    db = Database(sqlite_url)
    app = ops_app(settings, db, create_celery(settings))
    guesser, script = app.test_client(), app.test_client()
    guesser.environ_base["REMOTE_ADDR"] = "2001:db8:aa:bb::1"
    wrong = {"Authorization": "Bearer not-the-token"}
    assert [guesser.get("/admin/events", headers=wrong).status_code for _ in range(5)] == [401] * 5
    refused = guesser.get("/admin/events", headers=AUTH)  # the right token: still refused
    assert refused.status_code == 429
    assert refused.get_json() == {"error": "too many failed attempts: retry later"}
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Another address of the same /64 is the same client; another network is not.
    guesser.environ_base["REMOTE_ADDR"] = "2001:db8:aa:bb::99"
    assert guesser.get("/admin/events", headers=AUTH).status_code == 429
    script.environ_base["REMOTE_ADDR"] = "2001:db8:aa:cc::1"
    assert script.get("/admin/events", headers=AUTH).status_code == 200
    db.dispose()


# --- reach: every recipient accounted for -----------------------------------------------------


def conforms(document: object, schema: dict) -> None:
    """``document`` against a schema of the served OpenAPI document (3.1: JSON Schema 2020-12)."""
    jsonschema.Draft202012Validator(
        {**schema, "components": shared_document()["components"]}
    ).validate(document)


def test_a_ring_that_rang_nobody_in_the_json(local):
    client, db = local()
    seed = Seeder(db)
    ring = seed.event(ring_body("default:c6", "alice", ["bob"]), reason="rang nobody")
    seed.skipped_recipient(ring, "bob", "call pushes muted until 2026-12-01T00:00:00Z")
    reach = {
        "recipients": 1,
        "reached": 0,
        "unconfirmed": 0,
        "summary": "rang nobody (1 recipient)",
    }

    detail = client.get(f"/admin/events/{ring}", headers=AUTH).get_json()
    conforms(detail, {"$ref": "#/components/schemas/EventDetail"})
    assert detail["reach"] == reach
    (skipped,) = detail["deliveries"]
    assert (skipped["device_id"], skipped["platform"], skipped["kind"]) == (None, "", "")
    assert skipped["status"] == "skipped"
    assert skipped["reason"] == "call pushes muted until 2026-12-01T00:00:00Z"

    listed = client.get("/admin/events?call=default:c6", headers=AUTH).get_json()
    conforms(
        listed["events"], {"type": "array", "items": {"$ref": "#/components/schemas/EventSummary"}}
    )
    assert [e["reach"] for e in listed["events"]] == [reach]

    trace = client.get("/admin/calls/default:c6/trace", headers=AUTH).get_json()
    conforms(
        trace["entries"], {"type": "array", "items": {"$ref": "#/components/schemas/TraceEntry"}}
    )
    assert trace["entries"][0]["reach"] == reach
