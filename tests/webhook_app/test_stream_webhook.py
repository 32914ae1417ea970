"""The receiver against a real SQLite inbox and a real (in-memory) Celery broker, no worker:
what it answers, what it stores and what it enqueues."""

from __future__ import annotations

import gzip
import json
import logging
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import sessionmaker

from webhook_app import create_app
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import WebhookEvent
from worker.stream import samples as sample_events
from worker.stream.signature import expected_signature

API_KEY = "test-key"
SECRET = "test-secret-0123456789abcdef0123456789"
OLD_SECRET = "old-secret-0123456789abcdef0123456789"
# Stream's Python SDK test fixture, byte for byte, with its secret and signature
# (GetStream/stream-py tests/assets/webhooks/call.session_started/, CANONICAL_TEST_SECRET).
SDK_KEY = "sdk-fixture-key"
SDK_SECRET = "test_secret_do_not_use_in_production"
SDK_BODY = b'{"type":"call.session_started","created_at":1778198400000000000}'
SDK_SIGNATURE = "9c65b50bfdf1e8205ba673103a21d3fda71d6969f9003c0f2cdaf43467f6ab07"


@pytest.fixture
def receiver(sqlite_url, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    settings = load_settings(
        database_url=sqlite_url,
        apps=[
            {"api_key": API_KEY, "api_secrets": [SECRET, OLD_SECRET]},
            {"api_key": SDK_KEY, "api_secrets": [SDK_SECRET]},
        ],
        max_body_bytes=64 * 1024,
    )
    upgrade_to_head(sqlite_url)
    db = Database(sqlite_url)
    celery = create_celery(settings)
    purge_queues(celery)
    app = create_app(settings, db=db, celery=celery)
    yield app.test_client(), db, celery
    db.dispose()


def queued(celery, queue):
    with celery.connection_for_read() as conn:
        return conn.default_channel.queue_declare(queue).message_count


def purge_queues(celery):
    # kombu's memory transport keeps its queues per process, not per Celery app.
    with celery.connection_for_write() as conn:
        for queue in ("ring", "bulk"):
            conn.default_channel.queue_declare(queue)
            conn.default_channel.queue_purge(queue)


def stored_count(db):
    with db.transaction() as session:
        return session.scalar(select(func.count()).select_from(WebhookEvent))


def post(client, body: bytes, headers: dict[str, str]):
    return client.post("/webhooks/stream", data=body, headers=headers)


def signed(event, secret=SECRET, **kwargs):
    return sample_events.signed_request(event, api_key=API_KEY, secret=secret, **kwargs)


def test_valid_ring_is_stored_then_enqueued_on_the_ring_queue(receiver):
    client, db, celery = receiver
    body, headers = signed(sample_events.ring_event("alice", ["bob"]))
    response = post(client, body, headers)
    assert response.status_code == 202
    assert response.json["status"] == "accepted"
    assert queued(celery, "ring") == 1 and queued(celery, "bulk") == 0
    with db.transaction() as session:
        row = session.get(WebhookEvent, response.json["event_id"])
        assert row.status == "received" and row.event_type == "call.ring"
        assert row.webhook_id == headers["X-Webhook-Id"]
        assert json.loads(row.body)["call_cid"].startswith("default:")


def test_duplicate_webhook_id_is_acknowledged_and_not_enqueued_again(receiver):
    client, db, celery = receiver
    body, headers = signed(sample_events.ring_event("alice", ["bob"]))
    first = post(client, body, headers)
    retry = post(client, body, headers | {"X-Webhook-Attempt": "2"})
    assert retry.status_code == 200 and retry.json["status"] == "duplicate"
    assert retry.json["event_id"] == first.json["event_id"]
    assert queued(celery, "ring") == 1
    assert stored_count(db) == 1


def test_gzipped_body_is_verified_over_the_uncompressed_json(receiver):
    client, _db, celery = receiver
    body, headers = signed(sample_events.ring_event("alice", ["bob"]))
    response = post(client, gzip.compress(body), headers)
    assert response.status_code == 202
    assert queued(celery, "ring") == 1


def test_a_rotated_out_secret_still_verifies(receiver):
    client, _db, _celery = receiver
    body, headers = signed(sample_events.ring_event("alice", ["bob"]), secret=OLD_SECRET)
    assert post(client, body, headers).status_code == 202


def test_ignored_types_are_recorded_and_not_enqueued(receiver):
    client, db, celery = receiver
    body, headers = signed({"type": "user.updated", "created_at": 1778198400000000000})
    response = post(client, body, headers)
    assert response.status_code == 200 and response.json["status"] == "ignored"
    assert queued(celery, "ring") == 0 and queued(celery, "bulk") == 0
    assert stored_count(db) == 1


def test_ring_stopping_events_are_stored_as_processed(receiver):
    client, _db, celery = receiver
    body, headers = signed(sample_events.call_event("call.accepted", "default:abc", "bob"))
    response = post(client, body, headers)
    assert response.status_code == 200 and response.json["status"] == "processed"
    assert queued(celery, "ring") == 0


@pytest.mark.parametrize(
    ("mutate", "status", "message"),
    [
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "X-Signature"}), 401, "X-Signature"),
        (lambda b, h: (b, h | {"X-Signature": "0" * 64}), 401, "signature"),
        (lambda b, h: (b + b" ", h), 401, "signature"),
        (lambda b, h: (b, h | {"X-Api-Key": "someone-else"}), 401, "X-Api-Key"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "X-Api-Key"}), 401, "X-Api-Key"),
    ],
)
def test_bad_credentials_are_refused_and_nothing_is_stored(receiver, mutate, status, message):
    client, db, celery = receiver
    body, headers = mutate(*signed(sample_events.ring_event("alice", ["bob"])))
    response = post(client, body, headers)
    assert response.status_code == status
    assert message in response.json["error"]
    assert stored_count(db) == 0 and queued(celery, "ring") == 0


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[]", b'"a string"', b'{"no_type": 1}', b'{"type": 5}', b"\xff\xfe"],
)
def test_malformed_json_is_400(receiver, raw):
    client, db, celery = receiver
    headers = {"X-Api-Key": API_KEY, "X-Signature": expected_signature(raw, SECRET)}
    response = post(client, raw, headers)
    assert response.status_code == 400
    assert "error" in response.json
    assert stored_count(db) == 0 and queued(celery, "ring") == 0


