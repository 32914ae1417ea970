"""Every wait on a real PostgreSQL is bounded: a host that never answers (tests/fakes/
blackhole.py), a server that freezes under a warm pool, a slow statement, an exhausted pool;
and the web processes' fail-fast circuit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tests.fakes.blackhole import Blackhole
from worker.foundation.circuit_breaker import CircuitState
from worker.foundation.settings import DatabaseSettings
from worker.storage.database import STALL_GRACE_SECONDS, Database, DatabaseUnavailable

pytestmark = pytest.mark.services


@pytest.fixture
def through_blackhole(postgres_url: str, blackhole: Blackhole) -> str:
    """The test database's URL through the blackhole, which forwards to PostgreSQL until the
    test calls ``blackhole.blackhole()``."""
    target = make_url(postgres_url)
    blackhole.forward_to(target.host or "127.0.0.1", target.port or 5432)
    return target.set(port=blackhole.port).render_as_string(hide_password=False)


@pytest.fixture
def databases() -> Iterator:
    made: list[Database] = []

    def make(url: str, **kwargs) -> Database:  # type: ignore[no-untyped-def]
        db = Database(url, **kwargs)
        made.append(db)
        return db

    yield make
    for db in made:
        db.dispose()


def ping(db: Database) -> None:
    with db.transaction() as session:
        session.execute(text("select 1"))


def test_a_host_that_never_answers_fails_the_connect_within_connect_timeout(databases, blackhole):
    db = databases(f"postgresql+psycopg://postgres@127.0.0.1:{blackhole.port}/x")
    started = time.monotonic()
    with pytest.raises(OperationalError, match="timeout"):
        ping(db)
    assert 1.9 < time.monotonic() - started < 3.0  # connect_timeout_seconds = 2


def test_a_server_that_freezes_under_a_warm_pool_is_cut_off(
    databases, through_blackhole, blackhole
):
    db = databases(through_blackhole, statement_timeout=1.0)
    ping(db)  # the pool holds a live connection now
    blackhole.blackhole()
    started = time.monotonic()
    with pytest.raises(OperationalError, match="closed the connection"):
        ping(db)
    elapsed = time.monotonic() - started
    # statement_timeout + the grace, checked every 0.1 s; PostgreSQL's own timeout cannot fire.
    assert 1.0 + STALL_GRACE_SECONDS <= elapsed < 1.0 + STALL_GRACE_SECONDS + 1.0
    assert db.stall_guard is not None and db.stall_guard.fired == 1


def test_a_slow_statement_on_a_working_server_is_cancelled_by_postgresql(databases, postgres_url):
    db = databases(postgres_url, statement_timeout=0.5)
    started = time.monotonic()
    with (
        pytest.raises(OperationalError, match="statement timeout"),
        db.transaction() as session,
    ):
        session.execute(text("select pg_sleep(3)"))
    assert time.monotonic() - started < 1.5
    assert db.stall_guard is not None and db.stall_guard.fired == 0  # the server answered
    ping(db)  # and the pool goes on


def test_statements_under_the_bound_are_left_alone(databases, postgres_url):
    db = databases(postgres_url, statement_timeout=1.0)
    with db.transaction() as session:
        assert session.execute(text("select pg_sleep(0.6), 1")).one()[1] == 1
    assert db.stall_guard is not None and db.stall_guard.fired == 0


def test_workers_commit_asynchronously_and_every_connection_has_the_timeout(
    databases, postgres_url
):
    """Both set while connecting (libpq ``options``): no round trip per transaction."""
    db = databases(postgres_url, durable_commits=False)
    with db.transaction() as session:
        assert session.execute(text("show synchronous_commit")).scalar() == "off"
        assert session.execute(text("show statement_timeout")).scalar() == "10s"
    web = databases(postgres_url, statement_timeout=2.0)
    with web.transaction() as session:
        assert session.execute(text("show synchronous_commit")).scalar() == "on"
        assert session.execute(text("show statement_timeout")).scalar() == "2s"


def test_an_exhausted_pool_waits_at_most_pool_timeout(databases, postgres_url):
    db = databases(postgres_url, timeouts=DatabaseSettings(pool_timeout_seconds=0.5))
    held = [db.engine.connect() for _ in range(30)]  # pool_size 10 + max_overflow 20
    try:
        started = time.monotonic()
        with pytest.raises(PoolTimeout):
            ping(db)
        assert 0.5 <= time.monotonic() - started < 1.5
    finally:
        for connection in held:
            connection.close()


def test_fail_fast_stops_trying_a_dead_database_and_retries_it_later(
    databases, through_blackhole, blackhole, postgres_url
):
    blackhole.blackhole()
    db = databases(
        through_blackhole,
        timeouts=DatabaseSettings(breaker_failures=2, breaker_reset_seconds=1.0),
        fail_fast=True,
    )
    for _ in range(2):
        with pytest.raises(OperationalError):
            ping(db)  # ~2 s each: the connect timeout
    assert db.circuit_open
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        ping(db)
    assert time.monotonic() - started < 0.05
    target = make_url(postgres_url)
    blackhole.forward_to(target.host or "127.0.0.1", target.port or 5432)
    time.sleep(1.05)
    ping(db)  # the half-open trial reaches the database again
    assert db.breaker is not None and db.breaker.state is CircuitState.CLOSED


def test_an_application_error_is_not_a_database_failure(databases, postgres_url):
    db = databases(postgres_url, timeouts=DatabaseSettings(breaker_failures=1), fail_fast=True)
    for _ in range(3):
        with pytest.raises(ZeroDivisionError), db.transaction() as session:
            session.execute(text("select 1"))
            _ = 1 / 0
    assert not db.circuit_open


def test_the_guard_never_cuts_a_connection_that_went_back_to_the_pool(databases, postgres_url):
    """Thousands of statements right at the watchdog's pace: none is cut afterwards."""
    db = databases(postgres_url, statement_timeout=0.05)  # guard at 1.05 s
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(200):
                ping(db)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and db.stall_guard is not None and db.stall_guard.fired == 0
