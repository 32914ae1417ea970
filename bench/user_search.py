"""How long the search by user takes on PostgreSQL (worker.ops.user_events): a day of ring events
(bodies of about 1.2 kB, two pushes each) among 5,000 users, then `user_activity` (24 h, one
page of 50) for a user pushed one ring in a hundred, for one found mostly in bodies, and for a
user with three events, who makes the body search read the whole window; and how long
migration 0006's index takes to build.

    python -m bench.user_search [--events 200000]

It creates and drops its own database (callpush_bench_users_<random>) and prints the figures;
it writes no result file and is not part of `python -m bench all`.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import timedelta

from sqlalchemy import create_engine, text

from bench.environment import PG_ADMIN_URL
from tests.e2e.processes import temporary_database
from worker.ops.user_activity import user_activity
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import utcnow

USERS = 5_000
RUNS = 5

_EVENTS = """
INSERT INTO webhook_events (webhook_id, api_key, event_type, call_cid, received_at, attempt,
    body, status, processing_attempts, replay_force, replays, allow_stale)
SELECT 'w' || g, 'bench-key', 'call.ring', 'default:c' || g,
    now() - (g * interval '86000 milliseconds' / :n), 1,
    '{"type": "call.ring", "call_cid": "default:c' || g || '", "user": {"id": "u' || (g % :users)
    || '"}, "members": [{"user_id": "u' || ((g * 7 + 1) % :users) || '"}, {"user_id": "u'
    || ((g * 13 + 2) % :users) || '"}], "call": {"created_by": {"id": "u' || (g % :users)
    || '"}, "custom": {"note": "' || repeat('x', 1000) || '"}}}',
    'processed', 1, false, 0, false
FROM generate_series(1, :n) AS g
"""
_DELIVERIES = """
INSERT INTO deliveries (event_id, user_id, platform, kind, token_hint, provider, status,
    attempts, created_at, claimed_at, finished_at, latency_ms)
SELECT e.id, 'u' || ((e.id * m.k + m.k / 7 + 1) % :users), 'apns', 'voip', 'abcdef…1234', 'apns',
    'sent', 1, e.received_at, e.received_at, e.received_at, 40
FROM webhook_events e CROSS JOIN (VALUES (7), (13)) AS m(k)
"""
# carol is pushed one ring in a hundred: the body search stops at the oldest of her last page.
_OFTEN = """
INSERT INTO deliveries (event_id, user_id, platform, kind, token_hint, provider, status,
    attempts, created_at, claimed_at, finished_at, latency_ms)
SELECT id, 'carol', 'fcm', 'data', 'carol-…cccc', 'fcm', 'sent', 1, received_at, received_at,
    received_at, 40
FROM webhook_events WHERE id % 100 = 0
"""
_INDEX = "CREATE INDEX ix_deliveries_user_id_event_id ON deliveries (user_id, event_id)"
_RARE = """
INSERT INTO webhook_events (webhook_id, api_key, event_type, call_cid, received_at, attempt,
    body, status, processing_attempts, replay_force, replays, allow_stale)
SELECT 'rare' || g, 'bench-key', 'call.ring', 'default:rare' || g,
    now() - (g * interval '7 hours'), 1,
    '{"type": "call.ring", "user": {"id": "u1"}, "members": [{"user_id": "bob"}]}',
    'processed', 1, false, 0, false
FROM generate_series(1, 3) AS g
"""


def timed(db: Database, user_id: str) -> tuple[float, int]:
    took = []
    found = 0
    for _ in range(RUNS):
        started = time.perf_counter()
        with db.transaction() as session:
            found = len(user_activity(session, user_id, utcnow() - timedelta(hours=24)).events)
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    name = f"callpush_bench_users_{uuid.uuid4().hex[:8]}"
    with temporary_database(PG_ADMIN_URL, name) as url:
        upgrade_to_head(url)
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_deliveries_user_id_event_id"))
            conn.execute(text(_EVENTS), {"n": args.events, "users": USERS})
            conn.execute(text(_DELIVERIES), {"users": USERS})
            conn.execute(text(_RARE))
            conn.execute(text(_OFTEN))
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
            rows = conn.execute(text("SELECT count(*) FROM deliveries")).scalar_one()
            started = time.perf_counter()
            conn.execute(text(_INDEX))
            index_s = time.perf_counter() - started
            conn.execute(text("ANALYZE deliveries"))
        engine.dispose()
        print(f"{args.events:,} events in 24 h, {rows:,} deliveries, {USERS:,} users")
        print(f"index (user_id, event_id) on deliveries built in {index_s:.2f} s")
        db = Database(url)
        try:
            for user_id, what in (
                ("carol", "a user pushed 1 ring in 100"),
                ("u42", "a member of 1 ring in 1,700, pushed 1 in 2,500"),
                ("bob", "a user with 3 events"),
            ):
                median, found = timed(db, user_id)
                print(f"{what} ({user_id}): {found} events shown, median {median:.0f} ms")
        finally:
            db.dispose()


if __name__ == "__main__":
    main()
