"""The inbox's dedupe keys and lifecycle (worker.storage.inbox) on SQLite and PostgreSQL:
Stream's retries (same X-Webhook-Id) and replays (same body, another id) store one row, also
when the copies arrive at the same moment."""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from worker.storage import inbox
from worker.storage.database import Database
from worker.storage.inbox import NewWebhook, store_webhook
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import WebhookEvent, utcnow

BODY = '{"type":"call.missed","call_cid":"default:c1","created_at":1}'
WINDOW = timedelta(days=1)


def webhook(webhook_id: str, body: str = BODY, api_key: str = "k") -> NewWebhook:
    return NewWebhook(
        webhook_id=webhook_id,
        api_key=api_key,
        event_type="call.missed",
        body=body,
        body_digest=hashlib.sha256(body.encode()).hexdigest(),
    )


def store(db: Database, new: NewWebhook, window: timedelta | None = WINDOW):
    with db.transaction() as session:
        return store_webhook(session, new, window)


def rows(db: Database) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(WebhookEvent)) or 0)


def test_a_retry_with_the_same_id_is_a_duplicate(db):
    first = store(db, webhook("wh-1"))
    again = store(db, webhook("wh-1"))
    assert not first.duplicate
    assert again.duplicate and not again.replayed_body and again.event_id == first.event_id
    assert rows(db) == 1


def test_the_same_body_under_another_id_is_a_replayed_duplicate(db):
    first = store(db, webhook("wh-1"))
    replay = store(db, webhook("wh-2"))
    assert replay.duplicate and replay.replayed_body and replay.event_id == first.event_id
    assert rows(db) == 1


def test_the_same_body_for_another_app_is_another_event(db):
    store(db, webhook("wh-1"))
    other = store(db, webhook("wh-2", api_key="other-app"))
    assert not other.duplicate and rows(db) == 2


def test_a_body_seen_before_the_window_is_stored_again_and_takes_the_digest_over(db):
    first = store(db, webhook("wh-1"))
    with db.transaction() as session:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == first.event_id)
            .values(received_at=utcnow() - WINDOW - timedelta(minutes=1))
        )
    later = store(db, webhook("wh-2"))
    assert not later.duplicate and later.event_id != first.event_id
    with db.transaction() as session:
        digests = dict(session.execute(select(WebhookEvent.id, WebhookEvent.body_digest)).all())
    assert digests[first.event_id] is None and digests[later.event_id] is not None
    # ... and within the window of the new one, a third copy is a duplicate of it.
    assert store(db, webhook("wh-3")).event_id == later.event_id


def test_rows_without_a_digest_never_collide(db):
    for n in range(3):
        legacy = NewWebhook(webhook_id=f"old-{n}", api_key="k", event_type="x", body=BODY)
        assert not store(db, legacy).duplicate
    assert rows(db) == 3


@pytest.mark.services
def test_concurrent_copies_under_seven_ids_store_one_row(postgres_url):
    upgrade_to_head(postgres_url)
    db = Database(postgres_url)
    try:
        barrier = threading.Barrier(7)
        results = []

        def post(n: int) -> None:
            barrier.wait()
            results.append(store(db, webhook(f"wh-{n}")))

        threads = [threading.Thread(target=post, args=(n,)) for n in range(7)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(results) == 7
        assert sum(not r.duplicate for r in results) == 1
        assert len({r.event_id for r in results}) == 1
        assert rows(db) == 1
    finally:
        db.dispose()


def test_give_up_fails_only_unfinished_events_at_the_cap(db):
    stuck = store(db, webhook("wh-1")).event_id
    done = store(db, webhook("wh-2", body=BODY.replace("c1", "c2"))).event_id
    with db.transaction() as session:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == stuck)
            .values(status="processing", processing_attempts=5, status_reason="will retry: x")
        )
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == done)
            .values(status="processed", processing_attempts=9)
        )
    with db.transaction() as session:
        assert inbox.give_up(session, stuck, max_attempts=6) is None  # below the cap
        assert inbox.give_up(session, done, max_attempts=3) is None  # finished
        assert inbox.give_up(session, stuck, max_attempts=5) == (
            "gave up after 5 attempts; last: will retry: x"
        )
    with db.transaction() as session:
        assert session.get(WebhookEvent, stuck).status == "failed"
        assert session.get(WebhookEvent, done).status == "processed"


def test_a_failed_event_is_not_started_again_by_a_redelivered_task(db):
    event_id = store(db, webhook("wh-1")).event_id
    with db.transaction() as session:
        assert inbox.start_processing(session, event_id) is not None
        inbox.finish_event(session, event_id, "failed", "could not list the call's members")
    with db.transaction() as session:
        assert inbox.start_processing(session, event_id) is None
