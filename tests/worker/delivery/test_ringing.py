"""call.ring processing (worker.delivery.event_processing + worker.delivery.ringing) on a real
database, with the provider seam scripted.  Runs on SQLite and, when it is there, PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from tests.worker.scripted_provider import ScriptedProvider
from worker.delivery.event_processing import process_event
from worker.delivery.ringing import ring_targets
from worker.delivery.services import Services
from worker.delivery.templates import TemplateBook
from worker.foundation.logging_setup import redact_token
from worker.foundation.settings import load_settings
from worker.intake.webhooks import stored_status
from worker.ops.replay import reopen_for_replay
from worker.push.base import Platform, ProviderRef, PushKind, PushOutcome, PushResult
from worker.push.providers import ProviderSet
from worker.push.sender import PushSender
from worker.storage import deliveries, devices, preferences
from worker.storage.database import Database
from worker.storage.devices import DeviceTarget
from worker.storage.inbox import NewWebhook, store_webhook
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Delivery, Device, WebhookEvent, utcnow
from worker.stream import samples as sample_events
from worker.stream.events import parse_call_event

BOB_VOIP = "b0b" + "1" * 61
BOB_PLAIN_APNS = "b0b" + "2" * 61
BOB_ANDROID = "bob-fcm-token"
CAROL_ANDROID = "carol-fcm-token"
ALICE_ANDROID = "alice-fcm-token"
DAN_APNS = "da0" + "3" * 61


@pytest.fixture
def world(database_url, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    upgrade_to_head(database_url)
    settings = load_settings(
        database_url=database_url,
        apps=[{"api_key": "k", "api_secrets": ["s"]}],
        apns={"bundle_id": "com.example.app"},
        ring={"retry_backoff_ms": 20, "retry_backoff_max_ms": 40},
    )
    apns, fcm = ScriptedProvider("apns"), ScriptedProvider("fcm")
    db = Database(database_url)
    sender = PushSender({Platform.APNS: apns, Platform.FCM: fcm})
    services = Services(settings, db, sender, TemplateBook.from_settings(settings))
    with db.transaction() as session:
        for user, platform, token, voip in [
            ("bob", Platform.APNS, BOB_VOIP, True),
            ("bob", Platform.APNS, BOB_PLAIN_APNS, False),
            ("bob", Platform.FCM, BOB_ANDROID, False),
            ("carol", Platform.FCM, CAROL_ANDROID, False),
            ("alice", Platform.FCM, ALICE_ANDROID, False),
        ]:
            devices.add_device(
                session, api_key="k", user_id=user, platform=platform, token=token, voip=voip
            )
    yield services, apns, fcm
    services.close()


def store(services, event: dict, api_key: str = "k") -> int:
    status, reason = stored_status(event["type"])
    call = event.get("call_cid")
    parsed = parse_call_event(event) if call else None
    with services.db.transaction() as session:
        return store_webhook(
            session,
            NewWebhook(
                webhook_id=f"wh-{time.time_ns()}",
                api_key=api_key,
                event_type=event["type"],
                body=json.dumps(event),
                call_cid=call,
                session_id=parsed.session_id if parsed else None,
                event_created_at=parsed.created_at if parsed else None,
                status=status,
                status_reason=reason,
            ),
        ).event_id


def outcomes_of(services, event_id) -> dict[str, str]:
    with services.db.transaction() as session:
        return {d.token_hint: d.status for d in deliveries.deliveries_for_event(session, event_id)}


def the_delivery(services, event_id) -> Delivery:
    with services.db.transaction() as session:
        (delivery,) = deliveries.deliveries_for_event(session, event_id)
        return delivery


@dataclass
class FakeClock:
    """Services.now / Services.sleep without waiting: a 30 s ring retries in milliseconds.
    Each sleep also records how many database connections were checked out meanwhile."""

    services: Services
    start: datetime = field(default_factory=utcnow)
    offset: float = 0.0
    sleeps: list[float] = field(default_factory=list)
    connections_held: list[int] = field(default_factory=list)

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.offset)

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.connections_held.append(self.services.db.engine.pool.checkedout())
        self.sleeps.append(seconds)
        self.offset += seconds


@pytest.fixture
def clock(world) -> FakeClock:
    services = world[0]
    fake = FakeClock(services)
    services.now, services.sleep = fake.now, fake.sleep
    return fake


def test_ring_sends_voip_and_fcm_to_callees_only(world):
    services, apns, fcm = world
    event_id = store(services, sample_events.ring_event("alice", ["alice", "bob", "carol"]))
    assert process_event(services, event_id) == "processed"
    assert apns.tokens() == [BOB_VOIP]  # not the plain APNs token: only PushKit rings
    assert sorted(fcm.tokens()) == [BOB_ANDROID, CAROL_ANDROID]  # never the caller
    assert apns.sent[0].kind is PushKind.VOIP and apns.sent[0].topic == "com.example.app.voip"
    assert all(m.kind is PushKind.DATA for m in fcm.sent)
    assert {m.payload["receiver_id"] for m in fcm.sent} == {"bob", "carol"}
    assert set(outcomes_of(services, event_id).values()) == {"sent"}
    with services.db.transaction() as session:
        row = session.get(WebhookEvent, event_id)
        assert row.status == "processed" and row.processed_at is not None
        latencies = [d.latency_ms for d in deliveries.deliveries_for_event(session, event_id)]
        assert all(lat is not None and lat >= 0 for lat in latencies)


def test_processing_twice_sends_nothing_twice(world):
    services, apns, fcm = world
    event_id = store(services, sample_events.ring_event("alice", ["bob"]))
    process_event(services, event_id)
    with services.db.transaction() as session:  # as if the worker died before marking it done
        session.get(WebhookEvent, event_id).status = "processing"
    assert process_event(services, event_id) == "processed"
    assert len(apns.sent) == 1 and len(fcm.sent) == 1


def test_finished_event_is_skipped(world):
    services, apns, _fcm = world
    event_id = store(services, sample_events.ring_event("alice", ["bob"]))
    process_event(services, event_id)
    assert process_event(services, event_id) == "skipped"
    assert len(apns.sent) == 1


def test_members_who_accepted_or_rejected_are_not_rung(world):
    services, _apns, fcm = world
    event = sample_events.ring_event("alice", ["bob", "carol"])
    event["call"]["session"]["rejected_by"] = {"bob": "2026-01-01T00:00:00Z"}
    process_event(services, store(services, event))
    assert fcm.tokens() == [CAROL_ANDROID]


def test_invalid_token_is_disabled_and_not_pushed_again(world):
    services, apns, _fcm = world
    apns._answer = lambda _m, _n: PushOutcome(PushResult.TOKEN_INVALID, "Unregistered", 410)
    first = store(services, sample_events.ring_event("alice", ["bob"]))
    process_event(services, first)
    assert outcomes_of(services, first)[redact_token(BOB_VOIP)] == "token_invalid"
    assert outcomes_of(services, first)[redact_token(BOB_ANDROID)] == "sent"
    with services.db.transaction() as session:
        dev = session.query(Device).filter_by(token=BOB_VOIP).one()
        assert dev.disabled_at is not None and "Unregistered" in dev.disabled_reason
    process_event(services, store(services, sample_events.ring_event("alice", ["bob"])))
    # Only the first ring reached the dead token.  With no VoIP token left, bob's iPhone rings
    # through its regular token: a time-sensitive alert.
    assert apns.tokens() == [BOB_VOIP, BOB_PLAIN_APNS]
    assert apns.sent[1].kind is PushKind.ALERT


def test_transient_failure_is_retried_inline_then_sent(world):
    services, _apns, fcm = world
    fcm._answer = lambda _m, n: (
        PushOutcome(PushResult.RETRY, "UNAVAILABLE", 503) if n == 1 else PushOutcome.sent()
    )
    event_id = store(services, sample_events.ring_event("alice", ["carol"]))
    assert process_event(services, event_id) == "processed"
    assert fcm.tokens() == [CAROL_ANDROID, CAROL_ANDROID]
    with services.db.transaction() as session:
        (delivery,) = deliveries.deliveries_for_event(session, event_id)
        assert delivery.status == "sent" and delivery.attempts == 2


def test_ring_pushes_are_sent_at_most_once(world):
    services, apns, fcm = world
    process_event(services, store(services, sample_events.ring_event("alice", ["bob"])))
    assert [m.at_most_once for m in apns.sent + fcm.sent] == [True, True]


def test_an_unconfirmed_ring_is_recorded_with_its_reason_and_never_sent_again(world):
    services, _apns, fcm = world
    fcm._answer = lambda _m, _n: PushOutcome(PushResult.UNCONFIRMED, "timeout")
    event_id = store(services, sample_events.ring_event("alice", ["carol"]))
    assert process_event(services, event_id) == "processed"
    assert fcm.tokens() == [CAROL_ANDROID]  # once: it may have rung
    delivery = the_delivery(services, event_id)
    assert (delivery.status, delivery.attempts) == ("unconfirmed", 1)
    assert delivery.reason == "timeout: answer lost, not re-sent to avoid a second ring"
    with services.db.transaction() as session:
        assert "1 unconfirmed" in session.get(WebhookEvent, event_id).status_reason


def test_a_ring_keeps_retrying_until_it_gets_through(world, clock):
    """APNs answering 500 twenty times in a row: still rung, 25 s into a 30 s ring."""
    services, apns, _fcm = world
    apns._answer = lambda _m, n: (
        PushOutcome(PushResult.RETRY, "InternalServerError", 500) if n <= 20 else PushOutcome.sent()
    )
    event_id = store(services, sample_events.ring_event("alice", ["bob"], ring_timeout_ms=30_000))
    assert process_event(services, event_id) == "processed"
    assert apns.tokens() == [BOB_VOIP] * 21
    delivery = the_voip_delivery(services, event_id)
    assert (delivery.status, delivery.attempts) == ("sent", 21)
    assert sum(clock.sleeps) < 30


def the_voip_delivery(services, event_id) -> Delivery:
    with services.db.transaction() as session:
        rows = deliveries.deliveries_for_event(session, event_id)
    return next(d for d in rows if d.kind == "voip")


def test_retry_waits_back_off_exponentially_with_jitter_up_to_the_cap(world, clock):
    services, apns, _fcm = world
    services.settings.ring.retry_backoff_ms = 100
    services.settings.ring.retry_backoff_max_ms = 2_000
    apns._answer = lambda _m, n: (
        PushOutcome(PushResult.RETRY, "InternalServerError", 500) if n <= 8 else PushOutcome.sent()
    )
    process_event(services, store(services, sample_events.ring_event("alice", ["bob"])))
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    assert len(clock.sleeps) == len(ceilings)
    for slept, ceiling in zip(clock.sleeps, ceilings, strict=True):
        assert ceiling / 2 <= slept <= ceiling
    assert len(set(clock.sleeps)) > 1  # jittered


def test_retries_hold_no_database_connection_while_they_wait(world, clock):
    services, _apns, fcm = world
    fcm._answer = lambda _m, n: (
        PushOutcome(PushResult.RETRY, "UNAVAILABLE", 503) if n <= 5 else PushOutcome.sent()
    )
    process_event(services, store(services, sample_events.ring_event("alice", ["carol"])))
    assert len(clock.connections_held) == 5
    assert set(clock.connections_held) == {0}


def test_retry_after_is_honoured_for_its_push_only(world, clock):
    """FCM says Retry-After 5 s; APNs' 500 is retried after its own short backoff."""
    services, apns, fcm = world
    fcm._answer = lambda _m, n: (
        PushOutcome(PushResult.RETRY, "UNAVAILABLE", 503, retry_after=5.0)
        if n == 1
        else PushOutcome.sent()
    )
    apns._answer = lambda _m, n: (
        PushOutcome(PushResult.RETRY, "InternalServerError", 500) if n == 1 else PushOutcome.sent()
    )
    sent_at: dict[str, list[float]] = {}
    for provider in (apns, fcm):
        answer = provider._answer

        def timed(message, n, answer=answer):
            sent_at.setdefault(message.token, []).append(clock.offset)
            return answer(message, n)

        provider._answer = timed
    event_id = store(services, sample_events.ring_event("alice", ["bob"]))
    assert process_event(services, event_id) == "processed"
    assert set(outcomes_of(services, event_id).values()) == {"sent"}
    assert 0.01 <= sent_at[BOB_VOIP][1] <= 0.04  # retry_backoff_ms 20, cap 40
    assert sent_at[BOB_ANDROID][1] >= 5.0


