"""The receiver against a real SQLite inbox and a real (in-memory) Celery broker, no worker:
what it answers, what it stores and what it enqueues."""

from __future__ import annotations

import gzip
import json

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import sessionmaker

from webhook_app import create_app
from worker import sample_events
from worker.celery_app import create_celery
from worker.settings import load_settings
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import WebhookEvent
from worker.webhook_signature import expected_signature

API_KEY = "test-key"
SECRET = "test-secret-0123456789abcdef0123456789"
OLD_SECRET = "old-secret-0123456789abcdef0123456789"


@pytest.fixture
def receiver(sqlite_url, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    settings = load_settings(
        database_url=sqlite_url,
        apps=[{"api_key": API_KEY, "api_secrets": [SECRET, OLD_SECRET]}],
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


def test_ring_without_call_cid_is_400(receiver):
    client, db, _celery = receiver
    body, headers = signed({"type": "call.ring", "created_at": "2026-01-01T00:00:00Z"})
    assert post(client, body, headers).status_code == 400
    assert stored_count(db) == 0


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
