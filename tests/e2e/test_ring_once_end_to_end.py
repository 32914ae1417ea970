"""A ring never rings twice, and keeps trying until the ring is over (README: guarantees).

Signed call.ring webhooks through the receiver, a Celery worker on real Redis and PostgreSQL, the
real aioapns (TLS + HTTP/2) and pyfcm against the fake APNs and FCM:

- an answer lost after the request was written (a timeout, a dropped connection) is never sent
  again: the fake saw it once and the delivery is `unconfirmed`, for APNs and FCM alike;
- a worker process killed with SIGKILL while the fake holds its push: after the lease the push is
  settled `unconfirmed`, not sent again;
- a connection refused before anything was written is retried and gets through;
- APNs 500s and FCM 503s with Retry-After are retried until they get through within the ring;
  a push that never gets through is `failed` with the provider's last reason, not `expired`.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from sqlalchemy import insert, select
from waitress.server import create_server

from tests.e2e.processes import free_port, provider_env, run_cli, running, stop, wait_until
from tests.fakes.credentials import PushCredentials
from tests.fakes.fake_apns import FakeApns
from tests.fakes.fake_fcm import FakeFcm
from tests.fakes.pytest_plugin import apns_settings_for, fcm_settings_for
from webhook_app import create_app
from worker.foundation.settings import ApnsSettings, FcmSettings, load_settings
from worker.runtime.celery_app import create_celery
from worker.runtime.inbox_sweeper import requeue_unfinished
from worker.runtime.inprocess_worker import inprocess_worker
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Delivery, Device, WebhookEvent
from worker.stream import samples as sample_events

pytestmark = [pytest.mark.services, pytest.mark.timeout(240)]

API_KEY = "once-key"
SECRET = "once-secret-0123456789abcdef0123456789abcdef"
NOT_RESENT = "answer lost, not re-sent to avoid a second ring"


def voip_token(prefix: str) -> str:
    return (prefix + "0" * 64)[:64]


@contextmanager
def stack(
    postgres_url: str, redis_url: str, apns: ApnsSettings, fcm: FcmSettings, **overrides: Any
) -> Iterator[tuple[Database, int]]:
    """The receiver (waitress) and a Celery worker (threads) in this process."""
    settings = load_settings(
        database_url=postgres_url,
        broker_url=redis_url,
        apps=[{"api_key": API_KEY, "api_secrets": [SECRET]}],
        apns=apns.model_dump(),
        fcm=fcm.model_dump(),
        **overrides,
    )
    upgrade_to_head(postgres_url)
    db = Database(postgres_url)
    celery = create_celery(settings)
    port = free_port()
    server = create_server(create_app(settings, db=db, celery=celery), host="127.0.0.1", port=port)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        with inprocess_worker(celery, concurrency=4):
            yield db, port
    finally:
        server.close()
        db.dispose()


def add_phones(db: Database, voip: str | None, android: str | None, user: str = "bob") -> None:
    rows = []
    if voip:
        rows.append({"user_id": user, "platform": "apns", "token": voip, "voip": True})
    if android:
        rows.append({"user_id": user, "platform": "fcm", "token": android, "voip": False})
    with db.transaction() as session:
        session.execute(
            insert(Device), [{"api_key": API_KEY, "source": "local"} | row for row in rows]
        )


def ring(port: int, ring_timeout_ms: int = 30_000) -> tuple[int, dict]:
    event = sample_events.ring_event("alice", ["bob"], ring_timeout_ms=ring_timeout_ms)
    body, headers = sample_events.signed_request(event, api_key=API_KEY, secret=SECRET)
    response = requests.post(
        f"http://127.0.0.1:{port}/webhooks/stream", data=body, headers=headers, timeout=15
    )
    assert response.status_code == 202, response.text
    return response.json()["event_id"], event


def pushes(db: Database, event_id: int) -> dict[str, Delivery]:
    """The event's deliveries by device token."""
    with db.transaction() as session:
        rows = session.execute(
            select(Device.token, Delivery)
            .join(Device, Device.id == Delivery.device_id)
            .where(Delivery.event_id == event_id)
        ).all()
    return {token: delivery for token, delivery in rows}


def event_row(db: Database, event_id: int) -> WebhookEvent:
    with db.transaction() as session:
        row = session.get(WebhookEvent, event_id)
        assert row is not None
        return row


def finished(db: Database, event_id: int) -> bool:
    return event_row(db, event_id).status in ("processed", "failed")


