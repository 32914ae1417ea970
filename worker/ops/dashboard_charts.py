"""The numbers behind the dashboard's charts: pushes by result, ring latency and queue depth,
each over fixed time buckets (the last hour by the minute, the last day by the half hour).

One query per chart, grouped by bucket in the database, bounded below and above by a range on
an indexed time column (``deliveries.status, created_at``; ``webhook_events.received_at``), so
the cost follows the window, not the table.  The same SQL runs on SQLite and PostgreSQL: only
"seconds since 1970" and "round down" differ and are picked by dialect.  Plain values in,
frozen dataclasses out; ``webhook_app.svg_charts`` draws them.

Times are UTC.  A push is counted in the bucket of its ``created_at`` (when it was first
claimed, a few milliseconds after the webhook arrived), so a replay's outcome stays where the
push first was; latencies are measured from the webhook's arrival, as stored on each delivery.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from worker.ops.event_log import DELIVERY_STATUSES
from worker.storage.models import Delivery, DeliveryStatus, WebhookEvent
from worker.stream.events import RING

LAST_HOUR = (timedelta(hours=1), timedelta(minutes=1))
LAST_DAY = (timedelta(days=1), timedelta(minutes=30))
# Queue depth counts the events received this long before the window that were still waiting
# when it began; an event stuck for longer than that is not drawn (the runbook's "unfinished
# events" and the inbox sweeper deal with those).
QUEUE_LOOKBACK = timedelta(days=1)
# Latencies are grouped in the database to two significant digits (1,234 ms -> 1,200 ms), which
# keeps the rows per bucket in the hundreds; each group's largest value is what is reported.
_LATENCY_DECADES = range(2, 10)  # 100 ms .. 10^9 ms, each rounded down to a tenth of its decade
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TimeBuckets:
    """``count`` buckets of ``step`` from ``start`` (UTC); the last one holds ``now``."""

    start: datetime
    step: timedelta
    count: int
    now: datetime

    @property
    def end(self) -> datetime:
        return self.start + self.step * self.count

    @property
    def starts(self) -> tuple[datetime, ...]:
        return tuple(self.start + self.step * i for i in range(self.count))

    @property
    def span(self) -> timedelta:
        return self.step * self.count


def buckets_until(now: datetime, span: timedelta, step: timedelta) -> TimeBuckets:
    """The buckets of ``step`` covering ``span`` up to ``now``, aligned to whole steps since
    1970 (whole minutes, half hours) so their labels are round times."""
    step_s = int(step.total_seconds())
    if step_s <= 0 or span < step:
        raise ValueError("a chart needs a step of at least a second, and a span of one step")
    now = now.astimezone(UTC)
    end = _EPOCH + timedelta(seconds=(int((now - _EPOCH).total_seconds()) // step_s + 1) * step_s)
    count = int(span.total_seconds()) // step_s
    return TimeBuckets(start=end - step * count, step=step, count=count, now=now)


# --- pushes by result -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CountSeries:
    name: str  # a delivery status (README: status glossary)
    counts: tuple[int, ...]  # per bucket

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class PushesByResult:
    """Deliveries rows by status per bucket: every push, and each recipient who got none
    (``skipped``, one row per recipient).  Only statuses seen in the window have a series, in
    the order of the status glossary."""

    buckets: TimeBuckets
    series: tuple[CountSeries, ...]

    @property
    def totals(self) -> tuple[int, ...]:
        return tuple(sum(column) for column in zip(*(s.counts for s in self.series), strict=True))

    @property
    def total(self) -> int:
        return sum(s.total for s in self.series)


def pushes_by_result(
    session: Session, buckets: TimeBuckets, api_key: str | None = None
) -> PushesByResult:
    # Every status listed, so the (status, created_at) index is range-scanned once per status.
    rows = select(
        _bucket_of(session, Delivery.created_at, buckets).label("bucket"),
        Delivery.status.label("status"),
    ).where(
        Delivery.status.in_(DELIVERY_STATUSES),
        Delivery.created_at >= buckets.start,
        Delivery.created_at < buckets.end,
    )
    if api_key is not None:
        rows = rows.join(WebhookEvent, WebhookEvent.id == Delivery.event_id).where(
            WebhookEvent.api_key == api_key
        )
    grouped = rows.subquery()
    query = select(grouped.c.bucket, grouped.c.status, func.count()).group_by(
        grouped.c.bucket, grouped.c.status
    )
    counts: dict[str, list[int]] = {}
    for bucket, status, n in session.execute(query):
        if 0 <= bucket < buckets.count:
            counts.setdefault(status, [0] * buckets.count)[bucket] += int(n)
    order = {status: i for i, status in enumerate(DELIVERY_STATUSES)}
    return PushesByResult(
        buckets,
        tuple(
            CountSeries(status, tuple(values))
            for status, values in sorted(counts.items(), key=lambda kv: order[kv[0]])
        ),
    )


# --- ring latency -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LatencyBin:
    """Latencies grouped to two significant digits: ``floor_ms`` and up, ``count`` of them,
    the largest ``max_ms``."""

    floor_ms: float
    count: int
    max_ms: float


@dataclass(frozen=True, slots=True)
class Percentiles:
    count: int
    p50_ms: float | None  # None when count is 0
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class LatencySeries:
    per_bucket: tuple[Percentiles, ...]
    overall: Percentiles  # the whole window


@dataclass(frozen=True, slots=True)
class RingLatency:
    """Of the rings (``call.ring``) APNs or FCM accepted: from the webhook's arrival to the
    provider's answer, and to the phone's receipt (POST /receipts) for those that sent one."""

    buckets: TimeBuckets
    provider: LatencySeries
    phone: LatencySeries


_PROVIDER, _PHONE = 0, 1


def ring_latency(session: Session, buckets: TimeBuckets, api_key: str | None = None) -> RingLatency:
    def part(series: int, latency: Any, statuses: Sequence[str]) -> Select[Any]:
        conditions = [
            Delivery.status.in_(statuses),
            Delivery.created_at >= buckets.start,
            Delivery.created_at < buckets.end,
            latency.is_not(None),
            WebhookEvent.event_type == RING,
        ]
        if api_key is not None:
            conditions.append(WebhookEvent.api_key == api_key)
        rows = (
            select(
                _bucket_of(session, Delivery.created_at, buckets).label("bucket"),
                _two_digits(session, latency).label("bin"),
                latency.label("ms"),
            )
            .join(WebhookEvent, WebhookEvent.id == Delivery.event_id)
            .where(*conditions)
            .subquery()
        )
        return select(
            literal_column(str(series), Integer).label("series"),
            rows.c.bucket,
            rows.c.bin,
            func.count().label("n"),
            func.max(rows.c.ms).label("max_ms"),
        ).group_by(rows.c.bucket, rows.c.bin)

    query = union_all(
        part(_PROVIDER, Delivery.latency_ms, [DeliveryStatus.SENT]),
        # A receipt may come for a ring whose answer was lost (unconfirmed): it did ring.
        part(_PHONE, Delivery.phone_latency_ms, DELIVERY_STATUSES),
    )
    bins: dict[tuple[int, int], list[LatencyBin]] = {}
    for series, bucket, floor_ms, n, max_ms in session.execute(query):
        if 0 <= bucket < buckets.count:
            found = LatencyBin(float(floor_ms), int(n), float(max_ms))
            bins.setdefault((int(series), int(bucket)), []).append(found)

    def series_of(series: int) -> LatencySeries:
        per_bucket = [bins.get((series, i), []) for i in range(buckets.count)]
        return LatencySeries(
            tuple(percentiles(b) for b in per_bucket),
            percentiles(merge_bins(b for bucket in per_bucket for b in bucket)),
        )

    return RingLatency(buckets, series_of(_PROVIDER), series_of(_PHONE))


def percentiles(bins: Iterable[LatencyBin]) -> Percentiles:
    """p50 and p99 by nearest rank (the value at rank ceil(p x n)), each given as the largest
    latency in its two-digit group: exact when the group holds one value, at most ~10 % above
    the true value otherwise, never below it."""
    ordered = sorted(bins, key=lambda b: b.floor_ms)
    n = sum(b.count for b in ordered)
    if n == 0:
        return Percentiles(0, None, None)

    def at(percent: int) -> float:
        rank = max(1, -(-percent * n // 100))
        seen = 0
        for b in ordered:
            seen += b.count
            if seen >= rank:
                return b.max_ms
        return ordered[-1].max_ms

    return Percentiles(n, at(50), at(99))


def merge_bins(bins: Iterable[LatencyBin]) -> list[LatencyBin]:
    merged: dict[float, LatencyBin] = {}
    for b in bins:
        old = merged.get(b.floor_ms)
        merged[b.floor_ms] = (
            b
            if old is None
            else LatencyBin(b.floor_ms, old.count + b.count, max(old.max_ms, b.max_ms))
        )
    return list(merged.values())


# --- queue depth ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Events received but not finished (``processed_at`` unset or later) at each point: the
    window's start, each bucket's end, the last one ``now``.  Derived from the stored times, so
    it needs no sampler; a replayed event counts as waiting since it first arrived."""

    buckets: TimeBuckets
    at: tuple[datetime, ...]
    depth: tuple[int, ...]