def test_a_push_never_accepted_is_failed_with_the_last_reason_when_the_ring_ends(world, clock):
    services, _apns, fcm = world
    services.settings.ring.retry_backoff_ms = 100
    services.settings.ring.retry_backoff_max_ms = 1000
    fcm._answer = lambda _m, _n: PushOutcome(PushResult.RETRY, "UNAVAILABLE", 503)
    event_id = store(services, sample_events.ring_event("alice", ["carol"], ring_timeout_ms=5000))
    assert process_event(services, event_id) == "failed"
    delivery = the_delivery(services, event_id)
    assert delivery.status == "failed"  # not "expired": it was tried, and refused
    assert delivery.status_code == 503
    assert delivery.reason == (
        f"UNAVAILABLE: not accepted in {len(fcm.sent)} attempt(s) before the ring was over"
    )
    assert delivery.attempts == len(fcm.sent) >= 6
    # Never a sleep past the end of the ring (5 s from its created_at).
    assert clock.offset < 5.0


def test_a_retry_after_beyond_the_ring_fails_the_push_without_waiting(world, clock):
    services, _apns, fcm = world
    fcm._answer = lambda _m, _n: PushOutcome(
        PushResult.RETRY, "QUOTA_EXCEEDED", 429, retry_after=60.0
    )
    event_id = store(services, sample_events.ring_event("alice", ["carol"], ring_timeout_ms=5000))
    assert process_event(services, event_id) == "failed"
    assert clock.sleeps == [] and len(fcm.sent) == 1
    assert the_delivery(services, event_id).reason == (
        "QUOTA_EXCEEDED: not accepted in 1 attempt(s) before the ring was over"
    )


