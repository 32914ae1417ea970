"""Engine and session factory.  SQLite for the embedded mode, PostgreSQL in production.

Every wait on PostgreSQL is bounded (``[database]`` settings): connecting (libpq
``connect_timeout``), a pooled connection (``pool_timeout``), a statement on a working server
(``statement_timeout``, set at connect time: no extra round trip per transaction), and a server
that stops answering altogether (:mod:`worker.storage.stall_guard`, plus TCP keepalives and
``tcp_user_timeout`` for a peer that vanishes).  The web processes also stop trying a database
that keeps failing for a moment (``fail_fast``), so it cannot hold every request thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from worker.foundation import metrics
from worker.foundation.circuit_breaker import CircuitBreaker, CircuitState
from worker.foundation.settings import DatabaseSettings
from worker.storage.stall_guard import StallGuard, guard_dialect

# A statement gets this much longer than the server's statement_timeout before callpush gives
# up on the server: a working server answers with its own timeout error first.
STALL_GRACE_SECONDS = 1.0
# TCP keepalive probes on idle pooled connections (libpq keepalives_*): a vanished database host
# is noticed within about idle + interval * count seconds.
KEEPALIVE_IDLE_SECONDS = 10
KEEPALIVE_INTERVAL_SECONDS = 3
KEEPALIVE_COUNT = 3


class DatabaseUnavailable(SQLAlchemyError):
    """The database failed repeatedly just now; not tried again for a moment (fail-fast)."""


class Database:
    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        durable_commits: bool = True,
        timeouts: DatabaseSettings | None = None,
        statement_timeout: float | None = None,
        fail_fast: bool = False,
    ) -> None:
        """``durable_commits=False`` (the workers): PostgreSQL answers a commit before its WAL
        reaches the disk, which takes milliseconds off every ring.  A database crash may then
        forget the last fraction of a second of delivery records, and a push whose record was
        lost may be sent again; the inbox, written by the receiver, stays durable.

        ``statement_timeout`` overrides ``timeouts.statement_timeout_seconds`` (the web
        processes pass the shorter ``web_statement_timeout_seconds``).  ``fail_fast``: after
        ``timeouts.breaker_failures`` consecutive connection failures, :meth:`transaction`
        raises :class:`DatabaseUnavailable` at once for ``breaker_reset_seconds``."""
        self.url = url
        self.timeouts = timeouts or DatabaseSettings()
        self.statement_timeout = statement_timeout or self.timeouts.statement_timeout_seconds
        self.stall_guard: StallGuard | None = None
        self.engine = self._make_engine(url, echo=echo, durable_commits=durable_commits)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.breaker: CircuitBreaker | None = None
        if fail_fast and not self.is_sqlite:
            self.breaker = CircuitBreaker(
                "database",
                failure_threshold=self.timeouts.breaker_failures,
                reset_seconds=self.timeouts.breaker_reset_seconds,
                on_state_change=lambda _b, _old, new: metrics.record_circuit_state(
                    "database", new.severity
                ),
            )

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def circuit_open(self) -> bool:
        return self.breaker is not None and self.breaker.state is CircuitState.OPEN

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any error."""
        breaker = self.breaker
        if breaker is None:
            with self.sessions.begin() as session:
                yield session
            return
        if not breaker.allow():
            raise DatabaseUnavailable("the database failed repeatedly; not tried for a moment")
        try:
            with self.sessions.begin() as session:
                yield session
        except (OperationalError, PoolTimeout):
            breaker.record_failure()  # connect, timeout, server gone: the database, not us
            raise
        except BaseException:
            breaker.record_success()  # the database answered (an integrity error, our bug)
            raise
        breaker.record_success()

    def dispose(self) -> None:
        self.engine.dispose()
        if self.stall_guard is not None:
            self.stall_guard.close()

    def _make_engine(self, url: str, *, echo: bool, durable_commits: bool) -> Engine:
        if url.startswith("sqlite"):
            engine = create_engine(
                url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
            )
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        # No pool_pre_ping: it costs a round trip on every checkout, several per ring.
        # Connections are recycled instead, and one broken by a database restart fails a single
        # transaction (the receiver answers 503 and Stream retries; a task is retried or swept).
        engine = create_engine(
            url,
            echo=echo,
            pool_recycle=300,
            pool_size=10,
            max_overflow=20,
            pool_timeout=self.timeouts.pool_timeout_seconds,
            connect_args=self._connect_args(url, durable_commits=durable_commits),
        )
        if engine.dialect.name == "postgresql":
            self.stall_guard = StallGuard(self.statement_timeout + STALL_GRACE_SECONDS)
            guard_dialect(engine.dialect, self.stall_guard)
        return engine

    def _connect_args(self, url: str, *, durable_commits: bool) -> dict[str, Any]:
        """libpq parameters (https://www.postgresql.org/docs/current/libpq-connect.html), all
        applied while connecting, so no transaction pays a round trip for them."""
        if make_url(url).get_backend_name() != "postgresql":
            return {}
        stall_ms = int((self.statement_timeout + STALL_GRACE_SECONDS) * 1000)
        server_options = [f"-c statement_timeout={int(self.statement_timeout * 1000)}"]
        if not durable_commits:
            # https://www.postgresql.org/docs/current/wal-async-commit.html: no risk of
            # corruption, only of losing the most recent commits on a server crash.
            server_options.append("-c synchronous_commit=off")
        given = make_url(url).query.get("options")
        if given:  # the operator's own options in the URL come first
            server_options.insert(0, given if isinstance(given, str) else " ".join(given))
        return {
            "connect_timeout": self.timeouts.connect_timeout_seconds,
            "options": " ".join(server_options),
            "keepalives": 1,
            "keepalives_idle": KEEPALIVE_IDLE_SECONDS,
            "keepalives_interval": KEEPALIVE_INTERVAL_SECONDS,
            "keepalives_count": KEEPALIVE_COUNT,
            # Unacknowledged data (a host that is gone) fails the connection after this.
            "tcp_user_timeout": stall_ms,
        }


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the receiver write while the in-process worker reads; foreign keys are off by
    # default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
