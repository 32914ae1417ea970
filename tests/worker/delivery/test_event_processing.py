"""How processing ends (worker.delivery.event_processing, worker.runtime.inbox_sweeper,
worker.ops.replay_jobs) on a real database with the provider seam scripted: a poison event fails
once and is not queued forever, a replay lists it without error, and an event that arrived stale
stays unpushed unless an operator allows it."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.worker.recording_handoff import RecordingHandoff
from tests.worker.scripted_provider import ScriptedProvider
from worker.delivery.event_processing import process_event
from worker.delivery.notifications import deliver_chunk
from worker.delivery.services import Services
from worker.delivery.templates import TemplateBook
from worker.foundation.settings import load_settings
from worker.intake.webhooks import IntakeRules, webhook_for_event
from worker.ops.replay_jobs import describe_replay, replay_events
from worker.push.base import Platform
from worker.push.sender import PushSender
from worker.runtime.celery_app import create_celery
from worker.runtime.inbox_sweeper import requeue_unfinished
from worker.storage import devices
from worker.storage.database import Database
from worker.storage.inbox import store_webhook
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import WebhookEvent, utcnow
from worker.stream import samples as sample_events

BOB_VOIP = "b0b" + "1" * 61
BOB_ALERT = "b0b" + "2" * 61
BOB_ANDROID = "bob-fcm-token"
MAX_AGE = timedelta(minutes=5)


class Boom(RuntimeError):
    pass


@pytest.fixture
def world(database_url, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    url = database_url
    upgrade_to_head(url)
    settings = load_settings(
        database_url=url,
        apps=[{"api_key": "k", "api_secrets": ["s"]}],
        apns={"bundle_id": "com.example.app"},
        sweeper={"max_attempts": 3},
    )
    apns, fcm = ScriptedProvider("apns"), ScriptedProvider("fcm")
    db = Database(url)
    services = Services(
        settings,
        db,
        PushSender({Platform.APNS: apns, Platform.FCM: fcm}),
        TemplateBook.from_settings(settings),
        # A fan-out's chunks run at once, as a bulk worker would run them.
        handoff=RecordingHandoff(on_chunk=lambda e, i: deliver_chunk(services, e, i, 0)),
    )
    with db.transaction() as session:
        devices.add_device(
            session, api_key="k", user_id="bob", platform=Platform.APNS, token=BOB_VOIP, voip=True
        )
        devices.add_device(
            session, api_key="k", user_id="bob", platform=Platform.APNS, token=BOB_ALERT
        )
        devices.add_device(
            session, api_key="k", user_id="bob", platform=Platform.FCM, token=BOB_ANDROID
        )
    yield services, apns, fcm
    services.close()
    db.dispose()


def arrive(services: Services, event: dict, *, received_at=None, allow_stale=False) -> int:
    """Store the event as the receiver would (its status rules), received now or then."""
    body = json.dumps(event).encode()
    row = webhook_for_event(
        event,
        body,
        api_key="k",
        webhook_id=None,
        received_at=received_at or utcnow(),
        rules=IntakeRules(MAX_AGE, allow_stale),
    )
    with services.db.transaction() as session:
        return store_webhook(session, row).event_id


def status_of(services: Services, event_id: int) -> tuple[str, str | None, int]:
    with services.db.transaction() as session:
        row = session.get(WebhookEvent, event_id)
        return row.status, row.status_reason, row.processing_attempts


def replaying_here(services: Services) -> RecordingHandoff:
    """Replayed events processed at once, as the embedded mode's inline hand-off does."""
    return RecordingHandoff(on_replay=lambda event_id: process_event(services, event_id))


def test_an_unexpected_error_fails_the_event_once_with_the_reason(world, caplog):
    services, _apns, fcm = world

    def explode(_message, _n):
        raise Boom("the provider adapter has a bug")

    fcm._answer = explode
    event_id = arrive(services, sample_events.ring_event("alice", ["bob"]))
    with caplog.at_level(logging.INFO, logger="callpush"):
        assert process_event(services, event_id) == "failed"
        # A redelivered task (or a Celery retry) finds it finished: no second run, no second log.
        assert process_event(services, event_id) == "skipped"
    status, reason, attempts = status_of(services, event_id)
    assert (status, attempts) == ("failed", 1)
    assert reason == "unexpected error: Boom: the provider adapter has a bug"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "failed: unexpected error" in errors[0].getMessage()
    assert not [r for r in caplog.records if r.levelno == logging.INFO and "failed" in r.message]


def test_a_ring_with_an_absurd_timeout_rings_and_replays_without_error(world):
    services, apns, fcm = world
    event = sample_events.ring_event("alice", ["bob"])
    event["call"]["settings"]["ring"] = {
        "incoming_call_timeout_ms": 10**20,
        "auto_cancel_timeout_ms": 10**20,
    }
    event_id = arrive(services, event)
    assert process_event(services, event_id) == "processed"  # it overflowed: OverflowError
    assert apns.tokens() == [BOB_VOIP] and fcm.tokens() == [BOB_ANDROID]
    with services.db.transaction() as session:
        plan = describe_replay(
            session, [event_id], force=False, default_ring_timeout_ms=30_000, max_event_age=MAX_AGE
        )
    assert [p.replay.event_id for p in plan.events] == [event_id]
    assert plan.events[0].ring_over is False