def test_a_call_answered_while_a_retry_waits_stops_the_retries(world, clock):
    services, _apns, fcm = world
    fcm._answer = lambda _m, _n: PushOutcome(PushResult.RETRY, "UNAVAILABLE", 503)
    ring = sample_events.ring_event("alice", ["carol"])
    event_id = store(services, ring)
    sleep = clock.sleep

    def carol_answers_during_the_third_wait(seconds: float) -> None:
        sleep(seconds)
        if len(clock.sleeps) == 3:
            store(services, sample_events.call_event("call.accepted", ring["call_cid"], "carol"))

    services.sleep = carol_answers_during_the_third_wait
    process_event(services, event_id)
    assert len(fcm.sent) == 3
    delivery = the_delivery(services, event_id)
    assert (delivery.status, delivery.reason) == ("cancelled", "callee already answered")


def test_a_ring_that_is_already_over_is_not_sent(world):
    services, apns, fcm = world
    event = sample_events.ring_event("alice", ["bob"], ring_timeout_ms=5000)
    event["created_at"] = time.time_ns() - 6 * 10**9  # Stream's retries held it back 6 s
    event_id = store(services, event)
    process_event(services, event_id)
    assert apns.sent == [] and fcm.sent == []
    assert set(outcomes_of(services, event_id).values()) == {"expired"}


