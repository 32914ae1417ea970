"""Alembic environment.  Run through :mod:`worker.storage.migrations`, which builds the
configuration in code (script location, database URL); there is no alembic.ini."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text

from worker.storage.migrations import CONTEXT_OPTIONS, DATABASE_URL_ATTRIBUTE
from worker.storage.models import Base

config = context.config
target_metadata = Base.metadata

# Any fixed 64-bit number: concurrent `callpush db upgrade` runs (several containers starting at
# once) serialize on it instead of racing to create the same tables.
_PG_MIGRATION_LOCK = 0x63616C6C70757368  # "callpush"


def _database_url() -> str:
    url = config.attributes.get(DATABASE_URL_ATTRIBUTE) or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: run migrations through worker.storage.migrations")
    return str(url)


def run_migrations_offline() -> None:
    """`--sql` mode: print the DDL instead of running it."""
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **CONTEXT_OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, **CONTEXT_OPTIONS)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Held until this transaction ends; taken before alembic reads alembic_version, so
            # the second of two concurrent upgrades sees the first one's result.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
            )
        context.run_migrations()


def run_migrations_online() -> None:
    # NullPool: a migration is one short-lived connection; nothing should linger afterwards.
    # A plain engine (not worker.storage.database's) keeps SQLite's foreign keys off, which
    # batch "move and copy" table rebuilds need.
    engine = create_engine(_database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