def test_the_sweeper_gives_up_on_an_event_that_never_finishes(world, caplog):
    services, _apns, _fcm = world
    celery = create_celery(services.settings)  # the in-memory broker
    with celery.connection_for_write() as conn:
        for queue in ("ring", "bulk"):
            conn.default_channel.queue_declare(queue)
            conn.default_channel.queue_purge(queue)
    stuck = arrive(services, sample_events.ring_event("alice", ["bob"]))
    planned = arrive(services, sample_events.member_event("call.notification", "alice", ["bob"]))
    # Each run was killed before it could finish (a worker the event kills, say).
    with services.db.transaction() as session:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_([stuck, planned]))
            .values(status="processing", processing_attempts=2)
        )
        # A fan-out that has planned its chunks is waiting for them, not stuck.
        session.execute(
            update(WebhookEvent).where(WebhookEvent.id == planned).values(fanout_chunks=1)
        )

    def queued() -> int:
        with celery.connection_for_read() as conn:
            return sum(
                conn.default_channel.queue_declare(q).message_count for q in ("ring", "bulk")
            )

    assert requeue_unfinished(services.db, celery.handoff, None, max_attempts=3) == 2
    assert queued() == 2
    with services.db.transaction() as session:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_([stuck, planned]))
            .values(processing_attempts=3)
        )
    with caplog.at_level(logging.INFO, logger="callpush"):
        assert (
            requeue_unfinished(services.db, celery.handoff, None, max_attempts=3) == 1
        )  # the fan-out
        assert requeue_unfinished(services.db, celery.handoff, None, max_attempts=3) == 1
    assert queued() == 4
    assert status_of(services, stuck)[:2] == ("failed", "gave up after 3 attempts")
    assert status_of(services, planned)[0] == "processing"
    (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "gave up after 3 attempts" in error.getMessage()


def test_a_stale_event_stays_unpushed_when_replayed_unless_allowed(world):
    services, apns, _fcm = world
    event = sample_events.member_event("call.missed", "alice", ["bob"])
    event["created_at"] = int((utcnow() - timedelta(days=7)).timestamp() * 1e9)
    event_id = arrive(services, event)
    status, reason, _ = status_of(services, event_id)
    assert status == "ignored" and reason.startswith("stale: created 7d before it arrived")

    with services.db.transaction() as session:
        plan = describe_replay(session, [event_id], False, 30_000, max_event_age=MAX_AGE)
    assert plan.events[0].stale is not None and plan.devices == 0
    replay_events(services.db, [event_id], False, replaying_here(services))
    status, reason, _ = status_of(services, event_id)
    assert status == "ignored" and reason.startswith("stale:") and apns.sent == []

    with services.db.transaction() as session:
        plan = describe_replay(
            session, [event_id], False, 30_000, max_event_age=MAX_AGE, allow_stale=True
        )
    assert plan.events[0].stale is None
    replay_events(services.db, [event_id], False, replaying_here(services), allow_stale=True)
    assert status_of(services, event_id)[0] == "processed"
    assert apns.tokens() == [BOB_ALERT]
    # Allowed once, it stays allowed: a later replay of its failures needs no flag again.
    with services.db.transaction() as session:
        assert (
            describe_replay(session, [event_id], False, 30_000, max_event_age=MAX_AGE)
            .events[0]
            .stale
            is None
        )


def test_an_imported_old_event_is_pushed_with_allow_stale(world):
    services, apns, _fcm = world
    event = sample_events.member_event("call.missed", "alice", ["bob"])
    event["created_at"] = int((utcnow() - timedelta(hours=3)).timestamp() * 1e9)
    event_id = arrive(services, event, allow_stale=True)
    assert status_of(services, event_id)[0] == "received"
    process_event(services, event_id)  # a fan-out: its last chunk finishes it
    assert status_of(services, event_id)[0] == "processed"
    assert apns.tokens() == [BOB_ALERT]


def test_a_replay_counts_attempts_afresh(world):
    services, _apns, _fcm = world
    event_id = arrive(services, sample_events.member_event("call.missed", "alice", ["bob"]))
    with services.db.transaction() as session:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id)
            .values(status="failed", processing_attempts=7)
        )
    replay_events(services.db, [event_id], False, RecordingHandoff())
    assert status_of(services, event_id)[0::2] == ("received", 0)


def test_an_unexpected_error_in_a_chunk_fails_the_chunk_and_the_event(world, caplog):
    services, apns, _fcm = world

    def explode(_message, _n):
        raise Boom("bad payload")

    apns._answer = explode
    event_id = arrive(services, sample_events.member_event("call.missed", "alice", ["bob"]))
    with caplog.at_level(logging.INFO, logger="callpush"):
        process_event(services, event_id)
    status, reason, _ = status_of(services, event_id)
    assert status == "failed"
    assert reason.endswith("; a chunk failed: unexpected error: Boom: bad payload")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"event {event_id} failed" in r.getMessage() for r in warnings)


def test_a_broker_outage_while_queueing_chunks_leaves_the_event_for_the_sweeper(world, caplog):
    """No reason to fail a fan-out when only the broker is away: its chunks are stored."""
    services, apns, _fcm = world
    unreachable = services.settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    down = create_celery(unreachable)
    event_id = arrive(services, sample_events.member_event("call.missed", "alice", ["bob"]))
    services.handoff = down.handoff
    with caplog.at_level(logging.INFO, logger="callpush"):
        assert process_event(services, event_id) == "processing"
    assert status_of(services, event_id)[0] == "processing" and apns.sent == []
    assert not [r for r in caplog.records if "failed" in r.getMessage()]

    # The broker is back; the sweeper queues the event and planning queues the pending chunk.
    services.handoff = RecordingHandoff(on_chunk=lambda e, i: deliver_chunk(services, e, i, 0))
    process_event(services, event_id)
    assert status_of(services, event_id)[0] == "processed"
    assert apns.tokens() == [BOB_ALERT]
