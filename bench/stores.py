"""The benchmarks' PostgreSQL database and Redis database: made fresh for a run, filled with
devices, and read back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bench.environment import API_KEY, DB_NAME, PG_ADMIN_URL, REDIS_URL
from tests.e2e import processes


def fresh_database(name: str = DB_NAME) -> str:
    """Drop and create ``name``; returns its SQLAlchemy URL.  Left in place after the run, for a
    look at what it stored."""
    return processes.create_database(PG_ADMIN_URL, name)


def flush_redis(url: str = REDIS_URL) -> None:
    processes.flush_redis(url)


def psycopg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def insert_devices(
    db_url: str, rows: Sequence[tuple[str, str, str, bool]], api_key: str = API_KEY
) -> None:
    """(user_id, platform, token, voip) rows of the app ``api_key`` straight into the devices
    table (COPY)."""
    import psycopg

    now = datetime.now(UTC)
    columns = "api_key, user_id, platform, token, voip, source, created_at, registered_at"
    with psycopg.connect(psycopg_dsn(db_url)) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY devices ({columns}) FROM STDIN") as copy:
            for user_id, plat, token, voip in rows:
                copy.write_row((api_key, user_id, plat, token, voip, "local", now, now))
        conn.commit()


def sql(db_url: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(psycopg_dsn(db_url)) as conn, conn.cursor() as cur:
        cur.execute(query, params)  # type: ignore[arg-type]
        return list(cur.fetchall()) if cur.description else []


def unfinished_events(db_url: str) -> int:
    """Inbox events not yet processed (received or processing): 0 once a run has drained."""
    query = "select count(*) from webhook_events where status in ('received', 'processing')"
    return int(sql(db_url, query)[0][0])
