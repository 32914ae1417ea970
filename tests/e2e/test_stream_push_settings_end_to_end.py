"""An app with ``push_settings_source = "stream"`` end to end: signed webhooks over real HTTP to
the real receiver, a real Celery worker on real Redis, PostgreSQL, the call types served by the
fake Stream API, and the pushes sent by aioapns / pyfcm to the fake APNs / FCM.

What a team set in Stream's dashboard decides: an event switched off there is not pushed, its
template words the push, the ring never waits on Stream for them, and a Stream outage keeps the
last good copy."""

from __future__ import annotations

import pytest

from tests.e2e.processes import wait_until
from tests.fakes.fake_stream_api import CALL_TYPE, CALL_TYPES, FakeStreamApi, notification_settings
from worker.delivery.call_type_settings import CallTypeSettingsCache
from worker.stream import samples as sample_events
from worker.stream.events import parse_call_event

pytestmark = [pytest.mark.services, pytest.mark.timeout(300)]

RING_TITLE = "{{ user.display_name }} is ringing you on {{ call.display_name }}"


def dashboard(ring_title: str = RING_TITLE) -> dict:
    """The team's settings in Stream: Stream's own pushes off (the master switch), missed-call
    and notification pushes off, the ring and live_started worded by the team."""
    return notification_settings(
        enabled=False,
        off=["call_missed", "call_notification"],
        templates={
            "call_ring": (ring_title, "{{ call.display_name }}"),
            "call_live_started": ("{{ user.display_name }} went live (from Stream)", "Join!"),
        },
    )


@pytest.fixture
def refresh_seconds() -> float:
    """How often the worker refreshes its copy (a test may parametrize it)."""
    return 300.0


def phones(users: tuple[str, ...]) -> list[dict]:
    """An iPhone (VoIP + regular APNs tokens) and an Android phone per user."""
    rows = []
    for user in users:
        rows += [
            {"user_id": user, "platform": "apns", "voip": True, "token": f"{user}v".ljust(64, "0")},
            {
                "user_id": user,
                "platform": "apns",
                "voip": False,
                "token": f"{user}a".ljust(64, "0"),
            },
            {"user_id": user, "platform": "fcm", "voip": False, "token": f"{user}-android"},
        ]
    return rows


@pytest.fixture
def stack(start_stack, fake_stream_api, refresh_seconds):
    # Set in the dashboard before callpush starts.
    fake_stream_api.set_call_type("default", dashboard())
    with start_stack(
        concurrency=4,
        app={"push_settings_source": "stream"},
        push_settings={"refresh_seconds": refresh_seconds, "retry_seconds": 0.2},
    ) as running:
        running.add_devices(phones(("bob", "carol")))
        yield running


def settings_requests(fake: FakeStreamApi) -> int:
    return len(fake.requests_to(CALL_TYPES)) + len(fake.requests_to(CALL_TYPE))


def test_streams_dashboard_decides_what_is_pushed_and_its_wording(
    stack, fake_apns, fake_fcm, fake_stream_api: FakeStreamApi
) -> None:
    # The worker fetches every call type as it starts, before any webhook (nothing here has
    # touched its services yet).
    wait_until(lambda: fake_stream_api.calls.get(CALL_TYPES, 0) == 1, 10, message="warm-up")
    cache = stack.celery.services.call_type_settings(stack.api_key)
    assert cache is not None and cache.wait_warm(10)
    assert fake_stream_api.calls[CALL_TYPES] == 1

    ring = sample_events.ring_event("alice", ["bob", "carol"], display_name="Team sync")
    before = settings_requests(fake_stream_api)
    status = stack.wait_finished(stack.post(ring)).status
    during = settings_requests(fake_stream_api) - before
    assert status == "processed"
    voip = [r for r in fake_apns.received if r["headers"]["apns-push-type"] == "voip"]
    assert {r["payload"]["stream"]["receiver_id"] for r in voip} == {"bob", "carol"}
    for push in voip:
        assert push["payload"]["aps"]["alert"] == {
            "title": "Alice is ringing you on Team sync",
            "body": "Team sync",
        }
        assert push["payload"]["stream"]["title"] == "Alice is ringing you on Team sync"
    assert {r["message"]["data"]["receiver_id"] for r in fake_fcm.received} == {"bob", "carol"}
    # The ring path asked Stream nothing about settings.
    assert during == 0

    # Switched off in Stream: stored ignored, nothing sent.
    apns_mark, fcm_mark = fake_apns.count, len(fake_fcm.received)
    for event_type in ("call.missed", "call.notification"):
        event = sample_events.member_event(event_type, "alice", ["alice", "bob", "carol"])
        row = stack.wait_finished(stack.post(event))
        assert (row.status, row.status_reason) == (
            "ignored",
            "switched off in Stream's call type settings",
        )
    assert fake_apns.received[apns_mark:] == [] and fake_fcm.received[fcm_mark:] == []

    # On, with the team's wording, as an alert to the regular APNs tokens.
    live = sample_events.member_event("call.live_started", None, [], created_by="alice")
    fake_stream_api.set_members(live["call_cid"], ["alice", "bob"])
    assert stack.wait_finished(stack.post(live)).status == "processed"
    (alert,) = fake_apns.received[apns_mark:]
    assert alert["headers"]["apns-push-type"] == "alert"
    assert alert["payload"]["aps"]["alert"] == {
        "title": "Alice went live (from Stream)",
        "body": "Join!",
    }


@pytest.mark.parametrize("refresh_seconds", [0.3])
def test_a_stream_outage_keeps_the_last_good_settings(
    stack, fake_apns, fake_stream_api: FakeStreamApi
) -> None:
    cache = stack.celery.services.call_type_settings(stack.api_key)
    assert cache is not None and cache.wait_warm(10)

    fake_stream_api.outage = True
    # Changed in the dashboard during the outage: not seen until Stream answers again.
    fake_stream_api.set_call_type("default", dashboard("{{ user.display_name }} (new wording)"))
    failed_from = len(fake_stream_api.requests_to(CALL_TYPES))
    wait_until(
        lambda: len(fake_stream_api.requests_to(CALL_TYPES)) >= failed_from + 2,
        10,
        message="refreshes during the outage",
    )
    ring = sample_events.ring_event("alice", ["bob"])
    assert stack.wait_finished(stack.post(ring)).status == "processed"
    assert voip_titles(fake_apns, 0) == ["Alice is ringing you on"]
    missed = sample_events.member_event("call.missed", "alice", ["bob"])
    assert stack.wait_finished(stack.post(missed)).status_reason == (
        "switched off in Stream's call type settings"
    )

    fake_stream_api.outage = False
    wait_until(lambda: "new wording" in cached_ring_title(cache), 10, message="a refresh after it")
    mark = fake_apns.count
    ring = sample_events.ring_event("alice", ["bob"])
    assert stack.wait_finished(stack.post(ring)).status == "processed"
    assert voip_titles(fake_apns, mark) == ["Alice (new wording)"]


def voip_titles(fake_apns, since: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        r["payload"]["aps"]["alert"]["title"]
        for r in fake_apns.received[since:]
        if r["headers"]["apns-push-type"] == "voip"
    ]


def cached_ring_title(cache: CallTypeSettingsCache) -> str:
    entry = cache.get("default")
    template = entry.templates.get("call.ring") if entry is not None else None
    if template is None:
        return ""
    return template.render(
        parse_call_event(sample_events.ring_event("alice", ["bob"])), "bob"
    ).title
