"""A replay after a provider outage delivers exactly the missing pushes.

The real path end to end: signed webhooks into the receiver, a real Celery worker (threads, in
this process) on Redis, PostgreSQL, the real APNs (aioapns, TLS + HTTP/2) and FCM providers
against the fakes.  APNs answers 500 to everything while the outage lasts; FCM stays healthy.
Then `callpush events replay --failed --since 1h` with APNs healthy again: each push that failed
arrives exactly once, and no device that already had its push gets another.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.e2e.processes import base_env, wait_until
from tests.ops_data import notification_body, ring_body
from webhook_app import create_app
from worker.foundation.settings import load_settings
from worker.push.base import Platform
from worker.runtime.celery_app import create_celery
from worker.runtime.inprocess_worker import inprocess_worker
from worker.storage import devices
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Delivery, WebhookEvent
from worker.stream import samples as sample_events

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]

API_KEY = "outage-key"
SECRET = "outage-secret-0123456789abcdef0123456789abcdef"
BOB_APNS = "0b0b" * 16  # plain APNs token: alerts
DAVE_APNS = "0dae" * 16
ERIN_VOIP = "0e1e" * 16  # VoIP: rings
BOB_FCM = "bob-fcm-" + "b" * 40
CAROL_FCM = "carol-fcm-" + "c" * 40


def callpush_events(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """`callpush events …` in its own process, as an operator runs it (a Celery app created in
    this process would share its task registry with the worker's)."""
    code = "from worker.commands.events import events; events.main(prog_name='callpush events')"
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=base_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


def apns_outage(fake_apns) -> threading.Event:
    """While the returned event is set, the fake APNs answers 500 InternalServerError."""
    outage = threading.Event()
    healthy = fake_apns.server.decide

    def decide(token, headers, body):
        if outage.is_set():
            return 500, "InternalServerError", 0
        return healthy(token, headers, body)

    fake_apns.server.decide = decide
    return outage


def apns_pushes(fake_apns) -> Counter:
    """(token, call cid) of every request the fake APNs got."""
    return Counter(
        (r["token"], (r["payload"] or {}).get("stream", {}).get("call_cid"))
        for r in list(fake_apns.received)
    )


def statuses(db: Database, event_ids: list[int]) -> dict[int, str]:
    with db.transaction() as session:
        rows = session.execute(
            select(WebhookEvent.id, WebhookEvent.status).where(WebhookEvent.id.in_(event_ids))
        )
        return {row.id: row.status for row in rows}


def deliveries(db: Database, event_id: int) -> dict[str, tuple[str, int]]:
    with db.transaction() as session:
        rows = session.scalars(select(Delivery).where(Delivery.event_id == event_id))
        return {d.token_hint: (d.status, d.attempts) for d in rows}


def test_replay_after_an_apns_outage_sends_exactly_the_missing_pushes(
    postgres_url,
    redis_url,
    fake_apns,
    apns_settings,
    fake_fcm,
    fcm_settings,
    tmp_path,
    monkeypatch,
):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        database_url=postgres_url,
        broker_url=redis_url,
        apps=[{"api_key": API_KEY, "api_secrets": [SECRET]}],
        apns=apns_settings,
        fcm=fcm_settings,
        # Fail fast during the outage: no backoff rounds for alerts, short ring retry waits.
        fanout={"max_retries": 0},
        ring={"retry_backoff_ms": 50, "retry_backoff_max_ms": 200},
    )
    upgrade_to_head(postgres_url)
    db = Database(postgres_url)
    with db.transaction() as session:
        for user, platform, token, voip in [
            ("bob", Platform.APNS, BOB_APNS, False),
            ("bob", Platform.FCM, BOB_FCM, False),
            ("carol", Platform.FCM, CAROL_FCM, False),
            ("dave", Platform.APNS, DAVE_APNS, False),
            ("erin", Platform.APNS, ERIN_VOIP, True),
        ]:
            devices.add_device(
                session, api_key=API_KEY, user_id=user, platform=platform, token=token, voip=voip
            )

    outage = apns_outage(fake_apns)
    outage.set()
    celery = create_celery(settings)
    client = create_app(settings, db=db, celery=celery).test_client()

    def post(event: dict) -> int:
        body, headers = sample_events.signed_request(event, api_key=API_KEY, secret=SECRET)
        response = client.post("/webhooks/stream", data=body, headers=headers)
        assert response.status_code == 202, response.get_data(as_text=True)
        return int(response.get_json()["event_id"])

    with inprocess_worker(celery, concurrency=4):
        # --- last night: APNs is down --------------------------------------------------------
        team = post(notification_body("default:team", "alice", ["bob", "carol", "dave"]))
        solo = post(notification_body("default:solo", "alice", ["dave"]))
        ring = post(ring_body("default:ring", "alice", ["erin"], timeout_ms=3000))
        wait_until(
            lambda: set(statuses(db, [team, solo, ring]).values()) <= {"failed", "processed"},
            60,
            message="the outage's events to settle",
        )
        assert statuses(db, [team, solo, ring]) == {
            team: "failed",
            solo: "failed",
            ring: "failed",  # APNs refused it until the ring was over
        }
        assert {s for s, _ in deliveries(db, team).values()} == {"sent", "failed"}
        ((ring_status, ring_attempts),) = deliveries(db, ring).values()
        assert ring_status == "failed" and ring_attempts >= 5  # retried for the whole ring
        apns_before, fcm_before = apns_pushes(fake_apns), len(fake_fcm.received)
        assert fcm_before == 2  # bob's and carol's Android phones got theirs

        # --- the morning after: APNs is back, the operator replays -------------------------
        outage.clear()
        env = {
            "CALLPUSH_DATABASE_URL": postgres_url,
            "CALLPUSH_BROKER_URL": redis_url,
            "CALLPUSH_STREAM_API_KEY": API_KEY,
            "CALLPUSH_STREAM_API_SECRET": SECRET,
        }
        code, output = callpush_events(
            ["replay", "--failed", "--since", "1h", "--dry-run"], env, tmp_path
        )
        assert code == 0, output
        assert "dry run: 3 event(s), 3 device(s) to re-send; nothing was changed" in output
        assert "the ring is over: 1 push(es) recorded as expired, not rung" in output
        assert BOB_APNS not in output and DAVE_APNS not in output
        assert apns_pushes(fake_apns) == apns_before  # a dry run sends nothing

        code, output = callpush_events(["replay", "--failed", "--since", "1h"], env, tmp_path)
        assert code == 0, output
        assert "replayed 3 event(s), 3 device(s) to re-send; queued on the bulk queue" in output
        wait_until(
            lambda: set(statuses(db, [team, solo, ring]).values()) == {"processed"},
            60,
            message="the replayed events to be processed",
        )
        time.sleep(0.5)  # room for a duplicate push to show up, if there were one

    new_apns = apns_pushes(fake_apns) - apns_before
    assert new_apns == Counter(
        {
            (BOB_APNS, "default:team"): 1,
            (DAVE_APNS, "default:team"): 1,
            (DAVE_APNS, "default:solo"): 1,
        }
    )
    assert len(fake_fcm.received) == fcm_before  # the Android phones got nothing twice
    assert {s for s, _ in deliveries(db, team).values()} == {"sent"}
    assert deliveries(db, solo) == {"0dae0d…0dae": ("sent", 2)}
    # Not re-rung: the ring is long over (one more claim, settled without sending).
    assert deliveries(db, ring) == {"0e1e0e…0e1e": ("expired", ring_attempts + 1)}
    with db.transaction() as session:
        replays = dict(session.execute(select(WebhookEvent.id, WebhookEvent.replays)).all())
    assert replays == {team: 1, solo: 1, ring: 1}

    # Nothing failed any more: a second replay finds nothing to do.
    code, output = callpush_events(["replay", "--failed", "--since", "1h"], env, tmp_path)
    assert code == 0 and "no failed events in that window" in output, output
    db.dispose()
