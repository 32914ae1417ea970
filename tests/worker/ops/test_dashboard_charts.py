"""The numbers behind the dashboard's charts (worker.ops.dashboard_charts) on a real database: rows
stored through the storage layer at known times, then bucketed by the minute and the half hour,
latency percentiles, and queue depth derived from the stored times.  Runs on SQLite and on
PostgreSQL.  The clock is a fixed instant: nothing depends on when the test runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from tests.ops_data import API_KEY, Seeder, notification_body, ring_body
from worker.ops import dashboard_charts
from worker.ops.dashboard_charts import LatencyBin, TimeBuckets, buckets_until, percentiles
from worker.storage import receipts
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Delivery

OTHER_APP = "other-app-key"
# 12:00:30 UTC: the last hour's buckets are 11:01 .. 12:00 (the current minute, 12:00, last).
NOW = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)
HOUR = buckets_until(NOW, *dashboard_charts.LAST_HOUR)
DAY = buckets_until(NOW, *dashboard_charts.LAST_DAY)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def db(request):
    url = request.getfixturevalue(f"{request.param}_url")
    upgrade_to_head(url)
    database = Database(url)
    yield database
    database.dispose()


def minute(i: int, seconds: float = 0) -> datetime:
    """A time in the last hour's bucket ``i`` (0 = 11:01)."""
    return HOUR.start + timedelta(minutes=i, seconds=seconds)


def test_buckets_are_whole_minutes_and_half_hours_ending_with_the_current_one():
    assert (HOUR.start, HOUR.end, HOUR.count) == (
        datetime(2026, 5, 1, 11, 1, tzinfo=UTC),
        datetime(2026, 5, 1, 12, 1, tzinfo=UTC),
        60,
    )
    assert (DAY.start, DAY.end, DAY.count) == (
        datetime(2026, 4, 30, 12, 30, tzinfo=UTC),
        datetime(2026, 5, 1, 12, 30, tzinfo=UTC),
        48,
    )
    assert DAY.starts[-1] <= NOW < DAY.end
    on_the_minute = buckets_until(
        datetime(2026, 5, 1, 12, 0, tzinfo=UTC), *dashboard_charts.LAST_HOUR
    )
    assert on_the_minute.starts[-1] == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        buckets_until(NOW, timedelta(minutes=1), timedelta(0))


def test_pushes_by_result_per_minute_and_per_half_hour(db):
    seed = Seeder(db)
    bob = seed.device("bob", "apns", "b0b0" * 16, voip=True)
    carol = seed.device("carol", "fcm", "carol-fcm-" + "c" * 40)
    dana = seed.device("dana", "fcm", "dana-fcm-" + "d" * 40, api_key=OTHER_APP)

    def ring(at: datetime, app: str = API_KEY) -> int:
        return seed.event(
            ring_body(f"default:{at:%H%M%S}", "alice", ["bob"]), received_at=at, api_key=app
        )

    early = ring(minute(10, 5))
    seed.delivery(early, bob, "sent", user_id="bob", created_at=minute(10, 5))
    seed.delivery(early, carol, "failed", user_id="carol", created_at=minute(10, 5))
    # Exactly on a bucket's start: that bucket; a microsecond before the window: not counted.
    edge = ring(minute(11))
    seed.delivery(edge, bob, "sent", user_id="bob", created_at=minute(11))
    before = ring(HOUR.start - timedelta(microseconds=1))
    seed.delivery(
        before, bob, "sent", user_id="bob", created_at=HOUR.start - timedelta(microseconds=1)
    )
    latest = ring(minute(59, 10))
    seed.delivery(latest, bob, "sent", user_id="bob", created_at=minute(59, 10))
    seed.delivery(latest, carol, "token_invalid", user_id="carol", created_at=minute(59, 10))
    # A recipient who got no push: recorded by the storage layer (at the real time), then put
    # at the ring's time.
    seed.skipped_recipient(latest, "erin", "call pushes muted")
    with db.transaction() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.event_id == latest, Delivery.user_id == "erin")
            .values(created_at=minute(59, 11))
        )
    other = ring(minute(30), OTHER_APP)
    seed.delivery(other, dana, "sent", user_id="dana", created_at=minute(30))

    with db.transaction() as session:
        hour = dashboard_charts.pushes_by_result(session, HOUR)
        mine = dashboard_charts.pushes_by_result(session, HOUR, API_KEY)
        theirs = dashboard_charts.pushes_by_result(session, HOUR, OTHER_APP)
        nobody = dashboard_charts.pushes_by_result(session, HOUR, "no-such-app")
        day = dashboard_charts.pushes_by_result(session, DAY, API_KEY)

    def nonzero(chart):
        return {s.name: {i: n for i, n in enumerate(s.counts) if n} for s in chart.series}

    # In the status glossary's order; only statuses that occur.
    assert [s.name for s in hour.series] == ["sent", "failed", "token_invalid", "skipped"]
    assert nonzero(hour) == {
        "sent": {10: 1, 11: 1, 30: 1, 59: 1},
        "failed": {10: 1},
        "token_invalid": {59: 1},
        "skipped": {59: 1},
    }
    assert hour.total == 7 and hour.totals[59] == 3
    assert nonzero(mine)["sent"] == {10: 1, 11: 1, 59: 1}
    assert nonzero(theirs) == {"sent": {30: 1}}
    assert nobody.series == () and nobody.total == 0
    # Per half hour: 11:11 and 11:12 are in 11:00-11:30 (bucket 45), 12:00 in bucket 47; the
    # one a microsecond before the hour is in the day's window too.
    assert nonzero(day) == {
        "sent": {45: 3, 47: 1},
        "failed": {45: 1},
        "token_invalid": {47: 1},
        "skipped": {47: 1},
    }


