"""/healthz, /readyz and /metrics on the real app: ready against a real PostgreSQL and Redis,
unavailable (503, naming the failed check) with a dead broker or an unreachable or hanging
database, and the metrics in Prometheus text format."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.project_version import pyproject_version
from webhook_app import create_app
from webhook_app.health import DATABASE_TIMEOUT
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
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
    assert response.status_code == 200
    # With the version, so a rolling deploy shows which processes run the new one.
    assert response.json == {"status": "ok", "version": pyproject_version()}


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


@pytest.mark.services
def test_a_hanging_database_times_out_and_the_probe_still_answers(clients, postgres_url, blackhole):
    """The database freezes under a warm pool (tests/fakes/blackhole.py): the check's
    ``select 1`` waits on a connection that never answers, the probe answers 503 within its
    bound, and the next probe does not queue behind the hung check."""
    from sqlalchemy import make_url

    target = make_url(postgres_url)
    blackhole.forward_to(target.host or "127.0.0.1", target.port or 5432)
    client = clients(target.set(port=blackhole.port).render_as_string(False), None)
    assert client.get("/readyz").status_code == 200  # the pool now holds a connection
    blackhole.blackhole()
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


def test_a_database_host_that_never_answers_is_503_within_the_bound(clients, blackhole):
    client = clients(f"postgresql+psycopg://postgres@127.0.0.1:{blackhole.port}/callpush", None)
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < DATABASE_TIMEOUT + 1.0
    assert response.status_code == 503
    assert response.json["checks"]["database"] in (
        f"timed out after {DATABASE_TIMEOUT:g}s",
        "failed: OperationalError",  # the connect_timeout (2 s) fired first
    )
    assert client.get("/healthz").status_code == 200


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
    (info,) = families["callpush_build_info"]
    assert info.labels["version"] == pyproject_version() and info.value == 1
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
