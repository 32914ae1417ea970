"""The device registry (worker.storage.devices) on a real database: apps are tenants, a token
that changes accounts moves with the move recorded, the per-user cap evicts the oldest.  Runs on
SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from worker.push.base import Platform
from worker.storage import devices
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Device, utcnow

PROD, DEV = "prod-key", "dev-key"
PHONE = "ab" * 32
OTHER = "cd" * 32


def register(db: Database, api_key: str, user: str, token: str = PHONE, **kwargs) -> int:
    with db.transaction() as session:
        return devices.add_device(
            session, api_key=api_key, user_id=user, platform=Platform.APNS, token=token, **kwargs
        ).id


def rows_of(db: Database, token: str = PHONE) -> list[Device]:
    with db.transaction() as session:
        return list(
            session.scalars(select(Device).where(Device.token == token).order_by(Device.id))
        )


def active_tokens(db: Database, api_key: str, user: str) -> list[str]:
    with db.transaction() as session:
        return [t.token for t in devices.active_devices_for(session, api_key, [user])]


def test_apps_never_see_each_others_devices(db):
    prod = register(db, PROD, "bob")
    dev = register(db, DEV, "bob")  # the same user id and even the same token, another app
    assert prod != dev
    assert active_tokens(db, PROD, "bob") == active_tokens(db, DEV, "bob") == [PHONE]
    with db.transaction() as session:
        assert [d.id for d in devices.list_devices(session, PROD, "bob")] == [prod]
        # Removing it in the dev app leaves production's registration alone.
        assert devices.remove_device(session, DEV, PHONE, "bob") == 1
        assert devices.remove_device(session, DEV, PHONE) == 0
    assert active_tokens(db, PROD, "bob") == [PHONE]
    assert active_tokens(db, DEV, "bob") == []


def test_a_token_registered_by_another_user_moves_and_the_move_is_recorded(db):
    alice = register(db, PROD, "alice")
    before = utcnow()
    bob = register(db, PROD, "bob")

    old, new = rows_of(db)
    assert (old.id, old.user_id, new.id, new.user_id) == (alice, "alice", bob, "bob")
    assert old.disabled_at is not None and before <= old.disabled_at <= utcnow()
    assert old.moved_to_user_id == "bob"
    # The reason is shown to the old owner too: it names no user.
    assert old.disabled_reason == devices.moved_reason(old.disabled_at)
    assert old.disabled_reason.startswith("moved to another user at ") and "bob" not in (
        old.disabled_reason
    )
    assert new.disabled_at is None and new.moved_to_user_id is None
    assert active_tokens(db, PROD, "alice") == []  # her rings never reach it
    assert active_tokens(db, PROD, "bob") == [PHONE]

    # The phone goes back to Alice's account: her own registration comes back.
    assert register(db, PROD, "alice") == alice
    old, new = rows_of(db)
    assert old.disabled_at is None and old.moved_to_user_id is None
    assert new.moved_to_user_id == "alice"
    assert active_tokens(db, PROD, "bob") == []


def test_a_moved_registration_is_not_the_old_owners_to_delete(db):
    register(db, PROD, "alice")
    register(db, PROD, "bob")
    with db.transaction() as session:
        assert devices.remove_device(session, PROD, PHONE, "alice") == 0
        listed = devices.list_devices(session, PROD, "alice", include_moved=False)
        assert listed == []
        assert len(devices.list_devices(session, PROD, "alice")) == 1  # kept for operators
    assert active_tokens(db, PROD, "bob") == [PHONE]


def test_registering_again_refreshes_and_re_enables(db):
    first = register(db, PROD, "bob")
    with db.transaction() as session:
        devices.disable_devices(session, [first], "Unregistered")
    assert active_tokens(db, PROD, "bob") == []
    assert register(db, PROD, "bob", voip=True) == first
    (row,) = rows_of(db)
    assert row.disabled_at is None and row.disabled_reason is None and row.voip is True


def test_the_cap_evicts_the_registrations_refreshed_longest_ago(db):
    tokens = [f"{n:02x}" * 32 for n in range(5)]
    ids = [register(db, PROD, "bob", token, max_per_user=3) for token in tokens[:3]]
    # Refreshing the first makes the second the oldest.
    with db.transaction() as session:
        for n, device_id in enumerate(ids):
            session.get(Device, device_id).registered_at = utcnow() - timedelta(minutes=10 - n)
    register(db, PROD, "bob", tokens[0], max_per_user=3)
    register(db, PROD, "bob", tokens[3], max_per_user=3)
    assert sorted(active_tokens(db, PROD, "bob")) == sorted([tokens[0], tokens[2], tokens[3]])
    (evicted,) = rows_of(db, tokens[1])
    assert evicted.disabled_at is not None and evicted.moved_to_user_id is None
    assert evicted.disabled_reason.startswith("evicted at ")
    assert "more than 3 devices" in evicted.disabled_reason

    register(db, PROD, "bob", tokens[4], max_per_user=3)
    assert len(active_tokens(db, PROD, "bob")) == 3
    # Other users and other apps are not counted.
    register(db, PROD, "carol", tokens[1], max_per_user=3)
    register(db, DEV, "bob", tokens[1], max_per_user=3)
    assert len(active_tokens(db, PROD, "bob")) == 3
    assert active_tokens(db, DEV, "bob") == [tokens[1]]


def test_the_default_cap_is_streams_25(db):
    for n in range(26):
        register(db, PROD, "bob", f"{n:02x}" * 32)
    assert len(active_tokens(db, PROD, "bob")) == devices.DEFAULT_MAX_PER_USER == 25
    (first,) = rows_of(db, "00" * 32)
    assert first.disabled_reason is not None and "evicted" in first.disabled_reason


@pytest.mark.services
def test_concurrent_registrations_leave_one_active_owner(postgres_url):
    """Two accounts registering the same token at the same moment: one ends up owning it, the
    other's registration is recorded as moved; never two active rows."""
    upgrade_to_head(postgres_url)
    db = Database(postgres_url)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker(user: str) -> None:
        try:
            barrier.wait()
            register(db, PROD, user)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(f"user-{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        rows = rows_of(db)
        assert errors == []
        assert len(rows) == 8
        assert len([r for r in rows if r.disabled_at is None]) == 1
        assert all(r.moved_to_user_id for r in rows if r.disabled_at is not None)
    finally:
        db.dispose()