_WAITING, _ARRIVED, _FINISHED = 0, 1, 2


def queue_depth(session: Session, buckets: TimeBuckets, api_key: str | None = None) -> QueueDepth:
    """Depth at t = events received before t and not finished before t: the events waiting at
    the window's start, plus those that arrived, minus those that finished, bucket by bucket."""
    received, processed = WebhookEvent.received_at, WebhookEvent.processed_at
    since = buckets.start - QUEUE_LOOKBACK
    app = [WebhookEvent.api_key == api_key] if api_key is not None else []

    def grouped(kind: int, column: Any, *conditions: Any) -> Select[int, int, int]:
        rows = (
            select(_bucket_of(session, column, buckets).label("bucket"))
            .where(*conditions, *app)
            .subquery()
        )
        return select(
            literal_column(str(kind), Integer).label("kind"), rows.c.bucket, func.count().label("n")
        ).group_by(rows.c.bucket)

    waiting = select(
        literal_column(str(_WAITING), Integer).label("kind"),
        literal_column("-1", Integer).label("bucket"),
        func.count().label("n"),
    ).where(
        received >= since,
        received < buckets.start,
        or_(processed.is_(None), processed >= buckets.start),
        *app,
    )
    arrived = grouped(_ARRIVED, received, received >= buckets.start, received < buckets.end)
    finished = grouped(
        _FINISHED,
        processed,
        received >= since,
        received < buckets.end,
        processed >= buckets.start,
        processed < buckets.end,
    )
    change = [0] * buckets.count
    start_depth = 0
    for kind, bucket, n in session.execute(union_all(waiting, arrived, finished)):
        if kind == _WAITING:
            start_depth = int(n)
        elif 0 <= bucket < buckets.count:
            change[bucket] += int(n) if kind == _ARRIVED else -int(n)
    depth = [start_depth]
    for delta in change:
        depth.append(depth[-1] + delta)
    ends = [min(t + buckets.step, buckets.now) for t in buckets.starts]
    return QueueDepth(buckets, (buckets.start, *ends), tuple(depth))


