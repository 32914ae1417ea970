"""worker.delivery.device_sources: the local registry, and Stream's devices API (the fake, over
real HTTP) mirrored into the devices table.  Runs on SQLite and, when it is there, PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import select

from tests.fakes.fake_stream_api import DEVICES, FakeStreamApi, device
from tests.fakes.stream_api_plugin import STREAM_API_KEY, stream_app_for
from worker.delivery.device_sources import (
    LocalRegistry,
    StreamDevices,
    one_ring_per_phone,
)
from worker.delivery.services import Services
from worker.delivery.templates import TemplateBook
from worker.foundation.settings import DeviceSettings, Settings
from worker.push.base import Platform
from worker.push.providers import ProviderSet
from worker.push.sender import PushSender
from worker.storage import devices
from worker.storage.database import Database
from worker.storage.devices import DeviceTarget
from worker.storage.models import Device
from worker.stream.api import StreamApi, StreamApiError

# The fake Stream API's app: the mirror stores its devices under this API key.
APP = STREAM_API_KEY
VOIP = "a11ce" + "1" * 59
APNS = "a11ce" + "2" * 59
FCM = "alice-fcm"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source(fake_stream_api: FakeStreamApi, clock: Clock) -> Iterator[StreamDevices]:
    stream = StreamDevices(
        StreamApi(stream_app_for(fake_stream_api), timeout=2), cache_seconds=30, clock=clock
    )
    yield stream
    stream.close()


def rows(db: Database) -> dict[str, Device]:
    with db.transaction() as session:
        return {d.token: d for d in session.scalars(select(Device))}


def targets_of(db: Database, source: StreamDevices, *user_ids: str) -> list[DeviceTarget]:
    with db.transaction() as session:
        return source.devices_for(session, list(user_ids))


def test_local_registry_returns_active_registered_devices(db: Database) -> None:
    with db.transaction() as session:
        voip = devices.add_device(
            session, api_key=APP, user_id="alice", platform=Platform.APNS, token=VOIP, voip=True
        )
        fcm = devices.add_device(
            session, api_key=APP, user_id="bob", platform=Platform.FCM, token=FCM
        )
        gone = devices.add_device(
            session, api_key=APP, user_id="bob", platform=Platform.FCM, token="gone"
        )
        devices.disable_devices(session, [gone.id], "Unregistered")
        # Another app's bob (overlapping user ids) is another user.
        devices.add_device(
            session, api_key="other-app", user_id="bob", platform=Platform.FCM, token="theirs"
        )
    with db.transaction() as session:
        found = LocalRegistry(APP).devices_for(session, ["alice", "bob", "alice"])
        theirs = LocalRegistry("other-app").devices_for(session, ["alice", "bob"])
    assert found == [
        DeviceTarget(voip.id, "alice", Platform.APNS, VOIP, True, None),
        DeviceTarget(fcm.id, "bob", Platform.FCM, FCM, False, None),
    ]
    assert [t.token for t in theirs] == ["theirs"]


def test_stream_devices_map_providers_and_are_mirrored(
    db: Database, fake_stream_api: FakeStreamApi, source: StreamDevices
) -> None:
    fake_stream_api.set_devices(
        "alice",
        [
            device(VOIP, "apn", voip=True, hardware_id="iphone-1"),
            device(APNS, "apn", hardware_id="iphone-1"),
            device(FCM, "firebase", hardware_id="pixel-1"),
            device("fcm-voip-flag", "firebase", voip=True),  # voip means nothing for FCM
            device("hms", "huawei"),
            device("mi", "xiaomi"),
            device("apn-disabled", "apn", voip=True, disabled=True),
        ],
    )
    found = targets_of(db, source, "alice")

    stored = rows(db)
    assert set(stored) == {VOIP, APNS, FCM, "fcm-voip-flag"}
    assert found == [
        DeviceTarget(stored[VOIP].id, "alice", Platform.APNS, VOIP, True, None, "iphone-1"),
        DeviceTarget(stored[APNS].id, "alice", Platform.APNS, APNS, False, None, "iphone-1"),
        DeviceTarget(stored[FCM].id, "alice", Platform.FCM, FCM, False, None, "pixel-1"),
        DeviceTarget(
            stored["fcm-voip-flag"].id, "alice", Platform.FCM, "fcm-voip-flag", False, None, None
        ),
    ]
    for row in stored.values():
        assert (row.source, row.user_id, row.disabled_at) == ("stream", "alice", None)
        assert row.api_key == APP
    assert (stored[VOIP].platform, stored[VOIP].voip) == ("apns", True)
    assert (stored[FCM].platform, stored[FCM].hardware_id) == ("fcm", "pixel-1")


def test_the_push_provider_name_is_mirrored_and_follows_stream(
    db: Database, fake_stream_api: FakeStreamApi, source: StreamDevices, clock: Clock
) -> None:
    """Each device keeps the name of the push provider Stream lists it with (its topic and
    environment); a name Stream changes is changed here too, and an over-long one is cut to
    the column."""
    fake_stream_api.set_devices(
        "alice",
        [
            device(VOIP, "apn", voip=True, push_provider_name="ios-voip-debug"),
            device(FCM, "firebase", push_provider_name="n" * 80),
            device(APNS, "apn"),
        ],
    )
    found = {t.token: t.push_provider_name for t in targets_of(db, source, "alice")}
    assert found == {VOIP: "ios-voip-debug", FCM: "n" * 64, APNS: None}
    assert rows(db)[VOIP].push_provider_name == "ios-voip-debug"

    fake_stream_api.set_devices("alice", [device(VOIP, "apn", voip=True, push_provider_name="v2")])
    clock.now += 31
    (target,) = targets_of(db, source, "alice")
    assert target.push_provider_name == "v2" and rows(db)[VOIP].push_provider_name == "v2"


def test_device_lists_are_cached_within_the_ttl(
    db: Database, fake_stream_api: FakeStreamApi, source: StreamDevices, clock: Clock
) -> None:
    fake_stream_api.set_devices("alice", [device(VOIP, "apn", voip=True)])
    fake_stream_api.set_devices("bob", [device(FCM, "firebase")])

    first = targets_of(db, source, "alice", "bob")
    assert fake_stream_api.calls[DEVICES] == 2
    clock.now += 29
    assert targets_of(db, source, "alice", "bob") == first
    assert targets_of(db, source, "bob") == first[1:]
    assert fake_stream_api.calls[DEVICES] == 2  # no new HTTP request within 30 s

    fake_stream_api.set_devices("alice", [device("new-voip", "apn", voip=True)])
    clock.now += 2
    (fresh,) = targets_of(db, source, "alice")
    assert fake_stream_api.calls[DEVICES] == 3
    assert fresh.token == "new-voip"


def test_a_cached_list_still_honours_the_database(
    db: Database, fake_stream_api: FakeStreamApi, source: StreamDevices
) -> None:
    """The cache only saves HTTP: a token pruned meanwhile is not returned, a row removed by
    hand is mirrored again."""
    fake_stream_api.set_devices("alice", [device(VOIP, "apn", voip=True), device(FCM, "firebase")])
    voip, _ = targets_of(db, source, "alice")
    with db.transaction() as session:
        devices.disable_devices(session, [voip.device_id], "BadDeviceToken")
        assert devices.remove_device(session, APP, FCM) == 1

    (again,) = targets_of(db, source, "alice")
    assert fake_stream_api.calls[DEVICES] == 1
    stored = rows(db)
    assert (again.token, again.device_id) == (FCM, stored[FCM].id)
    assert stored[FCM].source == "stream"
    assert stored[VOIP].disabled_reason == "BadDeviceToken"


def test_a_locally_disabled_token_is_not_revived(
    db: Database, fake_stream_api: FakeStreamApi, source: StreamDevices, clock: Clock
) -> None:
    fake_stream_api.set_devices("alice", [device(VOIP, "apn", voip=True, hardware_id="hw")])
    (target,) = targets_of(db, source, "alice")
    with db.transaction() as session:
        devices.disable_devices(session, [target.device_id], "Unregistered")

    # Stream keeps listing the token (it never heard of the 410); the cache has expired.
    clock.now += 60
    assert targets_of(db, source, "alice") == []
    assert fake_stream_api.calls[DEVICES] == 2
    row = rows(db)[VOIP]
    assert (row.id, row.disabled_reason) == (target.device_id, "Unregistered")
    assert row.disabled_at is not None


def all_rows(db: Database, token: str) -> dict[str, Device]:
    with db.transaction() as session:
        return {d.user_id: d for d in session.scalars(select(Device).where(Device.token == token))}


def test_a_token_listed_under_another_user_moves(
    db: Database, fake_stream_api: FakeStreamApi, source: StreamDevices, clock: Clock
) -> None:
    with db.transaction() as session:
        devices.add_device(session, api_key=APP, user_id="alice", platform=Platform.FCM, token=FCM)
    fake_stream_api.set_devices("bob", [device(FCM, "firebase", hardware_id="pixel")])

    (target,) = targets_of(db, source, "bob")
    by_user = all_rows(db, FCM)
    bob, alice = by_user["bob"], by_user["alice"]
    assert (bob.id, bob.source, bob.hardware_id, bob.disabled_at) == (
        target.device_id,
        "stream",
        "pixel",
        None,
    )
    # Alice's registration stays, disabled, as the record of the move.
    assert alice.disabled_at is not None and alice.moved_to_user_id == "bob"
    assert alice.disabled_reason.startswith("moved to another user at ")
    with db.transaction() as session:
        assert LocalRegistry(APP).devices_for(session, ["alice"]) == []


def test_a_token_that_moves_back_is_re_enabled_but_a_dead_one_never(
    db: Database, fake_stream_api: FakeStreamApi, source: StreamDevices, clock: Clock
) -> None:
    fake_stream_api.set_devices("alice", [device(FCM, "firebase")])
    (first,) = targets_of(db, source, "alice")
    fake_stream_api.set_devices("alice", [])
    fake_stream_api.set_devices("bob", [device(FCM, "firebase")])
    targets_of(db, source, "bob")
    assert all_rows(db, FCM)["alice"].moved_to_user_id == "bob"

    # The phone went back to Alice's account: her own row again, Bob's disabled as moved.
    fake_stream_api.set_devices("bob", [])
    fake_stream_api.set_devices("alice", [device(FCM, "firebase")])
    clock.now += 60
    (again,) = targets_of(db, source, "alice")
    assert again.device_id == first.device_id
    by_user = all_rows(db, FCM)
    assert by_user["alice"].disabled_at is None and by_user["alice"].moved_to_user_id is None
    assert by_user["bob"].moved_to_user_id == "alice"
    with db.transaction() as session:
        devices.disable_devices(session, [again.device_id], "Unregistered")
    clock.now += 60
    assert targets_of(db, source, "alice") == []


def test_unchanged_lists_write_nothing(
    db: Database, fake_stream_api: FakeStreamApi, source: StreamDevices, clock: Clock
) -> None:
    fake_stream_api.set_devices("alice", [device(VOIP, "apn", voip=True)])
    targets_of(db, source, "alice")
    clock.now += 60
    with db.transaction() as session:
        source.devices_for(session, ["alice"])
        assert not session.dirty and not session.new
    assert fake_stream_api.calls[DEVICES] == 2


def test_many_users_are_fetched_concurrently(
    db: Database, fake_stream_api: FakeStreamApi, source: StreamDevices
) -> None:
    users = [f"user-{i}" for i in range(16)]
    for user in users:
        fake_stream_api.set_devices(user, [device(f"{user}-fcm", "firebase")])
    fake_stream_api.delay = 0.2

    started = time.monotonic()
    found = targets_of(db, source, *users)
    elapsed = time.monotonic() - started

    assert [t.user_id for t in found] == users
    assert fake_stream_api.calls[DEVICES] == 16
    assert elapsed < 16 * 0.2 / 2  # 8 threads: about 0.4 s, never one after another


def test_a_failed_fetch_raises_and_keeps_the_lists_it_got(
    db: Database, fake_stream_api: FakeStreamApi, source: StreamDevices
) -> None:
    fake_stream_api.set_devices("alice", [device(VOIP, "apn", voip=True)])
    fake_stream_api.set_devices("bob", [device(FCM, "firebase")])
    with db.transaction() as session:
        source.devices_for(session, ["alice"])
    fake_stream_api.fail_next(1, 503)

    with pytest.raises(StreamApiError) as caught, db.transaction() as session:
        source.devices_for(session, ["alice", "bob"])
    assert caught.value.retryable is True
    assert [t.token for t in targets_of(db, source, "alice", "bob")] == [VOIP, FCM]
    assert fake_stream_api.calls[DEVICES] == 3  # alice once, bob twice


def target(
    device_id: int, user: str, platform: Platform, voip: bool, hw: str | None
) -> DeviceTarget:
    return DeviceTarget(device_id, user, platform, f"t{device_id}", voip, None, hw)


def test_one_ring_per_phone_prefers_the_voip_token() -> None:
    voip = target(1, "alice", Platform.APNS, True, "iphone")
    plain = target(2, "alice", Platform.APNS, False, "iphone")
    fcm_same_phone = target(3, "alice", Platform.FCM, False, "iphone")
    fcm_other_phone = target(4, "alice", Platform.FCM, False, "pixel")
    fcm_unknown_phone = target(5, "alice", Platform.FCM, False, None)
    bob_same_hardware = target(6, "bob", Platform.FCM, False, "iphone")  # another user
    local = DeviceTarget(7, "alice", Platform.FCM, "t7", False, None)  # no hardware id

    assert one_ring_per_phone(
        [voip, plain, fcm_same_phone, fcm_other_phone, fcm_unknown_phone, bob_same_hardware, local]
    ) == [voip, plain, fcm_other_phone, fcm_unknown_phone, bob_same_hardware, local]
    # Without a VoIP token the FCM token is how that phone rings.
    assert one_ring_per_phone([plain, fcm_same_phone]) == [plain, fcm_same_phone]


def test_stream_devices_then_one_ring_per_phone(
    db: Database, fake_stream_api: FakeStreamApi, source: StreamDevices
) -> None:
    fake_stream_api.set_devices(
        "alice",
        [
            device(VOIP, "apn", voip=True, hardware_id="iphone"),
            device(FCM, "firebase", hardware_id="iphone"),
        ],
    )
    found = targets_of(db, source, "alice")
    assert [t.token for t in one_ring_per_phone(found)] == [VOIP]


@contextmanager
def services_for(settings: Settings, db: Database) -> Iterator[Services]:
    """The run-time services, whose ``device_source`` is how the domain finds devices."""
    sender = PushSender(ProviderSet({}))
    services = Services(settings, db, sender, TemplateBook.from_settings(settings))
    try:
        yield services
    finally:
        services.close()


def test_services_use_the_source_devices_source_names_for_each_app(
    db: Database, fake_stream_api: FakeStreamApi
) -> None:
    app = stream_app_for(fake_stream_api)
    with services_for(Settings(), db) as services:
        local = services.device_source("some-app")
        assert isinstance(local, LocalRegistry) and local.api_key == "some-app"

    settings = Settings(apps=[app], devices=DeviceSettings(source="stream", cache_seconds=5))
    with services_for(settings, db) as services:
        chosen = services.device_source(app.api_key)
        assert isinstance(chosen, StreamDevices) and chosen.api_key == app.api_key
        assert services.device_source(app.api_key) is chosen  # one per app, kept
        # An app that is not configured has no Stream API to ask: its own registry.
        unknown = services.device_source("other-key")
        assert isinstance(unknown, LocalRegistry) and unknown.api_key == "other-key"


def test_each_app_mirrors_only_its_own_streams_devices(
    db: Database, fake_stream_api: FakeStreamApi
) -> None:
    """Two Stream apps with a user "bob" each: a ring of one app gets that app's bob's tokens
    only, even when both list the same token."""
    from tests.fakes.fake_stream_api import running_fake_stream_api

    with running_fake_stream_api("other-key", "other-secret-0123456789abcdef0123456789") as other:
        fake_stream_api.set_devices(
            "bob", [device(VOIP, "apn", voip=True), device(FCM, "firebase")]
        )
        other.set_devices("bob", [device(FCM, "firebase"), device("other-only", "firebase")])
        settings = Settings(
            apps=[stream_app_for(fake_stream_api), stream_app_for(other)],
            devices=DeviceSettings(source="stream"),
        )
        with services_for(settings, db) as services:
            mine = services.device_source(APP)
            theirs = services.device_source("other-key")
            with db.transaction() as session:
                found = mine.devices_for(session, ["bob"])
                found_there = theirs.devices_for(session, ["bob"])
    assert [t.token for t in found] == [VOIP, FCM]
    assert [t.token for t in found_there] == [FCM, "other-only"]
    with db.transaction() as session:
        stored = [(d.api_key, d.token, d.disabled_at) for d in session.scalars(select(Device))]
    assert sorted(stored) == sorted(
        [
            (APP, VOIP, None),
            (APP, FCM, None),
            ("other-key", FCM, None),
            ("other-key", "other-only", None),
        ]
    )