def fcm_settings_at(
    credentials: PushCredentials, directory: Path, *, token_uri: str, endpoint: str
) -> FcmSettings:
    account = credentials.write_service_account(directory / "sa.json", token_uri=token_uri)
    return FcmSettings(
        service_account_file=account, endpoint=endpoint, timeout_seconds=2.0, max_workers=4
    )


def test_an_answer_lost_after_writing_is_never_sent_again(
    postgres_url: str,
    redis_url: str,
    fake_apns_factory: Callable[..., FakeApns],
    fake_fcm_factory: Callable[..., FakeFcm],
    push_credentials: PushCredentials,
    tmp_path: Path,
) -> None:
    """APNs holds the request and never answers; FCM answers after the client's timeout."""
    fake_apns = fake_apns_factory()
    fake_fcm = fake_fcm_factory(slow_delay=3.0)
    apns = apns_settings_for(fake_apns, push_credentials, timeout_seconds=1.0)
    fcm = fcm_settings_for(fake_fcm, push_credentials, tmp_path, timeout_seconds=1.0)
    held, slow = voip_token("hold"), "slow-android-bob"
    with stack(postgres_url, redis_url, apns, fcm) as (db, port):
        add_phones(db, held, slow)
        event_id, _ = ring(port)
        wait_until(lambda: finished(db, event_id), 30, message="ring finished")
        time.sleep(1.5)  # nothing is sent after the event is finished either
        outcome = pushes(db, event_id)
        assert event_row(db, event_id).status == "processed"
    assert fake_apns.hits[held] == 1 and fake_fcm.hits[slow] == 1
    for token in (held, slow):
        delivery = outcome[token]
        assert (delivery.status, delivery.attempts) == ("unconfirmed", 1)
        assert delivery.reason == f"timeout: {NOT_RESENT}"


def test_a_connection_dropped_after_the_request_was_read_is_never_sent_again(
    postgres_url: str,
    redis_url: str,
    fake_apns: FakeApns,
    apns_settings: ApnsSettings,
    fake_fcm: FakeFcm,
    fcm_settings: FcmSettings,
) -> None:
    dropped_voip, dropped_android = voip_token("drop"), "drop-android-bob"
    with stack(postgres_url, redis_url, apns_settings, fcm_settings) as (db, port):
        add_phones(db, dropped_voip, dropped_android)
        event_id, _ = ring(port)
        wait_until(lambda: finished(db, event_id), 30, message="ring finished")
        outcome = pushes(db, event_id)
    # Stock aioapns would have resent the VoIP push on a new connection (up to 5 times).
    assert fake_apns.hits[dropped_voip] == 1 and fake_fcm.hits[dropped_android] == 1
    for token in (dropped_voip, dropped_android):
        assert outcome[token].status == "unconfirmed"
        assert outcome[token].reason == f"connection-lost: {NOT_RESENT}"


def test_a_connection_refused_before_writing_is_retried_and_gets_through(
    postgres_url: str,
    redis_url: str,
    fake_apns_factory: Callable[..., FakeApns],
    fake_fcm_factory: Callable[..., FakeFcm],
    push_credentials: PushCredentials,
    tmp_path: Path,
) -> None:
    """Nothing listens on the APNs and FCM ports until both pushes have failed to connect."""
    apns_port, fcm_port = free_port(), free_port()
    apns = apns_settings_for(SimpleNamespace(port=apns_port), push_credentials, timeout_seconds=1.0)
    token_server = fake_fcm_factory()  # Google's OAuth endpoint is up; FCM's is not
    fcm = fcm_settings_at(
        push_credentials,
        tmp_path,
        token_uri=token_server.token_uri,
        endpoint=f"http://127.0.0.1:{fcm_port}/v1/projects",
    )
    voip, android = voip_token("ab"), "android-bob"
    with stack(postgres_url, redis_url, apns, fcm) as (db, port):
        add_phones(db, voip, android)
        event_id, _ = ring(port)

        def both_refused() -> bool:
            outcome = pushes(db, event_id)
            return all(
                token in outcome and outcome[token].reason == "connection"
                for token in (voip, android)
            )

        wait_until(both_refused, 20, message="both pushes failed to connect")
        fake_apns = fake_apns_factory(port=apns_port)
        fake_fcm = fake_fcm_factory(port=fcm_port)
        wait_until(lambda: finished(db, event_id), 30, message="ring finished")
        outcome = pushes(db, event_id)
    assert fake_apns.hits == {voip: 1} and fake_fcm.hits == {android: 1}
    for token in (voip, android):
        assert outcome[token].status == "sent"
        assert outcome[token].attempts >= 2


