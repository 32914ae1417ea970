"""Fan-out bookkeeping: the chunks of one event and whether they are all finished."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worker.storage.models import ChunkStatus, Delivery, FanoutChunk, WebhookEvent, utcnow
from worker.storage.upsert import insert_ignoring_conflicts


def add_chunk(
    session: Session, event_id: int, chunk_index: int, recipients: Sequence[tuple[str, str]]
) -> bool:
    """Store a chunk; False when a previous planning run already stored it (a redelivery)."""
    statement = (
        insert_ignoring_conflicts(session, FanoutChunk, ["event_id", "chunk_index"])
        .values(
            event_id=event_id,
            chunk_index=chunk_index,
            recipients=json.dumps([list(r) for r in recipients]),
            status=ChunkStatus.PENDING,
            attempts=0,
        )
        .returning(FanoutChunk.chunk_index)
    )
    return session.execute(statement).scalar_one_or_none() is not None


def pending_chunks(session: Session, event_id: int) -> list[int]:
    return list(
        session.scalars(
            select(FanoutChunk.chunk_index).where(
                FanoutChunk.event_id == event_id, FanoutChunk.status == ChunkStatus.PENDING
            )
        )
    )


def load_chunk_recipients(
    session: Session, event_id: int, chunk_index: int
) -> list[tuple[str, str]] | None:
    """The (user id, display name) pairs of a pending chunk; None once it is finished."""
    chunk = session.get(FanoutChunk, (event_id, chunk_index))
    if chunk is None or chunk.status != ChunkStatus.PENDING:
        return None
    chunk.attempts += 1
    return [(user_id, name) for user_id, name in json.loads(chunk.recipients)]


def finish_chunk(
    session: Session, event_id: int, chunk_index: int, status: str, reason: str | None = None
) -> None:
    session.execute(
        update(FanoutChunk)
        .where(FanoutChunk.event_id == event_id, FanoutChunk.chunk_index == chunk_index)
        .values(status=status, reason=reason, finished_at=utcnow())
    )


def set_planned(session: Session, event_id: int, chunk_count: int) -> None:
    session.execute(
        update(WebhookEvent).where(WebhookEvent.id == event_id).values(fanout_chunks=chunk_count)
    )


def completion(session: Session, event_id: int) -> tuple[bool, int]:
    """(every planned chunk finished, how many failed)."""
    planned = session.scalar(select(WebhookEvent.fanout_chunks).where(WebhookEvent.id == event_id))
    if planned is None:
        return False, 0
    rows = session.execute(
        select(FanoutChunk.status, func.count())
        .where(FanoutChunk.event_id == event_id)
        .group_by(FanoutChunk.status)
    ).all()
    counts: dict[str, int] = {status: n for status, n in rows}
    finished = counts.get(ChunkStatus.DONE, 0) + counts.get(ChunkStatus.FAILED, 0)
    return finished >= planned, counts.get(ChunkStatus.FAILED, 0)


def delivery_summary(session: Session, event_id: int) -> str:
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.event_id == event_id)
        .group_by(Delivery.status)
        .order_by(Delivery.status)
    ).all()
    return ", ".join(f"{n} {status}" for status, n in rows) or "no devices"


def failed_chunk_reason(session: Session, event_id: int) -> str | None:
    """Why the first failed chunk of the event failed."""
    return session.scalar(
        select(FanoutChunk.reason)
        .where(FanoutChunk.event_id == event_id, FanoutChunk.status == ChunkStatus.FAILED)
        .order_by(FanoutChunk.chunk_index)
        .limit(1)
    )
