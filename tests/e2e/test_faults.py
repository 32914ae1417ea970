"""Fault injection (issue: delivery guarantees), on real Redis (and RabbitMQ) and PostgreSQL with
the fake APNs and FCM driven by the real clients:

- a worker child killed with SIGKILL in the middle of a 1,000-device fan-out;
- Redis stopped and started again while webhooks keep arriving; RabbitMQ going away the same way;
- a 410 from APNs: the token is disabled and never pushed again;
- a stalled provider: the timeout fires, the other pushes still go out.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import insert, select
from waitress.server import create_server

from tests.conftest import IN_CI
from tests.e2e.processes import free_port, provider_env, run_cli, running, wait_until
from webhook_app import create_app
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
from worker.runtime.inbox_sweeper import requeue_unfinished
from worker.runtime.inprocess_worker import inprocess_worker
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Delivery, Device, WebhookEvent
from worker.stream import samples as sample_events

pytestmark = [pytest.mark.services, pytest.mark.timeout(300)]

API_KEY = "fault-key"
SECRET = "fault-secret-0123456789abcdef0123456789abcdef"


def post(port: int, event: dict, api_key: str = API_KEY, secret: str = SECRET) -> requests.Response:
    body, headers = sample_events.signed_request(event, api_key=api_key, secret=secret)
    return requests.post(
        f"http://127.0.0.1:{port}/webhooks/stream", data=body, headers=headers, timeout=15
    )


def statuses(db: Database) -> Counter[str]:
    with db.transaction() as session:
        return Counter(session.scalars(select(WebhookEvent.status)))


def add_devices(db: Database, rows: list[dict], api_key: str = API_KEY) -> None:
    with db.transaction() as session:
        session.execute(
            insert(Device),
            [{"api_key": api_key, "source": "local", "voip": False} | r for r in rows],
        )


def child_pids(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def test_worker_child_killed_mid_fanout_every_device_gets_its_push(
    tmp_path,
    postgres_url,
    redis_url,
    fake_apns_factory,
    fake_fcm,
    fcm_settings,
    push_credentials,
    fake_stream_api,
):
    from tests.fakes.pytest_plugin import apns_settings_for

    # Answers take 20 ms, so the 1,000 pushes take a few seconds and the kill lands mid-send.
    fake_apns = fake_apns_factory(slow_delay=0.02)
    apns_settings = apns_settings_for(fake_apns, push_credentials)
    env = provider_env(apns_settings, fcm_settings) | {
        "CALLPUSH_DATABASE_URL": postgres_url,
        "CALLPUSH_BROKER_URL": redis_url,
        # The 1,000 members are read from Stream's QueryCallMembers (the fake).
        "CALLPUSH_STREAM_API_KEY": fake_stream_api.api_key,
        "CALLPUSH_STREAM_API_SECRET": fake_stream_api.secret,
        "CALLPUSH_STREAM_BASE_URL": fake_stream_api.url,
        "CALLPUSH_FANOUT__CHUNK_SIZE": "250",
    }
    run_cli(["db", "upgrade"], env, tmp_path)
    db = Database(postgres_url)
    members = [f"m{i:04d}" for i in range(1_000)]
    add_devices(
        db,
        [
            {"user_id": u, "platform": "apns", "token": f"slow{i:060x}"}
            if i % 2
            else {"user_id": u, "platform": "fcm", "token": f"fcm-{u}"}
            for i, u in enumerate(members)
        ],
        fake_stream_api.api_key,
    )
    port = free_port()
    web = ["web", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    worker = ["worker", "--queues", "bulk", "--concurrency", "1"]
    with (
        running(web, env, tmp_path, "web", wait_port=port),
        running(worker, env, tmp_path, "worker") as worker_process,
    ):
        event = sample_events.member_event("call.notification", "host", members[:100])
        fake_stream_api.set_members(event["call_cid"], ["host", *members])
        response = post(port, event, fake_stream_api.api_key, fake_stream_api.secret)
        assert response.status_code == 202, response.text
        wait_until(lambda: fake_apns.count + len(fake_fcm.received) >= 300, 60, message="pushes")
        children = child_pids(worker_process.pid)
        assert children, "the prefork pool has a child"
        for child in children:
            os.kill(child, signal.SIGKILL)
        killed_at = fake_apns.count + len(fake_fcm.received)
        wait_until(lambda: statuses(db).get("processed") == 1, 120, message="fan-out finished")
    apns = Counter(r["token"] for r in fake_apns.received)
    fcm = Counter(r["message"]["token"] for r in fake_fcm.received)
    assert 0 < killed_at < 1_000, "the kill landed mid fan-out"
    assert len(apns) == 500 and len(fcm) == 500, "every device got its push"
    duplicated = sum(n - 1 for n in apns.values()) + sum(n - 1 for n in fcm.values())
    # Answers are recorded as they arrive, so only the pushes in flight at the kill (their
    # answers never read) can go out twice: here the ~50 APNs pushes waiting on the fake's 20 ms
    # answers.  At most one send batch (fanout.send_batch = 100) per killed child; each resend
    # carries the same apns-id.  APNs and FCM take no idempotency key: README "Guarantees".
    assert duplicated <= 100 * len(children)
    for token, n in apns.items():
        if n > 1:
            ids = {r["headers"]["apns-id"] for r in fake_apns.received if r["token"] == token}
            assert len(ids) == 1
    with db.transaction() as session:
        assert Counter(session.scalars(select(Delivery.status))) == {"sent": 1_000}
    db.dispose()
    print(f"killed after {killed_at} pushes; {duplicated} pushes went out twice")


@pytest.fixture
def private_redis(tmp_path) -> Iterator[tuple[str, callable, callable]]:
    """A Redis of our own on a spare port, which this test may stop and start."""
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("redis-server is not installed; under CI=true this test must run")
        pytest.skip("redis-server is not installed")
    port = free_port()
    process: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        process.append(
            subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
            )
        )
        wait_until(lambda: _pings(port), 10, message="redis up")

    def stop() -> None:
        process[-1].terminate()
        process[-1].wait(10)

    start()
    yield f"redis://127.0.0.1:{port}/0", start, stop
    if process[-1].poll() is None:
        stop()


def _pings(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.2).ping())
    except redis.RedisError:
        return False


def test_redis_restarted_during_ingest_every_accepted_event_delivered_once(
    postgres_url, private_redis, fake_fcm, fcm_settings, apns_settings, monkeypatch
):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    broker_url, start_redis, stop_redis = private_redis
    settings = load_settings(
        database_url=postgres_url,
        broker_url=broker_url,
        apps=[{"api_key": API_KEY, "api_secrets": [SECRET]}],
        apns=apns_settings.model_dump(),
        fcm=fcm_settings.model_dump(),
    )
    upgrade_to_head(postgres_url)
    db = Database(postgres_url)
    users = [f"u{i:03d}" for i in range(60)]
    add_devices(db, [{"user_id": u, "platform": "fcm", "token": f"fcm-{u}"} for u in users])
    celery = create_celery(settings)
    port = free_port()
    server = create_server(create_app(settings, db=db, celery=celery), host="127.0.0.1", port=port)
    threading.Thread(target=server.run, daemon=True).start()
    accepted = []
    with inprocess_worker(celery, concurrency=2):
        for index, user in enumerate(users):
            if index == 20:
                stop_redis()  # the queue, and what it held, is gone
            if index == 40:
                start_redis()
            response = post(port, sample_events.member_event("call.missed", "caller", [user]))
            assert response.status_code in (200, 202), response.text  # stored, even with no broker
            accepted.append(response.json()["event_id"])

        # The sweeper (`callpush beat`) queues what the outage left behind.
        def swept_and_done() -> bool:
            requeue_unfinished(db, celery.handoff, older_than=timedelta(seconds=1))
            return statuses(db).get("processed") == len(users)

        wait_until(swept_and_done, 90, interval=1.0, message="every accepted event processed")
    server.close()
    fcm = Counter(r["message"]["token"] for r in fake_fcm.received)
    assert set(fcm) == {f"fcm-{u}" for u in users}
    assert max(fcm.values()) == 1, "no push went out twice"
    assert len(accepted) == len(set(accepted)) == len(users)
    db.dispose()


def test_rabbitmq_restarted_during_ingest_every_accepted_event_delivered_once(
    postgres_url, rabbitmq_url, blackhole, fake_fcm, fcm_settings, apns_settings, monkeypatch
):
    """RabbitMQ going away mid-ingest, as a restart looks to its clients: every connection
    closed, new ones refused, then accepted again.  Through a relay we can cut
    (tests/fakes/blackhole.py), so the shared broker itself is never restarted.  What was in
    the quorum queues stays there; what a worker held unacked goes back when its connection
    drops; what the web could not publish stays in the inbox for the sweeper."""
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    real = urlsplit(rabbitmq_url)
    blackhole.forward_to(real.hostname or "127.0.0.1", real.port or 5672)
    broker_url = real._replace(netloc=f"{real.username}:{real.password}@{blackhole.host_port}")
    settings = load_settings(
        database_url=postgres_url,
        broker_url=broker_url.geturl(),
        apps=[{"api_key": API_KEY, "api_secrets": [SECRET]}],
        apns=apns_settings.model_dump(),
        fcm=fcm_settings.model_dump(),
    )
    upgrade_to_head(postgres_url)
    db = Database(postgres_url)
    users = [f"u{i:03d}" for i in range(60)]
    add_devices(db, [{"user_id": u, "platform": "fcm", "token": f"fcm-{u}"} for u in users])
    celery = create_celery(settings)
    port = free_port()
    server = create_server(create_app(settings, db=db, celery=celery), host="127.0.0.1", port=port)
    threading.Thread(target=server.run, daemon=True).start()
    accepted = []
    with inprocess_worker(celery, concurrency=2):
        for index, user in enumerate(users):
            if index == 20:
                blackhole.drop()  # RabbitMQ stops: every connection closed
                connections_before_the_restart = blackhole.accepted
            if index == 40:
                blackhole.forward_to(real.hostname or "127.0.0.1", real.port or 5672)
            response = post(port, sample_events.member_event("call.missed", "caller", [user]))
            assert response.status_code in (200, 202), response.text  # stored, even with no broker
            accepted.append(response.json()["event_id"])

        def swept_and_done() -> bool:
            requeue_unfinished(db, celery.handoff, older_than=timedelta(seconds=1))
            return statuses(db).get("processed") == len(users)

        wait_until(swept_and_done, 90, interval=1.0, message="every accepted event processed")
    server.close()
    fcm = Counter(r["message"]["token"] for r in fake_fcm.received)
    assert set(fcm) == {f"fcm-{u}" for u in users}
    assert max(fcm.values()) == 1, "no push went out twice"
    assert len(accepted) == len(set(accepted)) == len(users)
    assert blackhole.accepted > connections_before_the_restart, "the clients reconnected"
    db.dispose()


@pytest.fixture
def stack(postgres_url, broker_url, apns_settings, fcm_settings, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    settings = load_settings(
        database_url=postgres_url,
        broker_url=broker_url,
        apps=[{"api_key": API_KEY, "api_secrets": [SECRET]}],
        apns=apns_settings.model_dump() | {"timeout_seconds": 0.5},
        fcm=fcm_settings.model_dump(),
        ring={"retry_backoff_ms": 100, "retry_backoff_max_ms": 400},
    )
    upgrade_to_head(postgres_url)
    db = Database(postgres_url)
    celery = create_celery(settings)
    port = free_port()
    server = create_server(create_app(settings, db=db, celery=celery), host="127.0.0.1", port=port)
    threading.Thread(target=server.run, daemon=True).start()
    with inprocess_worker(celery, concurrency=2):
        yield db, port
    server.close()
    db.dispose()


def delivery_statuses(db: Database, event_id: int) -> dict[str, str]:
    with db.transaction() as session:
        rows = session.execute(
            select(Device.token, Delivery.status, Delivery.reason)
            .join(Device, Device.id == Delivery.device_id)
            .where(Delivery.event_id == event_id)
        ).all()
    return {token: f"{status}:{reason or ''}" for token, status, reason in rows}


def finished(db: Database, event_id: int) -> bool:
    with db.transaction() as session:
        return session.get(WebhookEvent, event_id).status in ("processed", "failed")


def test_unregistered_token_is_disabled_and_never_pushed_again(stack, fake_apns):
    db, port = stack
    gone, alive = "gone" + "0" * 60, "a1" * 32
    add_devices(
        db,
        [
            {"user_id": "bob", "platform": "apns", "token": gone, "voip": True},
            {"user_id": "bob", "platform": "apns", "token": alive, "voip": True},
        ],
    )
    first = post(port, sample_events.ring_event("alice", ["bob"])).json()["event_id"]
    wait_until(lambda: finished(db, first), 30, message="first ring")
    assert delivery_statuses(db, first)[gone] == "token_invalid:Unregistered"
    with db.transaction() as session:
        device = session.scalar(select(Device).where(Device.token == gone))
        assert device.disabled_at is not None and "Unregistered" in device.disabled_reason
    second = post(port, sample_events.ring_event("alice", ["bob"])).json()["event_id"]
    wait_until(lambda: finished(db, second), 30, message="second ring")
    assert [r["token"] for r in fake_apns.received].count(gone) == 1
    assert [r["token"] for r in fake_apns.received].count(alive) == 2


def test_a_stalled_provider_times_out_and_the_other_pushes_go_out(stack, fake_apns):
    db, port = stack
    stalled, healthy = "silent" + "0" * 58, "b2" * 32
    add_devices(
        db,
        [
            {"user_id": "bob", "platform": "apns", "token": stalled, "voip": True},
            {"user_id": "carol", "platform": "apns", "token": healthy, "voip": True},
        ],
    )
    started = time.monotonic()
    event = sample_events.ring_event("alice", ["bob", "carol"], ring_timeout_ms=5000)
    event_id = post(port, event).json()["event_id"]
    wait_until(lambda: healthy in [r["token"] for r in fake_apns.received], 10, message="healthy")
    assert time.monotonic() - started < 2, "the stalled push did not hold the other one back"
    wait_until(lambda: finished(db, event_id), 30, message="ring finished")
    outcomes = delivery_statuses(db, event_id)
    assert outcomes[healthy] == "sent:"
    # Timed out after APNs read it: it may have rung, so it is not sent again (a second VoIP
    # push would be a second CallKit call).
    assert (
        outcomes[stalled] == "unconfirmed:timeout: answer lost, not re-sent to avoid a second ring"
    )
    assert [r["token"] for r in fake_apns.received].count(stalled) == 1