def test_500s_and_503s_are_retried_until_the_ring_gets_through(
    postgres_url: str,
    redis_url: str,
    fake_apns_factory: Callable[..., FakeApns],
    fake_fcm_factory: Callable[..., FakeFcm],
    push_credentials: PushCredentials,
    tmp_path: Path,
) -> None:
    """Five APNs 500s (the ring of issue 12 gave up after four, 1.3 s into a 30 s ring) and two
    FCM 503s with Retry-After: 1."""
    fake_apns = fake_apns_factory(flaky_failures=5)
    fake_fcm = fake_fcm_factory(retry_after="1", busy_failures=2)
    apns = apns_settings_for(fake_apns, push_credentials)
    fcm = fcm_settings_for(fake_fcm, push_credentials, tmp_path)
    voip, android = voip_token("flaky5xx"), "busy-android-bob"
    with stack(postgres_url, redis_url, apns, fcm) as (db, port):
        add_phones(db, voip, android)
        event_id, _ = ring(port)
        wait_until(lambda: finished(db, event_id), 30, message="ring finished")
        outcome = pushes(db, event_id)
        assert event_row(db, event_id).status == "processed"
    assert fake_apns.hits == {voip: 6} and fake_fcm.hits == {android: 3}
    assert (outcome[voip].status, outcome[voip].attempts) == ("sent", 6)
    assert (outcome[android].status, outcome[android].attempts) == ("sent", 3)
    fcm_times = [r["t"] for r in fake_fcm.received]
    assert all(later - earlier >= 0.95 for earlier, later in itertools.pairwise(fcm_times))


def test_a_ring_that_never_gets_through_is_failed_with_the_last_reason(
    postgres_url: str,
    redis_url: str,
    fake_apns: FakeApns,
    apns_settings: ApnsSettings,
    fake_fcm: FakeFcm,
    fcm_settings: FcmSettings,
) -> None:
    voip, android = voip_token("fail5xx"), "internal-android-bob"
    ring_ms = 4_000
    with stack(postgres_url, redis_url, apns_settings, fcm_settings) as (db, port):
        add_phones(db, voip, android)
        started = time.monotonic()
        event_id, _ = ring(port, ring_timeout_ms=ring_ms)
        wait_until(lambda: finished(db, event_id), 30, message="ring finished")
        outcome = pushes(db, event_id)
        event = event_row(db, event_id)
    assert event.status == "failed" and "2 failed" in (event.status_reason or "")
    for token, fake_hits, reason in (
        (voip, fake_apns.hits, "InternalServerError"),
        (android, fake_fcm.hits, "INTERNAL"),
    ):
        delivery = outcome[token]
        attempts = fake_hits[token]
        assert attempts >= 5  # kept trying for the whole ring
        assert (delivery.status, delivery.status_code) == ("failed", 500)
        # The attempts column counts claims: under load the ring may end between the last claim
        # and its send, which then is not made.
        assert delivery.attempts in (attempts, attempts + 1)
        assert delivery.reason == (
            f"{reason}: not accepted in {attempts} attempt(s) before the ring was over"
        )
    # Never an attempt after the ring was over.
    last_attempt = max(r["t"] for r in [*fake_apns.received, *fake_fcm.received])
    assert last_attempt - started < ring_ms / 1000