def test_accepted_before_the_ring_task_runs_means_no_push_for_that_member(world):
    services, _apns, fcm = world
    ring = sample_events.ring_event("alice", ["bob", "carol"])
    ring_id = store(services, ring)
    store(services, sample_events.call_event("call.accepted", ring["call_cid"], "carol"))
    process_event(services, ring_id)
    assert fcm.tokens() == [BOB_ANDROID]
    assert "cancelled" in outcomes_of(services, ring_id).values()


@pytest.mark.parametrize(
    ("stop_type", "actor"),
    [("call.ended", None), ("call.session_ended", None), ("call.rejected", "alice")],
)
def test_a_call_that_is_over_rings_nobody(world, stop_type, actor):
    services, apns, fcm = world
    ring = sample_events.ring_event("alice", ["bob", "carol"])
    ring_id = store(services, ring)
    store(services, sample_events.call_event(stop_type, ring["call_cid"], actor))
    process_event(services, ring_id)
    assert apns.sent == [] and fcm.sent == []
    assert set(outcomes_of(services, ring_id).values()) == {"cancelled"}


def claim_for_another_worker(services, event_id, claimed_ago: timedelta) -> None:
    with services.db.transaction() as session:
        (carol,) = devices.active_devices_for(session, "k", ["carol"])
        deliveries.claim_deliveries(
            session, event_id, [(carol, PushKind.DATA, "fcm")], timedelta(seconds=30)
        )
        session.query(Delivery).update({"claimed_at": utcnow() - claimed_ago})


def test_a_ring_claim_of_a_worker_that_died_mid_send_is_not_sent_again(world):
    """Its request may have reached FCM: settled unconfirmed, never a second ring."""
    services, _apns, fcm = world
    event_id = store(services, sample_events.ring_event("alice", ["carol"]))
    claim_for_another_worker(services, event_id, timedelta(minutes=5))
    assert process_event(services, event_id) == "processed"
    assert fcm.sent == []
    delivery = the_delivery(services, event_id)
    assert delivery.status == "unconfirmed"
    assert delivery.reason == (
        "worker stopped mid-send: answer lost, not re-sent to avoid a second ring"
    )


