"""Retention (worker.storage.retention) on SQLite and PostgreSQL: old events go with their
deliveries and fan-out chunks; recent events, and devices, stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.ops_data import NOW, Seeder, notification_body, ring_body
from worker.storage import retention
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Delivery, Device, FanoutChunk, WebhookEvent


@pytest.fixture
def world(database_url):
    upgrade_to_head(database_url)
    db = Database(database_url)
    seed = Seeder(db)
    bob = seed.device("bob", "fcm", "bob-token-" + "x" * 30)
    old_ids = []
    for days in (40, 35, 31):
        received = NOW - timedelta(days=days)
        event_id = seed.event(
            notification_body(f"default:old{days}", "alice", ["bob"]), received_at=received
        )
        seed.chunk(event_id, 0, [("bob", "Bob")])
        seed.delivery(event_id, bob, "sent", user_id="bob", platform="fcm", created_at=received)
        old_ids.append(event_id)
    recent = seed.event(
        ring_body("default:new", "alice", ["bob"]), received_at=NOW - timedelta(days=29)
    )
    seed.delivery(recent, bob, "sent", user_id="bob", platform="fcm")
    yield db, old_ids, recent
    db.dispose()


def count(db, model) -> int:
    with db.transaction() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_purge_deletes_old_events_with_their_children(world):
    db, _old_ids, recent = world
    with db.transaction() as session:
        assert retention.count_older_than(session, timedelta(days=30)) == 3
    counts = retention.purge_in_batches(db, timedelta(days=30))
    assert counts == retention.PurgeCounts(events=3, deliveries=3, chunks=3)
    with db.transaction() as session:
        assert list(session.scalars(select(WebhookEvent.id))) == [recent]
        assert list(session.scalars(select(Delivery.event_id))) == [recent]
    assert count(db, FanoutChunk) == 0
    assert count(db, Device) == 1  # devices are not the event log's
    # Nothing left to purge: a second run is a no-op.
    assert retention.purge_in_batches(db, timedelta(days=30)) == retention.PurgeCounts()


def test_purge_in_small_batches(world):
    db, _, _ = world
    counts = retention.purge_in_batches(db, timedelta(days=30), batch_size=2)
    assert counts.as_dict() == {"events": 3, "deliveries": 3, "chunks": 3}
    assert count(db, WebhookEvent) == 1


def test_purge_older_than_in_the_callers_transaction(world):
    db, old_ids, recent = world
    with db.transaction() as session:
        counts = retention.purge_older_than(session, timedelta(days=36), limit=10)
    assert counts.events == 1  # only the 40-day-old one
    with db.transaction() as session:
        assert sorted(session.scalars(select(WebhookEvent.id))) == sorted([*old_ids[1:], recent])


def test_a_too_short_age_is_refused(world):
    db, _, _ = world
    with pytest.raises(ValueError, match="younger than"):
        retention.purge_in_batches(db, timedelta(minutes=30))
    assert count(db, WebhookEvent) == 4


def test_the_periodic_purge_task(sqlite_url, monkeypatch):
    """`callpush beat`'s purge (worker.runtime.tasks.purge_old_events, `retention.days`), once
    wired."""
    from worker.foundation.settings import Settings, load_settings
    from worker.runtime import tasks
    from worker.runtime.celery_app import create_celery

    if not hasattr(tasks, "purge_old_events") or "retention" not in Settings.model_fields:
        pytest.skip("the purge task and retention settings are not wired in yet")
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    upgrade_to_head(sqlite_url)
    db = Database(sqlite_url)
    seed = Seeder(db)
    seed.event(notification_body("default:old", "a", ["b"]), received_at=NOW - timedelta(days=8))
    recent = seed.event(notification_body("default:new", "a", ["b"]))
    celery = create_celery(load_settings(database_url=sqlite_url, retention={"days": 7}))
    assert "purge-old-events" in celery.conf.beat_schedule
    result = celery.tasks["callpush.purge_old_events"].apply().get(disable_sync_subtasks=False)
    assert result == {"events": 1, "deliveries": 0, "chunks": 0}
    with db.transaction() as session:
        assert list(session.scalars(select(WebhookEvent.id))) == [recent]
    off = create_celery(load_settings(database_url=sqlite_url, retention={"days": 0}))
    assert off.tasks["callpush.purge_old_events"].apply().get(disable_sync_subtasks=False) == {}
    db.dispose()