def test_a_ring_worker_killed_mid_send_does_not_ring_twice(
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,
    fake_apns: FakeApns,
    apns_settings: ApnsSettings,
    fake_fcm: FakeFcm,
    fcm_settings: FcmSettings,
) -> None:
    """`callpush worker --queues ring` SIGKILLed while the fake APNs holds its VoIP push
    unanswered.  The event is queued again (as the sweeper does) for a new worker: after the
    claim's lease it settles the push as unconfirmed, and the fake still saw one request."""
    env = provider_env(apns_settings, fcm_settings) | {
        "CALLPUSH_DATABASE_URL": postgres_url,
        "CALLPUSH_BROKER_URL": redis_url,
        "CALLPUSH_STREAM_API_KEY": API_KEY,
        "CALLPUSH_STREAM_API_SECRET": SECRET,
    }
    run_cli(["db", "upgrade"], env, tmp_path)
    settings = load_settings(
        database_url=postgres_url,
        broker_url=redis_url,
        apps=[{"api_key": API_KEY, "api_secrets": [SECRET]}],
    )
    db = Database(postgres_url)
    celery = create_celery(settings)
    held = voip_token("hold")
    add_phones(db, held, None)
    port = free_port()
    server = create_server(create_app(settings, db=db, celery=celery), host="127.0.0.1", port=port)
    threading.Thread(target=server.run, daemon=True).start()
    worker = ["worker", "--queues", "ring"]
    try:
        with running(worker, env, tmp_path, "worker-1") as first:
            wait_until(lambda: " ready." in (tmp_path / "worker-1.log").read_text(), 30)
            event_id, _ = ring(port)
            wait_until(lambda: len(fake_apns.server.held) == 1, 20, message="the held push")
            stop(first, signal.SIGKILL)
        assert pushes(db, event_id)[held].status == "sending"
        with running(worker, env, tmp_path, "worker-2"):
            wait_until(lambda: " ready." in (tmp_path / "worker-2.log").read_text(), 30)
            assert requeue_unfinished(db, celery.handoff, older_than=None) == 1
            wait_until(lambda: finished(db, event_id), 40, message="ring settled")
        delivery = pushes(db, event_id)[held]
        event = event_row(db, event_id)
    finally:
        server.close()
        db.dispose()
    assert fake_apns.hits[held] == 1, "the push was sent again"
    assert (delivery.status, delivery.attempts) == ("unconfirmed", 1)
    assert delivery.reason == f"worker stopped mid-send: {NOT_RESENT}"
    assert (event.status, event.status_reason) == (
        "processed",
        "rang nobody for certain (1 of 1 unconfirmed): 1 unconfirmed",
    )


def test_rings_being_retried_do_not_hold_back_a_healthy_ring(
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,
    fake_apns: FakeApns,
    apns_settings: ApnsSettings,
    fake_fcm: FakeFcm,
    fcm_settings: FcmSettings,
) -> None:
    """`callpush worker --queues ring` with its default threads: 30 rings to phones APNs
    answers 500 for (more rings than the 16 threads it used to run) are all being retried at
    once, 20 s rings, and a new ring to a healthy phone is still sent at once."""
    env = provider_env(apns_settings, fcm_settings) | {
        "CALLPUSH_DATABASE_URL": postgres_url,
        "CALLPUSH_BROKER_URL": redis_url,
        "CALLPUSH_STREAM_API_KEY": API_KEY,
        "CALLPUSH_STREAM_API_SECRET": SECRET,
    }
    run_cli(["db", "upgrade"], env, tmp_path)
    settings = load_settings(
        database_url=postgres_url,
        broker_url=redis_url,
        apps=[{"api_key": API_KEY, "api_secrets": [SECRET]}],
    )
    db = Database(postgres_url)
    celery = create_celery(settings)
    failing = [voip_token(f"fail5xx{i:02d}") for i in range(30)]
    healthy = voip_token("ab")
    with db.transaction() as session:
        phones = [(f"u{i}", token) for i, token in enumerate(failing)] + [("bob", healthy)]
        session.execute(
            insert(Device),
            [
                {
                    "api_key": API_KEY,
                    "user_id": user,
                    "platform": "apns",
                    "token": token,
                    "voip": True,
                }
                for user, token in phones
            ],
        )
    port = free_port()
    server = create_server(create_app(settings, db=db, celery=celery), host="127.0.0.1", port=port)
    threading.Thread(target=server.run, daemon=True).start()

    def post(event: dict) -> None:
        body, headers = sample_events.signed_request(event, api_key=API_KEY, secret=SECRET)
        response = requests.post(
            f"http://127.0.0.1:{port}/webhooks/stream", data=body, headers=headers, timeout=15
        )
        assert response.status_code == 202, response.text

    def retried() -> int:
        return sum(1 for token in failing if fake_apns.hits.get(token, 0) >= 2)

    try:
        with running(["worker", "--queues", "ring"], env, tmp_path, "worker") as worker:
            wait_until(lambda: " ready." in (tmp_path / "worker.log").read_text(), 30)
            for i in range(len(failing)):
                post(sample_events.ring_event("alice", [f"u{i}"], ring_timeout_ms=20_000))
            # With too few threads the rings beyond them would wait for the first to end (20 s).
            wait_until(lambda: retried() == len(failing), 15, message="all 30 being retried")
            sent = time.monotonic()
            post(sample_events.ring_event("alice", ["bob"]))
            wait_until(lambda: healthy in fake_apns.hits, 10, message="the healthy ring")
            latency = time.monotonic() - sent
            stop(worker, signal.SIGKILL)  # the failing rings need not run to their end
    finally:
        server.close()
        db.dispose()
    # Without a free thread it would wait for the first failing ring to end (20 s).
    assert latency < 2.0, f"the healthy ring waited {latency:.2f} s"
