"""Recording provider answers (worker.delivery.push_outcomes) on real PostgreSQL: the streaming
recorder commits each answer while the rest of the batch is still in flight."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy.exc import OperationalError

from worker.delivery.push_outcomes import OutcomeRecorder
from worker.push.base import Platform, PushKind, PushOutcome, PushResult
from worker.storage import deliveries, devices
from worker.storage.database import Database
from worker.storage.deliveries import Claim
from worker.storage.devices import DeviceTarget
from worker.storage.inbox import NewWebhook, store_webhook
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Delivery, Device, utcnow

pytestmark = pytest.mark.services


def status_of(db: Database, claim: Claim) -> str:
    with db.transaction() as session:
        delivery = session.get(Delivery, claim.delivery_id)
        assert delivery is not None
        return delivery.status


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def claimed(postgres_url: str):
    upgrade_to_head(postgres_url)
    db = Database(postgres_url)
    with db.transaction() as session:
        event_id = store_webhook(
            session,
            NewWebhook(
                webhook_id="wh-1",
                api_key="key",
                event_type="call.notification",
                body="{}",
                call_cid="default:1",
            ),
        ).event_id
        targets = []
        for user in ("bob", "carol"):
            device = devices.add_device(
                session,
                api_key="key",
                user_id=user,
                platform=Platform.FCM,
                token=f"{user}-fcm-token",
            )
            session.flush()
            target = DeviceTarget(device.id, user, Platform.FCM, device.token, False, None)
            targets.append((target, PushKind.DATA, "fcm"))
        claims = deliveries.claim_deliveries(
            session, event_id, targets, lease=timedelta(seconds=30)
        )
    yield db, event_id, sorted(claims, key=lambda c: c.device.user_id)
    db.dispose()


def test_an_answer_is_committed_while_the_others_are_still_in_flight(claimed) -> None:
    db, event_id, (bob, carol) = claimed
    with OutcomeRecorder(db, event_id, utcnow()) as recorder:
        recorder.add(bob, PushOutcome.sent())
        # Carol's push has not been answered yet; Bob's answer is already in the database, so a
        # worker killed now would leave only Carol's claim to be taken over.
        assert wait_for(lambda: status_of(db, bob) == "sent")
        assert status_of(db, carol) == "sending"
        recorder.add(carol, PushOutcome(PushResult.TOKEN_INVALID, reason="UNREGISTERED"))
    assert status_of(db, carol) == "token_invalid"
    with db.transaction() as session:
        device = session.get(Device, carol.device.device_id)
        assert device is not None and device.disabled_at is not None
    assert recorder.counts == {"sent": 1, "token_invalid": 1}


def test_a_recording_failure_stops_the_sender(claimed, tmp_path) -> None:
    _db, event_id, (bob, _carol) = claimed
    broken = Database(f"sqlite:///{tmp_path / 'no-tables.db'}")  # never migrated
    recorder = OutcomeRecorder(broken, event_id, utcnow())
    with pytest.raises(OperationalError), recorder:
        recorder.add(bob, PushOutcome.sent())
        assert wait_for(lambda: recorder.error is not None)
        recorder.raise_if_failed()
    broken.dispose()
