"""A signed call.ring over real HTTP, through the real processes, to the fake APNs and FCM.

Production: `callpush web` (gunicorn) + `callpush worker` (Celery prefork) on real PostgreSQL,
with Redis and with RabbitMQ as the broker.  Embedded: `callpush run` on SQLite with the
in-memory broker.  Both deliver through the real aioapns (TLS + HTTP/2) and the real pyfcm
(with its service-account OAuth flow).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time

import pytest
import requests

from tests.e2e.processes import free_port, provider_env, run_cli, running, stop, wait_until
from worker.delivery.payloads import RECEIPT_ID_KEY
from worker.stream import samples as sample_events

pytestmark = pytest.mark.timeout(180)

API_KEY = "e2e-key"
SECRET = "e2e-secret-0123456789abcdef0123456789abcdef"
VOIP_TOKEN = "ab" * 32
ANDROID_TOKEN = "android-token-bob-" + "x" * 40
STREAM_KEYS = {
    "sender",
    "type",
    "version",
    "call_cid",
    "call_display_name",
    "created_by_id",
    "created_by_display_name",
    "receiver_id",
    "video",
}


def register_devices(env, cwd):
    run_cli(
        ["devices", "add", "--user", "bob", "--platform", "apns", "--token", VOIP_TOKEN, "--voip"],
        env,
        cwd,
    )
    run_cli(
        ["devices", "add", "--user", "bob", "--platform", "fcm", "--token", ANDROID_TOKEN], env, cwd
    )
    listed = run_cli(["devices", "list", "--user", "bob"], env, cwd).stdout
    assert VOIP_TOKEN not in listed and ANDROID_TOKEN not in listed  # never whole tokens
    assert listed.count("bob") == 2


def post_ring(port, event, webhook_id=None):
    body, headers = sample_events.signed_request(
        event, api_key=API_KEY, secret=SECRET, webhook_id=webhook_id
    )
    return (
        requests.post(
            f"http://127.0.0.1:{port}/webhooks/stream", data=body, headers=headers, timeout=10
        ),
        headers,
    )


def assert_exact_pushes(fake_apns, fake_fcm, event):
    (voip,) = [r for r in fake_apns.received if r["token"] == VOIP_TOKEN]
    headers = voip["headers"]
    assert headers["apns-push-type"] == "voip"
    assert headers["apns-topic"] == "com.example.callpush.voip"
    assert headers["apns-priority"] == "10"
    expiration = int(headers["apns-expiration"])
    assert time.time() - 5 < expiration <= time.time() + 31  # no longer than the ring
    assert headers["authorization"].startswith("bearer ")
    assert headers[":path"] == f"/3/device/{VOIP_TOKEN}"
    stream = voip["payload"]["stream"]
    assert set(stream) >= STREAM_KEYS
    assert stream["sender"] == "stream.video" and stream["type"] == "call.ring"
    assert stream["version"] == "v2" and stream["call_cid"] == event["call_cid"]
    assert stream["created_by_id"] == "alice" and stream["created_by_display_name"] == "Alice"
    assert stream["receiver_id"] == "bob" and stream["video"] == "true"
    assert voip["payload"]["aps"]["alert"]["title"] == "Alice is calling you"
    # The receipt id rides beside `aps` and `stream`, outside what the SDKs read.
    assert set(voip["payload"]) == {"aps", "stream", RECEIPT_ID_KEY}

    (android,) = [r for r in fake_fcm.received if r["message"]["token"] == ANDROID_TOKEN]
    message = android["message"]
    assert "notification" not in message  # data-only: Stream's Android SDK reads data
    assert set(message["data"]) == STREAM_KEYS | {RECEIPT_ID_KEY}
    receipt_ids = {voip["payload"][RECEIPT_ID_KEY], message["data"][RECEIPT_ID_KEY]}
    assert len(receipt_ids) == 2 and all(re.fullmatch("[0-9a-f]{32}", r) for r in receipt_ids)
    assert message["data"]["video"] == "true" and message["data"]["receiver_id"] == "bob"
    assert message["android"]["priority"] == "high"
    assert fake_fcm.token_requests, "the service-account OAuth flow ran against the fake"


@pytest.mark.services
def test_production_stack_rings_bob_once(
    tmp_path, postgres_url, broker_url, fake_apns, apns_settings, fake_fcm, fcm_settings
):
    port = free_port()
    env = provider_env(apns_settings, fcm_settings) | {
        "CALLPUSH_DATABASE_URL": postgres_url,
        "CALLPUSH_BROKER_URL": broker_url,
        "CALLPUSH_STREAM_API_KEY": API_KEY,
        "CALLPUSH_STREAM_API_SECRET": f"rotated-out-secret-xyz,{SECRET}",
    }
    run_cli(["db", "upgrade"], env, tmp_path)
    register_devices(env, tmp_path)
    web = ["web", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    worker = ["worker", "--queues", "ring,bulk", "--concurrency", "2"]
    with (
        running(web, env, tmp_path, "web", wait_port=port),
        running(worker, env, tmp_path, "worker"),
    ):
        event = sample_events.ring_event("alice", ["bob"])
        response, headers = post_ring(port, event)
        assert response.status_code == 202, response.text
        wait_until(
            lambda: fake_apns.count >= 1 and len(fake_fcm.received) >= 1, 60, message="pushes"
        )
        assert_exact_pushes(fake_apns, fake_fcm, event)

        # Stream retries the same webhook: 2xx, and no second push.
        retry, _ = post_ring(port, event, webhook_id=headers["X-Webhook-Id"])
        assert retry.status_code == 200 and retry.json()["status"] == "duplicate"
        # A later ring proves the worker is alive, so the retry really was not processed.
        second = sample_events.ring_event("alice", ["bob"])
        post_ring(port, second)
        wait_until(lambda: fake_apns.count >= 2, 30, message="second ring")
        calls = [r["payload"]["stream"]["call_cid"] for r in fake_apns.received]
        assert calls.count(event["call_cid"]) == 1 and calls.count(second["call_cid"]) == 1


def embedded_env(tmp_path, apns_settings, fcm_settings):
    return provider_env(apns_settings, fcm_settings) | {
        "CALLPUSH_DATABASE_URL": f"sqlite:///{tmp_path / 'callpush.db'}",
        "CALLPUSH_STREAM_API_KEY": API_KEY,
        "CALLPUSH_STREAM_API_SECRET": SECRET,
    }


def test_embedded_mode_rings_bob_once(tmp_path, fake_apns, apns_settings, fake_fcm, fcm_settings):
    port = free_port()
    env = embedded_env(tmp_path, apns_settings, fcm_settings)
    register_devices(env, tmp_path)
    with running(["run", "--port", str(port)], env, tmp_path, "run", wait_port=port):
        event = sample_events.ring_event("alice", ["bob"])
        response, headers = post_ring(port, event)
        assert response.status_code == 202, response.text
        wait_until(
            lambda: fake_apns.count >= 1 and len(fake_fcm.received) >= 1, 30, message="pushes"
        )
        assert_exact_pushes(fake_apns, fake_fcm, event)
        retry, _ = post_ring(port, event, webhook_id=headers["X-Webhook-Id"])
        assert retry.json()["status"] == "duplicate"
        second = sample_events.ring_event("alice", ["bob"])
        post_ring(port, second)
        wait_until(lambda: fake_apns.count >= 2, 30, message="second ring")
        assert fake_apns.count == 2


def event_statuses(db_path) -> dict[str, int]:
    with sqlite3.connect(db_path) as conn:
        return dict(conn.execute("select status, count(*) from webhook_events group by status"))


def unconfirmed_calls(db_path, platform) -> set[str]:
    """Calls whose ring push to ``platform`` is recorded unconfirmed (a worker killed mid-send)."""
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "select e.call_cid from deliveries d join webhook_events e on e.id = d.event_id"
            " where d.status = 'unconfirmed' and d.platform = ?",
            (platform,),
        )
        return {cid for (cid,) in rows}


def test_embedded_mode_loses_nothing_accepted_when_killed(
    tmp_path, fake_apns, apns_settings, fake_fcm, fcm_settings
):
    """kill -9 right after the last 2xx; on restart every accepted ring is delivered, except a
    push the killed process may already have written (claimed, no answer recorded): that one
    is recorded unconfirmed and never sent twice (README: guarantees)."""
    import signal

    port = free_port()
    env = embedded_env(tmp_path, apns_settings, fcm_settings)
    register_devices(env, tmp_path)
    events = [sample_events.ring_event("alice", ["bob"]) for _ in range(30)]
    with running(["run", "--port", str(port)], env, tmp_path, "run-1", wait_port=port) as first:
        for event in events:
            assert post_ring(port, event)[0].status_code == 202
        stop(first, signal.SIGKILL)
    db_path = tmp_path / "callpush.db"
    with running(["run", "--port", str(port)], env, tmp_path, "run-2", wait_port=port):
        wait_until(
            lambda: event_statuses(db_path).get("processed") == len(events),
            60,
            message="every accepted event processed after the restart",
        )
    accepted = {e["call_cid"] for e in events}
    apns_calls = [r["payload"]["stream"]["call_cid"] for r in fake_apns.received]
    fcm_calls = [r["message"]["data"]["call_cid"] for r in fake_fcm.received]
    for calls, platform in ((apns_calls, "apns"), (fcm_calls, "fcm")):
        assert len(calls) == len(set(calls)), f"a {platform} ring went out twice"
        unconfirmed = unconfirmed_calls(db_path, platform)
        # At most one per thread of the killed process (`callpush run --concurrency`).
        assert len(unconfirmed) <= 16
        assert set(calls) | unconfirmed == accepted


def test_embedded_mode_picks_up_inbox_rows_left_unprocessed(
    tmp_path, fake_apns, apns_settings, fake_fcm, fcm_settings
):
    """Rows committed by the receiver of a process that died before queueing them."""
    port = free_port()
    env = embedded_env(tmp_path, apns_settings, fcm_settings)
    register_devices(env, tmp_path)
    event = sample_events.ring_event("alice", ["bob"])
    with sqlite3.connect(tmp_path / "callpush.db") as conn:
        conn.execute(
            "insert into webhook_events (webhook_id, api_key, event_type, call_cid, received_at,"
            " attempt, body, status, processing_attempts, replay_force, replays)"
            " values (?, ?, ?, ?, ?, 1, ?, 'received', 0, 0, 0)",
            (
                "left-behind",
                API_KEY,
                "call.ring",
                event["call_cid"],
                time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime()),
                json.dumps(event),
            ),
        )
    with running(["run", "--port", str(port)], env, tmp_path, "run", wait_port=port):
        wait_until(
            lambda: fake_apns.count >= 1 and len(fake_fcm.received) >= 1, 30, message="pushes"
        )
    assert_exact_pushes(fake_apns, fake_fcm, event)
