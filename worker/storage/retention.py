"""Retention: events older than a configured age are deleted with their deliveries and chunks.

Children are deleted explicitly rather than through ``ON DELETE CASCADE``: the counts are
reported, and it works the same whether or not a SQLite connection enforces foreign keys.  A big
backlog is deleted in batches, one transaction each, so the inbox is never locked for long.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from worker.foundation.durations import format_duration
from worker.storage.database import Database
from worker.storage.models import Delivery, FanoutChunk, WebhookEvent, utcnow

# Anything younger may still be waiting in the inbox for a worker (a broker outage): purging it
# would break the at-least-once promise, so shorter ages are refused.
MIN_AGE = timedelta(hours=1)
BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    events: int = 0
    deliveries: int = 0
    chunks: int = 0

    def __add__(self, other: PurgeCounts) -> PurgeCounts:
        return PurgeCounts(
            self.events + other.events,
            self.deliveries + other.deliveries,
            self.chunks + other.chunks,
        )

    def as_dict(self) -> dict[str, int]:
        return {"events": self.events, "deliveries": self.deliveries, "chunks": self.chunks}


def cutoff_for(age: timedelta, now: datetime | None = None) -> datetime:
    if age < MIN_AGE:
        raise ValueError(
            f"refusing to purge events younger than {format_duration(MIN_AGE)} (the live inbox)"
        )
    return (now or utcnow()) - age


def purge_older_than(
    session: Session, age: timedelta, *, now: datetime | None = None, limit: int | None = None
) -> PurgeCounts:
    """Delete up to ``limit`` (default: all) events received more than ``age`` ago, with their
    deliveries and fan-out chunks, in the caller's transaction."""
    cutoff = cutoff_for(age, now)
    query = (
        select(WebhookEvent.id).where(WebhookEvent.received_at < cutoff).order_by(WebhookEvent.id)
    )
    if limit is not None:
        query = query.limit(limit)
    ids = list(session.scalars(query))
    if not ids:
        return PurgeCounts()
    deliveries = session.execute(delete(Delivery).where(Delivery.event_id.in_(ids)))
    chunks = session.execute(delete(FanoutChunk).where(FanoutChunk.event_id.in_(ids)))
    events = session.execute(delete(WebhookEvent).where(WebhookEvent.id.in_(ids)))
    return PurgeCounts(
        events=events.rowcount,  # type: ignore[attr-defined]
        deliveries=deliveries.rowcount,  # type: ignore[attr-defined]
        chunks=chunks.rowcount,  # type: ignore[attr-defined]
    )


def purge_in_batches(
    db: Database, age: timedelta, *, batch_size: int = BATCH_SIZE, now: datetime | None = None
) -> PurgeCounts:
    """:func:`purge_older_than` in transactions of ``batch_size`` events, until none is left.
    The cutoff is fixed once, so a slow purge does not chase the clock."""
    fixed_now = now or utcnow()
    cutoff_for(age, fixed_now)  # refuse a too-short age before touching anything
    total = PurgeCounts()
    while True:
        with db.transaction() as session:
            counts = purge_older_than(session, age, now=fixed_now, limit=batch_size)
        total += counts
        if counts.events < batch_size:
            return total


def count_older_than(session: Session, age: timedelta, *, now: datetime | None = None) -> int:
    """How many events a purge would delete (``--dry-run``)."""
    cutoff = cutoff_for(age, now)
    found = session.scalar(
        select(func.count()).select_from(WebhookEvent).where(WebhookEvent.received_at < cutoff)
    )
    return int(found or 0)