# --- SQL on both backends ---------------------------------------------------------------------


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _bucket_of(session: Session, column: Any, buckets: TimeBuckets) -> ColumnElement[int]:
    """The index of the bucket holding ``column``'s time (0 = the first; the caller keeps the
    range [start, end))."""
    start = int((buckets.start - _EPOCH).total_seconds())
    step = int(buckets.step.total_seconds())
    if _dialect(session) == "sqlite":
        # SQLite stores the UTC time as text, "YYYY-MM-DD HH:MM:SS.ffffff"; strftime('%s') is
        # its seconds since 1970 (https://sqlite.org/lang_datefunc.html).  The fraction is cut
        # off first: SQLite would round it to the millisecond, so 12:59:59.9999 became 13:00.
        # / of two integers rounds down when both are >= 0.
        seconds = cast(func.strftime("%s", func.substr(column, 1, 19)), Integer)
        return (seconds - start) // step
    # PostgreSQL: extract(epoch) of a timestamptz is its seconds since 1970 (numeric).
    return cast(func.floor((func.extract("epoch", column) - start) / step), Integer)


def _two_digits(session: Session, latency: Any) -> ColumnElement[float]:
    """``latency`` rounded down to two significant digits (under 100 ms: to the millisecond)."""
    sqlite = _dialect(session) == "sqlite"

    def floor_to(unit: int) -> Any:
        if sqlite:  # CAST of a positive REAL to INTEGER drops the fraction (no floor() there)
            return cast(latency / unit, Integer) * unit
        return func.floor(latency / unit) * unit

    return case(
        (latency < 100, floor_to(1)),
        *((latency < 10 ** (d + 1), floor_to(10 ** (d - 1))) for d in _LATENCY_DECADES),
        else_=floor_to(10 ** _LATENCY_DECADES[-1]),
    )