def test_ring_latency_p50_and_p99_to_provider_and_to_phone(db):
    seed = Seeder(db)
    bob = seed.device("bob", "apns", "b0b0" * 16, voip=True)
    # Bucket 5: ten rings answered in 10, 20, .. 100 ms: p50 is the 5th (50), p99 the 10th.
    for i in range(1, 11):
        at = minute(5, i)
        event = seed.event(ring_body(f"default:r{i}", "alice", ["bob"]), received_at=at)
        delivery = seed.delivery(
            event, bob, "sent", user_id="bob", created_at=at, latency_ms=10.0 * i
        )
        if i <= 2:  # two phones sent a receipt, 800 and 900 ms after the webhook
            with db.transaction() as session:
                session.execute(
                    update(Delivery).where(Delivery.id == delivery).values(receipt_id=f"{i:032x}")
                )
            with db.transaction() as session:
                answer = receipts.record_receipt(
                    session, API_KEY, "bob", f"{i:032x}", at + timedelta(milliseconds=700 + 100 * i)
                )
                assert answer.answer is receipts.ReceiptAnswer.RECORDED
    # Not counted: a failed ring, a notification's push, another app's ring.
    failed = seed.event(ring_body("default:f", "alice", ["bob"]), received_at=minute(5))
    seed.delivery(failed, bob, "failed", user_id="bob", created_at=minute(5), latency_ms=9000.0)
    note = seed.event(notification_body("default:n", "alice", ["bob"]), received_at=minute(5))
    seed.delivery(note, bob, "sent", user_id="bob", created_at=minute(5), latency_ms=7000.0)
    other = seed.event(
        ring_body("default:o", "alice", ["bob"]), received_at=minute(5), api_key=OTHER_APP
    )
    seed.delivery(other, bob, "sent", user_id="bob", created_at=minute(5), latency_ms=8000.0)
    # Bucket 40: one slow ring (a retried push: its latency counts from the webhook).
    slow = seed.event(ring_body("default:s", "alice", ["bob"]), received_at=minute(40))
    seed.delivery(slow, bob, "sent", user_id="bob", created_at=minute(40), latency_ms=12_345.0)

    with db.transaction() as session:
        chart = dashboard_charts.ring_latency(session, HOUR, API_KEY)
        every_app = dashboard_charts.ring_latency(session, HOUR)

    five, forty = chart.provider.per_bucket[5], chart.provider.per_bucket[40]
    assert (five.count, five.p50_ms, five.p99_ms) == (10, 50.0, 100.0)
    assert (forty.count, forty.p50_ms, forty.p99_ms) == (1, 12_345.0, 12_345.0)
    assert [i for i, p in enumerate(chart.provider.per_bucket) if p.count] == [5, 40]
    assert chart.provider.per_bucket[6].p50_ms is None
    # The window: eleven rings, the 6th is 60 ms, the 11th the slow one.
    assert chart.provider.overall == dashboard_charts.Percentiles(11, 60.0, 12_345.0)
    phone = chart.phone.per_bucket[5]
    assert (phone.count, phone.p50_ms, phone.p99_ms) == (2, 800.0, 900.0)
    assert chart.phone.overall.count == 2
    assert every_app.provider.per_bucket[5].count == 11
    assert every_app.provider.per_bucket[5].p99_ms == 8000.0


