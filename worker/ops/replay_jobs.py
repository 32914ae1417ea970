"""Running a replay for an operator (`callpush events replay`, the admin API, the dashboard):
choose the events, describe a dry run, then reopen each one and hand it on
(worker/foundation/handoff.py).

The replay rules themselves (what is re-sent, what ``force`` changes) are in
:mod:`worker.ops.replay`; the hand-off decides where processing happens: the bulk queue
(:func:`worker.runtime.tasks.CeleryHandoff`) or, in the embedded mode, inline
(:class:`worker.runtime.inline_handoff.InlineHandoff`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from worker.delivery.ringing import ring_deadline
from worker.foundation.handoff import Handoff
from worker.intake.webhooks import needs_processing
from worker.ops.replay import EventReplay, plan_replay, reopen_for_replay
from worker.storage.database import Database
from worker.storage.inbox import StoredEvent
from worker.storage.models import EventStatus, WebhookEvent, utcnow
from worker.stream.event_age import stale_reason
from worker.stream.events import RING, InvalidEvent, parse_stored_body

log = logging.getLogger("callpush.replay")

# A bulk replay selects at most this many events; a bigger outage is replayed window by window.
MAX_SELECTED = 10_000


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    replay: EventReplay
    # A ring whose deadline has passed: without --force its pushes are recorded as expired
    # again, not sent (a stale ring must not make a phone ring).
    ring_over: bool
    # Why the event is not pushed, however often it is replayed, unless replayed with
    # allow_stale: it arrived longer after Stream created it than intake.max_event_age_seconds.
    stale: str | None = None

    @property
    def pushes_nothing(self) -> bool:
        return self.ring_over or self.stale is not None


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    events: list[PlannedEvent]
    unknown: list[int] = field(default_factory=list)
    force: bool = False
    allow_stale: bool = False

    @property
    def devices(self) -> int:
        """Pushes the replay would send (an expired ring's are recorded as expired instead, a
        stale event's not at all)."""
        return sum(len(p.replay.resend) for p in self.events if not p.pushes_nothing)


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    reopened: list[int]
    unknown: list[int]
    # Reopened, but the broker refused the task: the inbox sweeper queues them later.
    not_queued: list[int]


def failed_event_ids(
    session: Session,
    since: datetime,
    until: datetime | None = None,
    event_type: str | None = None,
    api_key: str | None = None,
    limit: int = MAX_SELECTED,
) -> list[int]:
    """Events that failed, received in [since, until), oldest first (of one app's, with
    ``api_key``), at most ``limit``."""
    query = _failed_events(select(WebhookEvent.id), since, until, event_type, api_key)
    return list(session.scalars(query.order_by(WebhookEvent.id).limit(limit)))


def count_failed_events(
    session: Session,
    since: datetime,
    until: datetime | None = None,
    event_type: str | None = None,
    api_key: str | None = None,
) -> int:
    """How many events :func:`failed_event_ids` would select without its limit."""
    query = _failed_events(select(func.count()), since, until, event_type, api_key)
    return session.scalar(query) or 0


def _failed_events(
    query: Select[Any],
    since: datetime,
    until: datetime | None,
    event_type: str | None,
    api_key: str | None,
) -> Select[Any]:
    query = query.select_from(WebhookEvent).where(
        WebhookEvent.status == EventStatus.FAILED, WebhookEvent.received_at >= since
    )
    if api_key is not None:
        query = query.where(WebhookEvent.api_key == api_key)
    if until is not None:
        query = query.where(WebhookEvent.received_at < until)
    if event_type is not None:
        query = query.where(WebhookEvent.event_type == event_type)
    return query


def describe_replay(
    session: Session,
    event_ids: Sequence[int],
    force: bool,
    default_ring_timeout_ms: int,
    now: datetime | None = None,
    *,
    max_event_age: timedelta | None = None,
    allow_stale: bool = False,
) -> ReplayPlan:
    """What a replay would do (a dry run): changes nothing.  ``max_event_age`` (the setting
    intake.max_event_age_seconds) marks the events that arrived too old to push."""
    moment = now or utcnow()
    plans = plan_replay(session, event_ids, force)
    found = {p.event_id for p in plans}
    events = []
    for plan in plans:
        row = session.get(WebhookEvent, plan.event_id)
        assert row is not None  # plan_replay just read it
        over = False
        if plan.event_type == RING and not force:
            over = _ring_is_over(row, default_ring_timeout_ms, moment)
        stale = None
        if max_event_age is not None and not (allow_stale or row.allow_stale):
            stale = _arrived_stale(row, max_event_age)
        events.append(PlannedEvent(plan, over, stale))
    unknown = [i for i in dict.fromkeys(event_ids) if i not in found]
    return ReplayPlan(events, unknown, force, allow_stale)


def replay_events(
    db: Database,
    event_ids: Sequence[int],
    force: bool,
    handoff: Handoff,
    progress: Callable[[int], None] | None = None,
    *,
    allow_stale: bool = False,
) -> ReplayOutcome:
    """Reopen each event (its own transaction, committed before dispatch so a worker sees it)
    and dispatch it.  ``progress(event_id)`` is called after each one.  Without
    ``allow_stale`` an event that arrived stale is processed again and ignored again."""
    reopened: list[int] = []
    unknown: list[int] = []
    not_queued: list[int] = []
    for event_id in dict.fromkeys(event_ids):
        with db.transaction() as session:
            found = reopen_for_replay(session, event_id, force, allow_stale)
        if not found:
            unknown.append(event_id)
        else:
            reopened.append(event_id)
            try:
                handoff.queue_replay(event_id)
            except Exception as error:
                # Committed as "received": the inbox sweeper queues it once the broker is back.
                # A broker that is down is expected: one line, no traceback.
                log.warning(
                    "replay of event %s reopened but not queued (%s: %s)",
                    event_id,
                    type(error).__name__,
                    error,
                )
                not_queued.append(event_id)
        if progress is not None:
            progress(event_id)
    log.info(
        "replay%s%s: %d reopened, %d unknown, %d not queued",
        " (force)" if force else "",
        " (allow stale)" if allow_stale else "",
        len(reopened),
        len(unknown),
        len(not_queued),
    )
    return ReplayOutcome(reopened, unknown, not_queued)


def final_statuses(session: Session, event_ids: Sequence[int]) -> dict[str, int]:
    """Events by status, for the summary of an inline replay."""
    counts: dict[str, int] = {}
    if event_ids:
        for status in session.scalars(
            select(WebhookEvent.status).where(WebhookEvent.id.in_(list(event_ids)))
        ):
            counts[status] = counts.get(status, 0) + 1
    return counts


def _ring_is_over(row: WebhookEvent, default_timeout_ms: int, now: datetime) -> bool:
    try:
        event = parse_stored_body(row.body)
        stored = StoredEvent(row.id, row.received_at, row.api_key)
        return ring_deadline(event, stored, default_timeout_ms) <= now
    except InvalidEvent:
        return False  # processing records it as failed again, with the reason
    except Exception:
        # One event nobody can read must not break the replay of all the others.
        log.exception("replay: could not tell whether ring %s is over", row.id)
        return False


def _arrived_stale(row: WebhookEvent, max_age: timedelta) -> str | None:
    if not needs_processing(row.event_type):
        return None
    return stale_reason(row.event_created_at, row.received_at, max_age)
