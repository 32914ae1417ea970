"""Fixtures for the real services.

PostgreSQL and Redis tests are marked ``services``.  Without the servers they are skipped with the
reason; under ``CI=true`` a missing server is an error, never a skip.

The servers may be shared with other work on the machine, so the suite keeps to its own:
PostgreSQL tests each create (and drop) a database named ``callpush_test_<random>`` through
``CALLPUSH_TEST_POSTGRES_URL``; Redis tests use the one database named in
``CALLPUSH_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/13``) and empty it before and after
each test, so point that at a database nothing else uses (and give two suites running at once
two different ones).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import flush_redis, temporary_database
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head

pytest_plugins = ["tests.fakes.pytest_plugin", "tests.fakes.stream_api_plugin"]

POSTGRES_ADMIN_URL = os.environ.get(
    "CALLPUSH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CALLPUSH_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _unavailable(what: str, error: Exception) -> None:
    message = f"{what} is not reachable ({error.__class__.__name__}: {error})"
    if IN_CI:
        pytest.fail(f"{message}; under CI=true the real-service tests must run", pytrace=False)
    pytest.skip(f"{message}; start it to run this test")


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as error:
        _unavailable("PostgreSQL at " + POSTGRES_ADMIN_URL, error)
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with temporary_database(postgres_admin_url, f"callpush_test_{uuid.uuid4().hex[:12]}") as url:
        yield url


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as error:
        _unavailable("Redis at " + REDIS_URL, error)
    return REDIS_URL


@pytest.fixture
def redis_url(redis_server_url: str) -> Iterator[str]:
    """The suite's own Redis database (``CALLPUSH_TEST_REDIS_URL``), emptied before and after
    the test."""
    flush_redis(redis_server_url)
    try:
        yield redis_server_url
    finally:
        flush_redis(redis_server_url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'callpush.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def database_url(request: pytest.FixtureRequest) -> str:
    """The same test on each database callpush supports: a fresh SQLite file, then a fresh
    PostgreSQL database (marked ``services``, so a missing server fails it under CI=true)."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """``database_url`` migrated to the newest schema."""
    upgrade_to_head(database_url)
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CALLPUSH_* variable or ./callpush.toml of the developer's leaks into a test that loads
    the settings: the variables are removed and the test runs in its own empty directory."""
    for name in list(os.environ):
        if name.upper().startswith("CALLPUSH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


# RabbitMQ tests use the one virtual host named in ``CALLPUSH_TEST_RABBITMQ_URL`` and delete
# callpush's queues in it before and after each test (the broker's counterpart of FLUSHDB), so
# point that at a vhost nothing else uses (``rabbitmqctl add_vhost callpush_test`` and
# ``rabbitmqctl set_permissions -p callpush_test guest '.*' '.*' '.*'``).
RABBITMQ_URL = os.environ.get(
    "CALLPUSH_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/callpush_test"
)
# What a worker declares: the two task queues and native delayed delivery's 28 level queues.
RABBITMQ_QUEUES = ("ring", "bulk", *(f"celery_delayed_{level}" for level in range(28)))


@pytest.fixture(scope="session")
def rabbitmq_server_url() -> str:
    from kombu import Connection

    try:
        with Connection(RABBITMQ_URL, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as error:
        _unavailable("RabbitMQ at " + RABBITMQ_URL, error)
    return RABBITMQ_URL


def _delete_rabbitmq_queues(url: str) -> None:
    from kombu import Connection, pools

    with Connection(url, connect_timeout=2) as connection:
        for name in RABBITMQ_QUEUES:
            # Deleting a queue that does not exist is not an error in AMQP 0-9-1.
            connection.default_channel.queue_delete(name)
    # Celery publishes through kombu's process-wide producer pools, whose connections remember
    # the queues they declared: a later test's publish would not declare the queue again, and
    # RabbitMQ would drop the message as unroutable.
    pools.reset()


@pytest.fixture
def rabbitmq_url(rabbitmq_server_url: str) -> Iterator[str]:
    """The suite's own RabbitMQ vhost (``CALLPUSH_TEST_RABBITMQ_URL``), without callpush's
    queues before and after the test."""
    _delete_rabbitmq_queues(rabbitmq_server_url)
    try:
        yield rabbitmq_server_url
    finally:
        _delete_rabbitmq_queues(rabbitmq_server_url)


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """The same test on each broker callpush supports: Redis, then RabbitMQ."""
    return str(request.getfixturevalue(f"{request.param}_url"))