def test_ring_without_call_cid_is_stored_failed_with_a_2xx(receiver):
    # Stream would retry a 5xx in vain, and a 400 would leave no trace of what Stream sent.
    client, db, celery = receiver
    body, headers = signed({"type": "call.ring", "created_at": time.time_ns()})
    response = post(client, body, headers)
    assert response.status_code == 200
    assert response.json["status"] == "failed"
    assert response.json["reason"] == (
        "cannot act on this call.ring event: the event has no valid 'call_cid'"
    )
    assert queued(celery, "ring") == 0
    with db.transaction() as session:
        row = session.get(WebhookEvent, response.json["event_id"])
        assert (row.status, row.status_reason) == ("failed", response.json["reason"])


def test_body_over_the_cap_is_413(receiver):
    client, db, celery = receiver
    event = sample_events.ring_event("alice", ["bob"])
    event["padding"] = "x" * (70 * 1024)
    body, headers = signed(event)
    response = post(client, body, headers)
    assert response.status_code == 413
    assert "error" in response.json
    assert stored_count(db) == 0 and queued(celery, "ring") == 0


def test_gzip_bomb_is_413(receiver):
    client, db, _celery = receiver
    raw = json.dumps({"type": "call.ring", "pad": " " * 10_000_000}).encode()
    response = post(
        client,
        gzip.compress(raw),
        {"X-Api-Key": API_KEY, "X-Signature": expected_signature(raw, SECRET)},
    )
    assert response.status_code == 413
    assert stored_count(db) == 0


def test_database_down_is_503_never_2xx(receiver, monkeypatch):
    client, db, celery = receiver
    unreachable = create_engine("sqlite:////nonexistent-dir/callpush.db")
    monkeypatch.setattr(db, "sessions", sessionmaker(unreachable))
    body, headers = signed(sample_events.ring_event("alice", ["bob"]))
    response = post(client, body, headers)
    assert response.status_code == 503
    assert queued(celery, "ring") == 0


def test_unknown_route_answers_json(receiver):
    client, _db, _celery = receiver
    response = client.get("/webhooks/stream")
    assert response.status_code == 405 and "error" in response.json


# --- every Stream event is stored; only non-events are refused ---------------------------------


def test_streams_own_sdk_fixture_is_stored_failed_not_refused(receiver):
    client, db, celery = receiver
    headers = {"X-Api-Key": SDK_KEY, "X-Signature": SDK_SIGNATURE, "X-Webhook-Id": "sdk-1"}
    response = post(client, SDK_BODY, headers)
    assert response.status_code == 200 and response.json["status"] == "failed"
    assert queued(celery, "bulk") == 0
    with db.transaction() as session:
        row = session.get(WebhookEvent, response.json["event_id"])
    assert row.event_type == "call.session_started" and row.body == SDK_BODY.decode()
    assert row.status_reason == (
        "cannot act on this call.session_started event: the event has no valid 'call_cid'"
    )
    assert row.event_created_at == datetime(2026, 5, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"type":"call.ring","created_at":NaN}', "NaN is not JSON"),
        (b'{"type":"call.ring","x":-Infinity}', "-Infinity is not JSON"),
        ('{"type":"call.ring"}'.encode("utf-16"), "not UTF-8"),
        (b'{"type":"call.\\ud800"}', "'type' is not valid Unicode"),
        (b'{"type":"call.ring\\u0000"}', "'type' is not valid Unicode"),
    ],
)
def test_bodies_that_are_not_events_are_400_naming_why(receiver, raw, message):
    client, db, _celery = receiver
    headers = {"X-Api-Key": API_KEY, "X-Signature": expected_signature(raw, SECRET)}
    response = post(client, raw, headers)
    assert response.status_code == 400 and message in response.json["error"]
    assert stored_count(db) == 0