def test_a_ring_claim_is_settled_when_its_lease_runs_out_within_the_ring(world):
    services, _apns, fcm = world
    event_id = store(services, sample_events.ring_event("alice", ["carol"]))
    lease = services.claim_lease()
    claim_for_another_worker(services, event_id, lease - timedelta(seconds=0.3))
    started = time.monotonic()
    assert process_event(services, event_id) == "processed"
    assert time.monotonic() - started >= 0.25  # it waited for the lease
    assert fcm.sent == []
    assert list(outcomes_of(services, event_id).values()) == ["unconfirmed"]


def test_a_retry_left_by_a_dead_worker_is_taken_over_and_sent(world):
    """A worker killed while it waited to retry (the provider had refused the push): certainly
    not delivered, so whoever processes the event again sends it."""
    services, _apns, fcm = world
    event_id = store(services, sample_events.ring_event("alice", ["carol"]))
    claim_for_another_worker(services, event_id, timedelta(seconds=1))
    with services.db.transaction() as session:
        session.query(Delivery).update({"status": "retry", "reason": "UNAVAILABLE"})
    assert process_event(services, event_id) == "processed"
    assert fcm.tokens() == [CAROL_ANDROID]
    delivery = the_delivery(services, event_id)
    assert (delivery.status, delivery.attempts) == ("sent", 2)


def test_a_live_worker_settling_its_claim_is_not_duplicated(world):
    services, _apns, fcm = world
    event_id = store(services, sample_events.ring_event("alice", ["carol"]))
    lease = services.claim_lease()
    claim_for_another_worker(services, event_id, lease - timedelta(seconds=1))

    def other_worker_finishes():
        time.sleep(0.3)
        with services.db.transaction() as session:
            session.query(Delivery).update({"status": "sent"})

    finisher = threading.Thread(target=other_worker_finishes)
    finisher.start()
    process_event(services, event_id)
    finisher.join()
    assert fcm.sent == []
    assert list(outcomes_of(services, event_id).values()) == ["sent"]


def test_a_ring_listing_100_members_or_more_reads_them_from_stream(world, fake_stream_api):
    from tests.fakes.stream_api_plugin import stream_app_for

    services, _apns, fcm = world
    app = stream_app_for(fake_stream_api)
    services.settings.apps = [app]
    ring = sample_events.ring_event("alice", [f"x{i}" for i in range(100)])
    fake_stream_api.set_members(
        ring["call_cid"], ["alice", "carol", *[f"x{i}" for i in range(150)]]
    )
    event_id = store(services, ring)
    with services.db.transaction() as session:
        session.get(WebhookEvent, event_id).api_key = app.api_key
        # Devices are per app: carol's phone registered in the Stream app that sent the ring.
        devices.add_device(
            session,
            api_key=app.api_key,
            user_id="carol",
            platform=Platform.FCM,
            token=CAROL_ANDROID,
        )
    process_event(services, event_id)
    assert fcm.tokens() == [CAROL_ANDROID]  # carol was past the first 100


# --- how each phone rings: VoIP, FCM, or a time-sensitive alert ---------------------------------


def target(device_id, user, platform, voip=False, hardware_id=None) -> DeviceTarget:
    return DeviceTarget(device_id, user, platform, f"tok{device_id}", voip, None, hardware_id)


def kinds(targets) -> dict[int, PushKind]:
    return {device.device_id: kind for device, kind in targets}


def test_a_phone_without_a_voip_token_rings_through_its_regular_token():
    found = [
        target(1, "dan", Platform.APNS),  # dan: only a regular token
        target(2, "bob", Platform.APNS, voip=True, hardware_id="bobs-iphone"),
        target(3, "bob", Platform.APNS, hardware_id="bobs-iphone"),  # same phone: VoIP only
        target(4, "bob", Platform.APNS, hardware_id="bobs-ipad"),  # another phone: alert
        target(5, "eve", Platform.APNS, voip=True),  # eve's VoIP phone is unknown...
        target(6, "eve", Platform.APNS, hardware_id="eves-ipad"),  # ...it may be this one
        target(7, "fay", Platform.APNS, voip=True, hardware_id="fays-iphone"),
        target(8, "fay", Platform.APNS),  # unknown phone: it may be fay's iPhone
        target(9, "gus", Platform.FCM),
    ]
    assert kinds(ring_targets(found)) == {
        1: PushKind.ALERT,
        2: PushKind.VOIP,
        4: PushKind.ALERT,
        5: PushKind.VOIP,
        7: PushKind.VOIP,
        9: PushKind.DATA,
    }
    assert kinds(ring_targets(found, alert_ring=False)) == {
        2: PushKind.VOIP,
        5: PushKind.VOIP,
        7: PushKind.VOIP,
        9: PushKind.DATA,
    }