def test_percentiles_by_nearest_rank_never_below_the_true_value():
    assert percentiles([]) == dashboard_charts.Percentiles(0, None, None)
    # 1,201 and 1,299 ms share the group 1,200..1,299: its largest stands for both.
    bins = [LatencyBin(40.0, 1, 40.0), LatencyBin(1200.0, 2, 1299.0), LatencyBin(5000.0, 1, 5000.0)]
    result = percentiles(bins)
    assert (result.count, result.p50_ms, result.p99_ms) == (4, 1299.0, 5000.0)
    hundred = [LatencyBin(float(ms), 1, float(ms)) for ms in range(1, 101)]
    assert percentiles(hundred) == dashboard_charts.Percentiles(100, 50.0, 99.0)
    merged = dashboard_charts.merge_bins([LatencyBin(40.0, 1, 41.0), LatencyBin(40.0, 2, 40.5)])
    assert merged == [LatencyBin(40.0, 3, 41.0)]


def test_queue_depth_from_stored_times(db):
    seed = Seeder(db)
    body = ring_body("default:q", "alice", ["bob"])

    def event(received: datetime, processed: datetime | None, app: str = API_KEY) -> None:
        seed.event(
            body,
            status="processed" if processed else "received",
            received_at=received,
            processed_at=processed,
            api_key=app,
        )

    event(HOUR.start - timedelta(minutes=10), minute(4, 30))  # waiting at the start, until 11:05
    event(minute(2, 30), None)  # still waiting
    event(minute(10, 12), minute(10, 48))  # in and out within one minute: never at a boundary
    event(HOUR.start - timedelta(days=3), None)  # older than the lookback: not drawn
    event(minute(20), minute(50), OTHER_APP)

    with db.transaction() as session:
        mine = dashboard_charts.queue_depth(session, HOUR, API_KEY)
        every_app = dashboard_charts.queue_depth(session, HOUR)

    # Depth at the start, then at each minute's end; the last point is now.
    assert len(mine.at) == len(mine.depth) == 61
    assert mine.at[0] == HOUR.start and mine.at[-1] == NOW and mine.at[1] == minute(1)
    assert mine.depth[:7] == (1, 1, 1, 2, 2, 1, 1)
    assert set(mine.depth[7:]) == {1}
    assert every_app.depth[20] == 1 and every_app.depth[21] == 2 and every_app.depth[51] == 1


def test_an_empty_database_draws_flat_charts(db):
    with db.transaction() as session:
        pushes = dashboard_charts.pushes_by_result(session, DAY)
        latency = dashboard_charts.ring_latency(session, DAY)
        queue = dashboard_charts.queue_depth(session, DAY)
    assert pushes.series == () and pushes.totals == ()
    assert latency.provider.overall.count == 0 and latency.phone.per_bucket[0].p50_ms is None
    assert queue.depth == (0,) * 49


def test_bucket_index_matches_python_for_times_across_the_day(db):
    """The SQL bucketing agrees with plain arithmetic on odd instants (fractions of seconds,
    the last microsecond of a bucket)."""
    seed = Seeder(db)
    bob = seed.device("bob", "apns", "b0b0" * 16, voip=True)
    times = [
        DAY.start,
        DAY.start + timedelta(minutes=29, seconds=59, microseconds=999_999),
        DAY.start + timedelta(minutes=30),
        DAY.start + timedelta(hours=7, minutes=3, seconds=1, microseconds=500_000),
        NOW,
    ]
    for i, at in enumerate(times):
        event = seed.event(ring_body(f"default:b{i}", "alice", ["bob"]), received_at=at)
        seed.delivery(event, bob, "sent", user_id="bob", created_at=at)
    with db.transaction() as session:
        chart = dashboard_charts.pushes_by_result(session, DAY)
    expected = [0] * DAY.count
    for at in times:
        expected[int((at - DAY.start) / DAY.step)] += 1
    assert list(chart.series[0].counts) == expected
    assert isinstance(chart.buckets, TimeBuckets)
