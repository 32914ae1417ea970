"""`callpush web` (gunicorn) against a database and a broker that accept connections and never
answer (tests/fakes/blackhole.py), on real PostgreSQL and Redis (the broker case on RabbitMQ too):

- database: webhooks are answered 503 within the stated bound (Stream retries), then at once
  while the circuit is open; /healthz answers; /readyz is 503 within its bound; when the
  database is back, webhooks are accepted again;
- broker: webhooks are stored and answered 2xx at once (p99 printed); when the broker is back,
  the rings stored meanwhile reach the phones within seconds, without the sweeper.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import insert, make_url, select

from tests.e2e.processes import free_port, provider_env, run_cli, running, wait_until
from tests.fakes.blackhole import Blackhole
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
from worker.runtime.inprocess_worker import inprocess_worker
from worker.storage.database import Database
from worker.storage.models import Device, WebhookEvent
from worker.stream import samples as sample_events

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]

API_KEY = "blackhole-key"
SECRET = "blackhole-secret-0123456789abcdef0123456789ab"
# The stated bound with the defaults: max(pool 2 s, connect 2 s) + the web statement
# timeout 2 s + 1 s grace (`callpush config check` prints it).
DATABASE_BOUND = 5.0
DEFAULT_PORTS = {"redis": 6379, "amqp": 5672}


def post(port: int, event: dict, timeout: float = 15) -> tuple[int, float]:
    body, headers = sample_events.signed_request(event, api_key=API_KEY, secret=SECRET)
    started = time.monotonic()
    response = requests.post(
        f"http://127.0.0.1:{port}/webhooks/stream", data=body, headers=headers, timeout=timeout
    )
    return response.status_code, time.monotonic() - started


def get(port: int, path: str) -> tuple[int, float]:
    started = time.monotonic()
    response = requests.get(f"http://127.0.0.1:{port}{path}", timeout=15)
    return response.status_code, time.monotonic() - started


def web_env(database_url: str, broker_url: str) -> dict[str, str]:
    return {
        "CALLPUSH_DATABASE_URL": database_url,
        "CALLPUSH_BROKER_URL": broker_url,
        "CALLPUSH_STREAM_API_KEY": API_KEY,
        "CALLPUSH_STREAM_API_SECRET": SECRET,
    }


@contextmanager
def web(env: dict[str, str], tmp_path, threads: int = 4) -> Iterator[int]:  # type: ignore[no-untyped-def]
    port = free_port()
    args = ["web", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", str(threads)]
    with running(args, env, tmp_path, "web", wait_port=port):
        yield port


def forward_to_postgres(blackhole: Blackhole, postgres_url: str) -> str:
    target = make_url(postgres_url)
    blackhole.forward_to(target.host or "127.0.0.1", target.port or 5432)
    return target.set(port=blackhole.port).render_as_string(hide_password=False)


def test_a_database_that_hangs_gets_503_within_the_bound_and_health_answers(
    tmp_path, postgres_url, redis_url, blackhole
):
    database_url = forward_to_postgres(blackhole, postgres_url)
    env = web_env(database_url, redis_url)
    run_cli(["db", "upgrade"], web_env(postgres_url, redis_url), tmp_path)
    with web(env, tmp_path) as port:
        assert post(port, sample_events.ring_event("alice", ["bob"]))[0] == 202
        blackhole.blackhole()  # the server freezes: pooled and new connections hang

        answers: list[tuple[int, float]] = []
        health: list[tuple[int, float]] = []
        stop = threading.Event()

        def probe_health() -> None:
            while not stop.is_set():
                health.append(get(port, "/healthz"))
                time.sleep(0.1)

        def send() -> None:
            answers.append(post(port, sample_events.ring_event("alice", ["bob"])))

        prober = threading.Thread(target=probe_health)
        prober.start()
        senders = [threading.Thread(target=send) for _ in range(6)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(30)
        # The circuit is open now: no more waiting.
        after = [post(port, sample_events.ring_event("alice", ["bob"])) for _ in range(5)]
        ready = get(port, "/readyz")
        stop.set()
        prober.join(10)

    print(
        f"hung database: 6 concurrent webhooks answered in "
        f"{', '.join(f'{s:.2f}' for _, s in sorted(answers, key=lambda a: a[1]))} s; "
        f"then {max(s for _, s in after) * 1000:.1f} ms at most; "
        f"/healthz slowest {max(s for _, s in health) * 1000:.0f} ms; /readyz {ready[1]:.2f} s"
    )
    assert [status for status, _ in answers] == [503] * 6
    assert max(seconds for _, seconds in answers) < DATABASE_BOUND + 0.5
    assert [status for status, _ in after] == [503] * 5
    assert max(seconds for _, seconds in after) < 0.25
    assert health and all(status == 200 for status, _ in health)
    # /healthz never touches the database; it can only wait for a request thread while the
    # first webhooks of the outage wait out their bound.
    assert max(seconds for _, seconds in health) < DATABASE_BOUND
    assert ready[0] == 503 and ready[1] < 3.0


def test_a_database_that_comes_back_is_used_again(tmp_path, postgres_url, redis_url, blackhole):
    database_url = forward_to_postgres(blackhole, postgres_url)
    run_cli(["db", "upgrade"], web_env(postgres_url, redis_url), tmp_path)
    blackhole.blackhole()
    with web(web_env(database_url, redis_url), tmp_path) as port:
        for _ in range(3):  # database.breaker_failures: each waits out connect_timeout
            assert post(port, sample_events.ring_event("alice", ["bob"]))[0] == 503
        status, seconds = post(port, sample_events.ring_event("alice", ["bob"]))
        assert status == 503 and seconds < 0.25
        forward_to_postgres(blackhole, postgres_url)
        time.sleep(2.1)  # database.breaker_reset_seconds
        assert post(port, sample_events.ring_event("alice", ["bob"]))[0] == 202


def test_a_broker_that_hangs_costs_webhooks_nothing_and_rings_go_out_when_it_is_back(
    tmp_path, postgres_url, broker_url, blackhole, fake_fcm, fcm_settings, apns_settings
):
    broker = urlsplit(broker_url)
    run_cli(["db", "upgrade"], web_env(postgres_url, broker_url), tmp_path)
    callees = [f"callee{i:02d}" for i in range(50)]
    db = Database(postgres_url)
    with db.transaction() as session:
        session.execute(
            insert(Device),
            [
                {
                    "api_key": API_KEY,
                    "user_id": u,
                    "platform": "fcm",
                    "token": f"fcm-{u}",
                    "source": "local",
                }
                for u in callees
            ],
        )
    # The web process reaches the broker only through the blackhole, which never answers.
    credentials = broker.netloc.rpartition("@")[0]
    broker_through_hole = broker._replace(
        netloc=f"{credentials}@{blackhole.host_port}" if credentials else blackhole.host_port
    ).geturl()
    env = web_env(postgres_url, broker_through_hole) | provider_env(apns_settings, fcm_settings)
    # The probe waits longer than the default 1 s, so that a loaded machine posting the 50
    # webhooks slowly still finds the circuit open (no probe) until the broker is back.
    env["CALLPUSH_BROKER__BREAKER_RESET_SECONDS"] = "5"
    # The ring worker consumes from the real broker, in this process.
    worker_settings = load_settings(
        database_url=postgres_url,
        broker_url=broker_url,
        apps=[{"api_key": API_KEY, "api_secret": SECRET}],
        apns=apns_settings.model_dump(),
        fcm=fcm_settings.model_dump(),
    )
    with web(env, tmp_path) as port, inprocess_worker(create_celery(worker_settings)):
        # Warm the web process up (database pool, first request) with an event that is not
        # published: a ring stopper is stored as processed.
        warm_up = sample_events.call_event("call.ended", "default:warm-up")
        assert post(port, warm_up)[0] == 200
        latencies = []
        for callee in callees:
            event = sample_events.ring_event("caller", [callee], ring_timeout_ms=60_000)
            status, seconds = post(port, event)
            assert status == 202
            latencies.append(seconds)
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        with db.transaction() as session:
            stored = session.scalars(select(WebhookEvent.status)).all()
        assert len(stored) == 51 and stored.count("received") == 50
        assert fake_fcm.received == []

        back_at = time.monotonic()
        blackhole.forward_to(
            broker.hostname or "127.0.0.1", broker.port or DEFAULT_PORTS[broker.scheme]
        )
        wait_until(lambda: len(fake_fcm.received) >= 50, 20, message="every ring pushed")
        delivered_after = time.monotonic() - back_at

    db.dispose()
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = statistics.quantiles(ordered, n=100, method="inclusive")[98]
    print(
        f"hung broker: 50 webhooks p50 {p50 * 1000:.1f} ms, p98 {ordered[-2] * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms; every ring pushed "
        f"{delivered_after:.2f} s after the broker came back"
    )
    assert sorted(r["message"]["token"] for r in fake_fcm.received) == sorted(
        f"fcm-{u}" for u in callees
    )
    # Only the first webhook waits for its publish, broker.publish_timeout_seconds (0.5 s; a
    # little more on a loaded machine); then the circuit is open and the others are answered
    # as if there were no broker.
    assert ordered[-1] < 1.5
    assert ordered[-2] < 0.5, ordered
    # The broker probe runs every breaker_reset_seconds (5 s here), then drains at once,
    # rings first; the sweeper would have waited sweeper.min_age_seconds (60 s) at least.
    assert delivered_after < 15
    assert 'callpush_circuit_breaker_state{breaker="broker"} 2.0' in metrics
    assert 'callpush_broker_publishes_skipped_total{queue="ring"} 49.0' in metrics