def test_alert_ring_end_to_end_in_the_domain(world):
    services, apns, _fcm = world
    with services.db.transaction() as session:
        devices.add_device(
            session, api_key="k", user_id="dan", platform=Platform.APNS, token=DAN_APNS
        )
    event_id = store(services, sample_events.ring_event("alice", ["bob", "dan"]))
    assert process_event(services, event_id) == "processed"
    by_token = {m.token: m for m in apns.sent}
    assert set(by_token) == {BOB_VOIP, DAN_APNS}  # bob has a VoIP token: never both kinds
    alert = by_token[DAN_APNS]
    assert alert.kind is PushKind.ALERT and alert.topic == "com.example.app"
    assert alert.payload["aps"]["interruption-level"] == "time-sensitive"
    assert alert.payload["stream"]["type"] == "call.ring"
    assert 0 < (alert.time_to_live or 0) <= 30
    with services.db.transaction() as session:
        rows = {d.token_hint: d for d in deliveries.deliveries_for_event(session, event_id)}
    assert rows[redact_token(DAN_APNS)].kind == "alert"
    assert rows[redact_token(DAN_APNS)].status == "sent"


def test_alert_ring_switched_off_for_the_app(world):
    services, apns, _fcm = world
    services.settings.apps[0].alert_ring = False
    with services.db.transaction() as session:
        devices.add_device(
            session, api_key="k", user_id="dan", platform=Platform.APNS, token=DAN_APNS
        )
    event_id = store(services, sample_events.ring_event("alice", ["dan"]))
    assert process_event(services, event_id) == "processed"
    assert apns.sent == []
    (skipped,) = recipient_rows(services, event_id)
    assert skipped.user_id == "dan" and skipped.reason == (
        "no token of the kind call.ring needs, an APNs VoIP or FCM token (alert rings are off): "
        f"has apns {redact_token(DAN_APNS)}"
    )


# --- every recipient accounted for ----------------------------------------------------------------


def recipient_rows(services, event_id) -> list[Delivery]:
    """The event's rows of recipients who got no push (no device)."""
    with services.db.transaction() as session:
        rows = deliveries.deliveries_for_event(session, event_id)
    return [d for d in rows if d.device_id is None]


def test_each_callee_without_a_push_is_recorded_skipped_after_the_pushes(world):
    services, apns, fcm = world
    until = utcnow().replace(microsecond=0) + timedelta(minutes=30)
    with services.db.transaction() as session:
        preferences.set_preference(session, "k", "carol", True, until)
        (alices,) = session.query(Device).filter_by(user_id="alice").all()
        devices.disable_devices(session, [alices.id], "FCM said UNREGISTERED")
    event_id = store(services, sample_events.ring_event("dan", ["bob", "carol", "alice", "erin"]))
    assert process_event(services, event_id) == "processed"
    assert apns.tokens() == [BOB_VOIP] and fcm.tokens() == [BOB_ANDROID]
    skipped = {d.user_id: d for d in recipient_rows(services, event_id)}
    assert {user: d.reason for user, d in skipped.items()} == {
        "carol": f"call pushes muted until {until:%Y-%m-%dT%H:%M:%SZ}",
        "alice": (
            f"token disabled at {alices_disabled_at(services):%Y-%m-%dT%H:%M:%SZ}: "
            f"fcm {redact_token(ALICE_ANDROID)}: FCM said UNREGISTERED"
        ),
        "erin": "no active device",
    }
    assert {d.status for d in skipped.values()} == {"skipped"}
    with services.db.transaction() as session:
        sent = [d for d in deliveries.deliveries_for_event(session, event_id) if d.status == "sent"]
        row = session.get(WebhookEvent, event_id)
    # Recorded once the pushes were answered, never before the send (the ring's latency).
    assert len(sent) == 2
    assert min(d.created_at for d in skipped.values()) >= max(d.finished_at for d in sent)
    assert row.status_reason == "reached 1 of 4 recipients: 2 sent, 3 skipped"


def alices_disabled_at(services) -> datetime:
    with services.db.transaction() as session:
        (alices,) = session.query(Device).filter_by(user_id="alice").all()
        return alices.disabled_at


def test_a_ring_that_rang_nobody_says_so(world):
    services, apns, fcm = world
    event_id = store(services, sample_events.ring_event("alice", ["erin", "frank"]))
    assert process_event(services, event_id) == "processed"
    assert apns.sent == [] and fcm.sent == []
    with services.db.transaction() as session:
        row = session.get(WebhookEvent, event_id)
    assert row.status_reason == "rang nobody (2 recipients): 2 skipped"
    assert {d.user_id for d in recipient_rows(services, event_id)} == {"erin", "frank"}


