"""Intake end to end on the production processes: `callpush web` (gunicorn, two processes) and
`callpush worker` on PostgreSQL and Redis, signed webhooks over real HTTP, the real aioapns and
pyfcm against the fakes.

A captured webhook re-sent under new X-Webhook-Ids (one after another, or seven at once, which
land on different gunicorn processes) rings once; a week-old call.missed pushes nothing; and a
413 never leaves the client's next webhook to a connection the server has closed.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.e2e.processes import free_port, provider_env, run_cli, running, wait_until
from worker.stream import samples as sample_events

pytestmark = [pytest.mark.services, pytest.mark.timeout(300)]

API_KEY = "e2e-intake-key"
SECRET = "e2e-intake-secret-0123456789abcdef0123456"
MAX_BODY = 64 * 1024
VOIP = "ab" * 32
ALERT = "cd" * 32
ANDROID = "android-token-bob-" + "x" * 40


def sign(event: dict, webhook_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    return sample_events.signed_request(
        event, api_key=API_KEY, secret=SECRET, webhook_id=webhook_id
    )


def post(port: int, event: dict, webhook_id: str | None = None) -> requests.Response:
    body, headers = sign(event, webhook_id)
    return requests.post(
        f"http://127.0.0.1:{port}/webhooks/stream", data=body, headers=headers, timeout=20
    )


def rung(fake_apns, fake_fcm, call_cid: str) -> tuple[int, int]:
    apns = [r for r in fake_apns.received if r["payload"]["stream"]["call_cid"] == call_cid]
    fcm = [r for r in fake_fcm.received if r["message"]["data"]["call_cid"] == call_cid]
    return len(apns), len(fcm)


@pytest.fixture
def stack(tmp_path, postgres_url, redis_url, apns_settings, fcm_settings):
    port = free_port()
    env = provider_env(apns_settings, fcm_settings) | {
        "CALLPUSH_DATABASE_URL": postgres_url,
        "CALLPUSH_BROKER_URL": redis_url,
        "CALLPUSH_STREAM_API_KEY": API_KEY,
        "CALLPUSH_STREAM_API_SECRET": SECRET,
        "CALLPUSH_MAX_BODY_BYTES": str(MAX_BODY),
    }
    run_cli(["db", "upgrade"], env, tmp_path)
    for platform, token, voip in (
        ("apns", VOIP, True),
        ("apns", ALERT, False),
        ("fcm", ANDROID, False),
    ):
        args = ["devices", "add", "--user", "bob", "--platform", platform, "--token", token]
        run_cli(args + (["--voip"] if voip else []), env, tmp_path)
    web = ["web", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "8"]
    worker = ["worker", "--queues", "ring,bulk", "--concurrency", "2"]
    with (
        running(web, env, tmp_path, "web", wait_port=port),
        running(worker, env, tmp_path, "worker"),
    ):
        yield port


def test_replays_under_new_ids_ring_once_and_stale_events_push_nothing(stack, fake_apns, fake_fcm):
    port = stack

    # A captured ring re-sent six times, each time with a new X-Webhook-Id.
    ring = sample_events.ring_event("alice", ["bob"])
    answers = [post(port, ring) for _ in range(7)]
    assert [a.status_code for a in answers] == [202] + [200] * 6
    assert {a.json()["event_id"] for a in answers} == {answers[0].json()["event_id"]}
    assert {a.json()["status"] for a in answers[1:]} == {"duplicate"}

    # Seven copies at the same moment, on both gunicorn processes.
    second = sample_events.ring_event("alice", ["bob"])
    barrier, results = threading.Barrier(7), []

    def send() -> None:
        body, headers = sign(second)
        with requests.Session() as session:  # a connection each: spread over the processes
            barrier.wait()
            results.append(
                session.post(
                    f"http://127.0.0.1:{port}/webhooks/stream",
                    data=body,
                    headers=headers,
                    timeout=20,
                )
            )

    threads = [threading.Thread(target=send) for _ in range(7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r.status_code for r in results) == [200] * 6 + [202]
    assert len({r.json()["event_id"] for r in results}) == 1

    # A week-old call.missed, signed by Stream and replayed: stored, never pushed.
    missed = sample_events.member_event("call.missed", "alice", ["bob"])
    missed["created_at"] = (datetime.now(UTC) - timedelta(days=7)).isoformat()
    stale = post(port, missed)
    assert stale.status_code == 200 and stale.json()["status"] == "ignored"
    assert stale.json()["reason"].startswith("stale: created 7d before it arrived")

    # A fresh missed call after all of them proves the worker had time for every one.
    fresh = sample_events.member_event("call.missed", "alice", ["bob"])
    assert post(port, fresh).status_code == 202
    wait_until(
        lambda: (
            rung(fake_apns, fake_fcm, fresh["call_cid"]) == (1, 1)
            and rung(fake_apns, fake_fcm, ring["call_cid"]) == (1, 1)
            and rung(fake_apns, fake_fcm, second["call_cid"]) == (1, 1)
        ),
        60,
        message="one push per device for each event",
    )
    time.sleep(1.0)  # nothing more arrives
    assert rung(fake_apns, fake_fcm, ring["call_cid"]) == (1, 1)
    assert rung(fake_apns, fake_fcm, second["call_cid"]) == (1, 1)
    assert rung(fake_apns, fake_fcm, missed["call_cid"]) == (0, 0)


def test_the_next_webhook_after_a_413_on_the_same_connection_succeeds(stack):
    """gunicorn answered 413 with "Connection: keep-alive", then closed the socket: the client's
    next request on it failed (20 of 30 times)."""
    port = stack
    oversized = json.dumps({"type": "call.updated", "pad": "x" * (3 * MAX_BODY)}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        for attempt in range(30):
            connection.request(
                "POST",
                "/webhooks/stream",
                body=oversized,
                headers={"Content-Type": "application/json", "X-Api-Key": API_KEY},
            )
            refused = connection.getresponse()
            refused.read()
            assert refused.status == 413
            # Either the server keeps the connection usable, or it says it will not.
            assert refused.will_close, refused.getheaders()

            event = {"type": "call.updated", "call_cid": f"default:{uuid.uuid4().hex}"}
            body, headers = sign(event)
            # http.client opens a new connection only when the last answer said "close".
            connection.request("POST", "/webhooks/stream", body=body, headers=headers)
            answer = connection.getresponse()
            assert answer.status == 200, (attempt, answer.read())
            assert json.loads(answer.read())["status"] == "ignored"
    finally:
        connection.close()


def test_a_raw_keep_alive_client_learns_the_connection_closes(stack):
    """What a client that only reads the status line and headers sees after a 413."""
    import socket

    port = stack
    body = b'{"type":"call.updated","pad":"' + b"x" * (2 * MAX_BODY) + b'"}'
    request = (
        b"POST /webhooks/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request + body)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
    status_line, *header_lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    assert status_line.startswith("HTTP/1.1 413")
    assert headers["connection"] == "close"
