"""/healthz, /readyz and /metrics on the real app: ready against a real PostgreSQL and Redis,
unavailable (503, naming the failed check) with a dead broker or an unreachable or hanging
database, and the metrics in Prometheus text format."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from webhook_app import create_app
from webhook_app.health import DATABASE_TIMEOUT
from worker.celery_app import create_celery
from worker.settings import load_settings
from worker.storage.database import Database

METRIC_NAMES = (
    "callpush_webhooks_total",
    "callpush_pushes_total",
    "callpush_push_latency_seconds",
    "callpush_tokens_disabled_total",
)
DEAD_BROKER = "redis://127.0.0.1:1/0"
UNREACHABLE_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/callpush"


def make_client(monkeypatch, database_url: str, broker_url: str | None):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    settings = load_settings(
        database_url=database_url,
        broker_url=broker_url,
        apps=[{"api_key": "k", "api_secrets": ["s"]}],
    )
    db = Database(database_url)
    app = create_app(settings, db=db, celery=create_celery(settings))
    return app.test_client(), db


@pytest.fixture
def clients(monkeypatch) -> Iterator:
    made = []

    def make(database_url: str, broker_url: str | None):
        client, db = make_client(monkeypatch, database_url, broker_url)
        made.append(db)
        return client

    yield make
    for db in made:
        db.dispose()


def test_healthz_says_the_process_is_up_even_when_nothing_else_is(clients):
    client = clients(UNREACHABLE_DATABASE, DEAD_BROKER)
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


@pytest.mark.services
def test_ready_with_real_postgres_and_redis(clients, postgres_url, redis_url):
    client = clients(postgres_url, redis_url)
    response = client.get("/readyz")
    assert response.status_code == 200, response.json
    assert response.json == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_embedded_mode_checks_only_the_database(clients, sqlite_url):
    response = clients(sqlite_url, None).get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready", "checks": {"database": "ok"}}


def test_dead_broker_is_503_naming_the_broker(clients, sqlite_url):
    started = time.monotonic()
    response = clients(sqlite_url, DEAD_BROKER).get("/readyz")
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    assert response.json["status"] == "unavailable"
    assert response.json["checks"]["database"] == "ok"
    assert response.json["checks"]["broker"].startswith("failed: ConnectionError")
    assert "127.0.0.1" not in str(response.json)  # details are logged, not published


def test_unreachable_database_is_503_naming_the_database(clients):
    response = clients(UNREACHABLE_DATABASE, None).get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["database"].startswith("failed: OperationalError")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never answers: a database host that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_hanging_database_times_out_and_the_probe_still_answers(clients, silent_server):
    client = clients(f"postgresql+psycopg://postgres@127.0.0.1:{silent_server}/callpush", None)
    started = time.monotonic()
    first = client.get("/readyz")
    elapsed = time.monotonic() - started
    assert first.status_code == 503
    assert first.json["checks"]["database"] == f"timed out after {DATABASE_TIMEOUT:g}s"
    assert DATABASE_TIMEOUT <= elapsed < DATABASE_TIMEOUT + 1.5
    # The hung check still holds its thread: the next probe answers at once, not after
    # queueing behind it.
    started = time.monotonic()
    second = client.get("/readyz")
    assert time.monotonic() - started < 0.5
    assert second.status_code == 503 and "still running" in second.json["checks"]["database"]


def scrape(client) -> tuple[str, dict[str, list]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    text = response.get_data(as_text=True)
    return text, {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_metrics_text_names_every_callpush_metric(clients, sqlite_url):
    text, families = scrape(clients(sqlite_url, None))
    for name in METRIC_NAMES:
        assert f"# TYPE {name} " in text, name
    # The embedded mode has no broker to read queue depths from.
    assert "callpush_queue_depth" not in families


@pytest.mark.services
def test_metrics_report_the_redis_queue_depths(clients, sqlite_url, redis_url):
    import redis

    broker = redis.Redis.from_url(redis_url)
    broker.rpush("ring", "a", "b")
    broker.rpush("bulk", "c")
    try:
        _, families = scrape(clients(sqlite_url, redis_url))
    finally:
        broker.close()
    depths = {s.labels["queue"]: s.value for s in families["callpush_queue_depth"]}
    assert depths == {"ring": 2, "bulk": 1}


def test_a_dead_broker_does_not_fail_the_scrape(clients, sqlite_url):
    text, families = scrape(clients(sqlite_url, DEAD_BROKER))
    assert "callpush_queue_depth" not in families
    assert "# TYPE callpush_webhooks_total " in text