@pytest.mark.parametrize("force", [False, True])
def test_a_replay_rings_a_skipped_callee_only_once_their_situation_changed(world, force):
    services, apns, _fcm = world
    with services.db.transaction() as session:
        preferences.set_preference(session, "k", "bob", True)
    event_id = store(services, sample_events.ring_event("alice", ["bob"]))
    process_event(services, event_id)
    assert apns.sent == []

    # Still muted: the replay sends nothing and records bob skipped again, once.
    with services.db.transaction() as session:
        assert reopen_for_replay(session, event_id, force=force)
    process_event(services, event_id)
    assert apns.sent == []
    (again,) = recipient_rows(services, event_id)
    assert (again.user_id, again.reason) == ("bob", "call pushes muted")

    # Unmuted since: the next replay rings him, and his skipped row is gone.
    with services.db.transaction() as session:
        preferences.set_preference(session, "k", "bob", False)
        assert reopen_for_replay(session, event_id, force=force)
    process_event(services, event_id)
    assert apns.tokens() == [BOB_VOIP]
    assert recipient_rows(services, event_id) == []
    with services.db.transaction() as session:
        assert session.get(WebhookEvent, event_id).status_reason.startswith(
            "reached 1 of 1 recipient: "
        )


# --- named push providers -----------------------------------------------------------------------

DEBUG = ProviderRef(Platform.APNS, "k", "ios-voip-debug")


@pytest.fixture
def providers_world(sqlite_url, monkeypatch):
    """App "k" names one APNs provider, a debug build's sandbox one with its own bundle id."""
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    upgrade_to_head(sqlite_url)
    settings = load_settings(
        database_url=sqlite_url,
        apps=[
            {
                "api_key": "k",
                "api_secrets": ["s"],
                "apns_providers": {
                    "ios-voip-debug": {"bundle_id": "com.example.app.debug", "use_sandbox": True}
                },
            }
        ],
        apns={"bundle_id": "com.example.app"},
    )
    default, debug, fcm = (
        ScriptedProvider("apns"),
        ScriptedProvider("apns"),
        ScriptedProvider("fcm"),
    )
    sender = PushSender(ProviderSet({Platform.APNS: default, Platform.FCM: fcm}, {DEBUG: debug}))
    db = Database(sqlite_url)
    services = Services(settings, db, sender, TemplateBook.from_settings(settings))
    with db.transaction() as session:
        for user, name in (("bob", "ios-voip-debug"), ("carol", "ios-voip-typo"), ("dave", None)):
            devices.add_device(
                session,
                api_key="k",
                user_id=user,
                platform=Platform.APNS,
                token=f"{user}voip".ljust(64, "0"),
                voip=True,
                push_provider_name=name,
            )
    yield services, default, debug
    services.close()


def test_each_device_rings_through_its_named_provider(providers_world):
    services, default, debug = providers_world
    event_id = store(services, sample_events.ring_event("alice", ["bob", "carol", "dave"]))
    assert process_event(services, event_id) == "failed"  # carol's provider is not configured
    assert [m.token[:4] for m in debug.sent] == ["bobv"]
    assert debug.sent[0].topic == "com.example.app.debug.voip"
    assert [m.token[:4] for m in default.sent] == ["dave"]
    assert default.sent[0].topic == "com.example.app.voip"
    with services.db.transaction() as session:
        rows = {d.user_id: d for d in deliveries.deliveries_for_event(session, event_id)}
        carol = session.query(Device).filter_by(user_id="carol").one()
        assert carol.disabled_at is None  # the token is fine: the configuration is missing
    assert (rows["bob"].provider, rows["bob"].status) == ("apns:ios-voip-debug", "sent")
    assert (rows["dave"].provider, rows["dave"].status) == ("apns", "sent")
    assert (rows["carol"].provider, rows["carol"].status) == ("apns:ios-voip-typo", "failed")
    assert rows["carol"].reason == "push provider 'ios-voip-typo' is not configured for app k"