def test_odd_values_are_stored_safely(receiver):
    client, db, _celery = receiver
    event = sample_events.ring_event("alice", ["bob"])
    event["session_id"] = "s" * 500
    event["call"]["settings"]["ring"]["incoming_call_timeout_ms"] = 10**20
    body, headers = signed(event)
    headers |= {"X-Webhook-Attempt": str(2**40), "X-Webhook-Id": "w" * 300}
    response = post(client, body, headers)
    assert response.status_code == 202
    with db.transaction() as session:
        row = session.get(WebhookEvent, response.json["event_id"])
    assert row.attempt == 2**31 - 1 and row.session_id == "s" * 128
    assert row.webhook_id.startswith("id-sha256:")

    long_cid = sample_events.ring_event("alice", ["bob"], call_id="x" * 300)
    response = post(client, *signed(long_cid, webhook_id="w" * 300 + "-other"))
    assert response.status_code == 200 and response.json["status"] == "failed"
    assert "'call_cid' is longer than 255 characters" in response.json["reason"]


@pytest.mark.parametrize("attempt", ["²", "١٢", "-1", "abc", "9" * 400])
def test_odd_attempt_headers_count_as_the_first(receiver, attempt):
    client, db, _celery = receiver
    body, headers = signed(sample_events.call_event("call.ended", "default:a"))
    response = post(client, body, headers | {"X-Webhook-Attempt": attempt})
    assert response.status_code == 200
    with db.transaction() as session:
        assert session.get(WebhookEvent, response.json["event_id"]).attempt == 1


# --- replays and stale events -----------------------------------------------------------------


def test_a_replayed_body_with_a_new_webhook_id_is_a_duplicate(receiver):
    client, db, celery = receiver
    event = sample_events.ring_event("alice", ["bob"])
    first = post(client, *signed(event))
    answers = [post(client, *signed(event)) for _ in range(6)]  # a fresh X-Webhook-Id each
    assert first.status_code == 202
    assert {(a.status_code, a.json["status"]) for a in answers} == {(200, "duplicate")}
    assert {a.json["event_id"] for a in answers} == {first.json["event_id"]}
    assert stored_count(db) == 1 and queued(celery, "ring") == 1


def test_a_stale_call_missed_is_stored_ignored_and_not_queued(receiver, caplog):
    client, db, celery = receiver
    event = sample_events.member_event("call.missed", "alice", ["bob"])
    event["created_at"] = (datetime.now(UTC) - timedelta(days=7)).isoformat()
    with caplog.at_level(logging.WARNING, logger="callpush"):
        response = post(client, *signed(event))
    # An operator sees it: a replayed capture, or this host's clock running fast.
    assert any("not pushed: stale: created 7d" in r.getMessage() for r in caplog.records)
    assert response.status_code == 200 and response.json["status"] == "ignored"
    assert response.json["reason"].startswith("stale: created 7d before it arrived")
    assert queued(celery, "bulk") == 0
    with db.transaction() as session:
        row = session.get(WebhookEvent, response.json["event_id"])
        assert row.status == "ignored" and row.status_reason == response.json["reason"]


def test_a_fresh_ring_in_a_local_offset_with_a_fraction_is_accepted(receiver):
    client, db, celery = receiver
    event = sample_events.ring_event("alice", ["bob"])
    local = datetime.now(UTC).astimezone(timezone(timedelta(hours=-5)))
    event["created_at"] = local.isoformat(timespec="microseconds")  # ...01:55:20.123456-05:00
    response = post(client, *signed(event))
    assert response.status_code == 202 and queued(celery, "ring") == 1
    with db.transaction() as session:
        row = session.get(WebhookEvent, response.json["event_id"])
        assert abs(row.event_created_at - local) < timedelta(milliseconds=1)


@pytest.mark.services
def test_a_value_the_database_refuses_is_400_not_503(postgres_url, monkeypatch):
    # An API key longer than its column (64): every insert is refused by PostgreSQL.  That is
    # no outage: a 503 would make Stream retry in vain and page someone for the database.
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    key = "k" * 80
    settings = load_settings(
        database_url=postgres_url, apps=[{"api_key": key, "api_secrets": [SECRET]}]
    )
    upgrade_to_head(postgres_url)
    db = Database(postgres_url)
    try:
        client = create_app(settings, db=db, celery=create_celery(settings)).test_client()
        body, headers = sample_events.signed_request(
            sample_events.call_event("call.ended", "default:a"), api_key=key, secret=SECRET
        )
        response = post(client, body, headers)
        assert response.status_code == 400
        assert response.json["error"] == "the event cannot be stored: DataError"
    finally:
        db.dispose()
