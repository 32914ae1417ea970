"""Engine and session factory.  SQLite for the embedded mode, PostgreSQL in production."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


class Database:
    def __init__(self, url: str, *, echo: bool = False, durable_commits: bool = True) -> None:
        """``durable_commits=False`` (the workers): PostgreSQL answers a commit before its WAL
        reaches the disk, which takes milliseconds off every ring.  A database crash may then
        forget the last fraction of a second of delivery records, and a push whose record was
        lost may be sent again; the inbox, written by the receiver, stays durable."""
        self.url = url
        self.engine = _make_engine(url, echo=echo)
        if not durable_commits and self.engine.dialect.name == "postgresql":
            event.listen(self.engine, "connect", _asynchronous_commit)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any error."""
        with self.sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def _make_engine(url: str, *, echo: bool) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pool_pre_ping: it costs a round trip on every checkout, several per ring.  Connections
    # are recycled instead, and one broken by a database restart fails a single transaction
    # (the receiver answers 503 and Stream retries; a task is retried or swept).
    return create_engine(url, echo=echo, pool_recycle=300, pool_size=10, max_overflow=20)


def _asynchronous_commit(dbapi_connection: Any, _record: Any) -> None:
    # https://www.postgresql.org/docs/current/wal-async-commit.html: no risk of corruption,
    # only of losing the most recent commits on a server crash.
    cursor = dbapi_connection.cursor()
    cursor.execute("SET synchronous_commit TO OFF")
    cursor.close()
    dbapi_connection.commit()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the receiver write while the in-process worker reads; foreign keys are off by
    # default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