def test_an_app_following_streams_push_settings(sqlite_url, fake_stream_api, monkeypatch):
    """push_settings_source = "stream": the call type's switches and templates in Stream decide,
    read from the copy fetched at start-up (no request to Stream while ringing)."""
    from tests.fakes.fake_stream_api import CALL_TYPE, CALL_TYPES, notification_settings

    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    fake_stream_api.set_call_type(
        "default",
        notification_settings(templates={"call_ring": ("{{ user.display_name }} via Stream", "")}),
    )
    fake_stream_api.set_call_type("silent", notification_settings(off=["call_ring"]))
    upgrade_to_head(sqlite_url)
    key = fake_stream_api.api_key
    settings = load_settings(
        database_url=sqlite_url,
        apps=[
            {
                "api_key": key,
                "api_secrets": [fake_stream_api.secret],
                "base_url": fake_stream_api.url,
                "push_settings_source": "stream",
            }
        ],
        apns={"bundle_id": "com.example.app"},
    )
    apns, fcm = ScriptedProvider("apns"), ScriptedProvider("fcm")
    services = Services(
        settings,
        Database(sqlite_url),
        PushSender({Platform.APNS: apns, Platform.FCM: fcm}),
        TemplateBook.from_settings(settings),
    )
    try:
        services.start_background_work()
        services.wait_for_background_work(5)
        with services.db.transaction() as session:
            devices.add_device(
                session,
                api_key=key,
                user_id="bob",
                platform=Platform.APNS,
                token=BOB_VOIP,
                voip=True,
            )
        asked = len(fake_stream_api.requests)

        ring = sample_events.ring_event("alice", ["bob"])
        assert process_event(services, store(services, ring, key)) == "processed"
        assert apns.sent[0].payload["aps"]["alert"]["title"] == "Alice via Stream"

        silent = sample_events.ring_event("alice", ["bob"], call_type="silent")
        silent_id = store(services, silent, key)
        assert process_event(services, silent_id) == "ignored"
        with services.db.transaction() as session:
            row = session.get(WebhookEvent, silent_id)
            assert row.status_reason == "switched off in Stream's call type settings"
        assert len(apns.sent) == 1
        assert len(fake_stream_api.requests) == asked
        assert fake_stream_api.calls == {CALL_TYPES: 1}
        assert CALL_TYPE not in fake_stream_api.calls
    finally:
        services.close()


# --- Stream apps are tenants ----------------------------------------------------------------


def test_a_ring_of_another_app_reaches_only_that_apps_devices(world):
    """The dev app's bob is not production's bob, even with the same user id."""
    services, apns, fcm = world
    dev_ring = store(services, sample_events.ring_event("alice", ["bob", "carol"]), api_key="dev")
    assert process_event(services, dev_ring) == "processed"
    assert apns.sent == [] and fcm.sent == []

    dev_token = "de7" + "0" * 61
    with services.db.transaction() as session:
        devices.add_device(
            session,
            api_key="dev",
            user_id="bob",
            platform=Platform.APNS,
            token=dev_token,
            voip=True,
        )
    process_event(services, store(services, sample_events.ring_event("alice", ["bob"]), "dev"))
    assert apns.tokens() == [dev_token] and fcm.sent == []


def test_the_old_owners_ring_does_not_reach_a_moved_token(world):
    services, apns, fcm = world
    with services.db.transaction() as session:  # Bob's Android phone now logs in as dave
        devices.add_device(
            session, api_key="k", user_id="dave", platform=Platform.FCM, token=BOB_ANDROID
        )
    process_event(services, store(services, sample_events.ring_event("alice", ["bob"])))
    assert apns.tokens() == [BOB_VOIP] and fcm.sent == []
    process_event(services, store(services, sample_events.ring_event("alice", ["dave"])))
    assert fcm.tokens() == [BOB_ANDROID]
    assert {m.payload["receiver_id"] for m in fcm.sent} == {"dave"}


def test_a_mute_in_one_app_does_not_silence_another(world):
    services, apns, _fcm = world
    with services.db.transaction() as session:
        preferences.set_preference(session, "dev", "bob", True)
    process_event(services, store(services, sample_events.ring_event("alice", ["bob"])))
    assert apns.tokens() == [BOB_VOIP]
    with services.db.transaction() as session:
        preferences.set_preference(session, "k", "bob", True)
    process_event(services, store(services, sample_events.ring_event("alice", ["bob"])))
    assert apns.tokens() == [BOB_VOIP]  # muted now in its own app: no second push


def test_another_apps_call_with_the_same_id_does_not_stop_the_ring(world):
    services, apns, _fcm = world
    ring = sample_events.ring_event("alice", ["bob"])
    ring_id = store(services, ring)
    store(services, sample_events.call_event("call.ended", ring["call_cid"], None), "dev")
    process_event(services, ring_id)
    assert apns.tokens() == [BOB_VOIP]
